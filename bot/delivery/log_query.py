"""The CloudWatch Logs Insights queries `/erp logs` sends (`bot/aws/logs_insights.py` runs them).

User text never becomes query syntax: a filter enters the query only as a
double-quoted string literal with quotes and backslashes escaped and control
characters removed.
"""

from __future__ import annotations

RESULT_LIMIT = 1000  # rows per query (Insights allows up to 10,000)
ERRORS_AND_WARNINGS = r"/(ERROR|WARN)/"
# The team's own query (from the platform's rebuild plan), error count per 5 minutes
STATS_QUERY = "fields @timestamp, @message | filter @message like /ERROR/ | stats count() by bin(5m)"


def string_literal(text: str) -> str:
    """`text` as an Insights string literal: nothing in it can end the string or add a command."""
    clean = "".join(ch for ch in text if ch.isprintable())
    return '"' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"'


def build_query(filter_text: str | None, *, stats: bool = False, limit: int = RESULT_LIMIT) -> str:
    if stats:
        return STATS_QUERY
    pattern = string_literal(filter_text) if filter_text else ERRORS_AND_WARNINGS
    return (f"fields @timestamp, @message, @logStream | filter @message like {pattern}"
            f" | sort @timestamp desc | limit {limit}")
