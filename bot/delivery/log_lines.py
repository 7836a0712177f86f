"""Log query results made readable on a phone at 3 a.m.

Newest first; each line is `HH:MM:SS LEVEL logger: message`, stack traces folded
to their first line with a count of the folded lines. A message shows what fits
within Slack's limits; the whole result goes into a file, so nothing is lost.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

LEVEL = re.compile(r"\b(ERROR|WARN|WARNING|INFO|DEBUG|TRACE|FATAL)\b")
# Spring Boot's console pattern: 2026-11-26T03:12:45.123Z ERROR 1 --- [thread] c.e.Logger : message
SPRING = re.compile(r"^\S+\s+(?P<level>[A-Z]+)\s+\d+\s+---\s+\[[^\]]*\]\s+(?P<logger>\S+)\s*:\s?(?P<msg>.*)$")
SECTION_LIMIT = 2800  # Slack allows 3000 characters in a section; keep room for the fences
MAX_SHOWN = 40


@dataclass(frozen=True)
class LogLine:
    time: datetime
    level: str
    text: str  # the first line, compact
    folded: int  # lines of stack trace not shown
    full: str  # the whole message

    def compact(self, width: int = 160) -> str:
        more = f" (+{self.folded} lines)" if self.folded else ""
        line = f"{self.time:%H:%M:%S} {self.level:<5} {self.text}"
        if len(line) > width:
            line = line[: width - 1] + "…"
        return line + more


def parse_time(value: str) -> datetime:
    if value.isdigit():  # epoch milliseconds
        return datetime.fromtimestamp(int(value) / 1000, UTC)
    for fmt in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S"):  # Insights' own format
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return datetime.fromtimestamp(0, UTC)


def to_line(row: dict[str, str]) -> LogLine:
    message = row.get("@message", "").rstrip("\n")
    first, *rest = message.split("\n") or [""]
    spring = SPRING.match(first)
    if spring:
        logger = spring.group("logger").rsplit(".", 1)[-1]
        level, text = spring.group("level"), f"{logger}: {spring.group('msg').strip()}"
    else:
        found = LEVEL.search(first)
        level, text = (found.group(1) if found else "-"), first.strip()
    level = "WARN" if level == "WARNING" else level
    return LogLine(time=parse_time(row.get("@timestamp", "0")), level=level, text=text,
                   folded=len([r for r in rest if r.strip()]), full=message)


def to_lines(rows: list[dict[str, str]]) -> list[LogLine]:
    return sorted((to_line(r) for r in rows), key=lambda line: line.time, reverse=True)


def fit_for_message(lines: list[LogLine]) -> tuple[str, int]:
    """A code block of the newest lines that fits one section; returns (text, lines shown)."""
    shown: list[str] = []
    size = 0
    for line in lines[:MAX_SHOWN]:
        text = line.compact().replace("```", "'''")
        if size + len(text) + 1 > SECTION_LIMIT:
            break
        shown.append(text)
        size += len(text) + 1
    return ("```\n" + "\n".join(shown) + "\n```" if shown else ""), len(shown)


def as_file(lines: list[LogLine]) -> str:
    """The whole result, stack traces included, newest first."""
    return "\n".join(f"{line.time:%Y-%m-%d %H:%M:%S.%f}"[:23] + f" {line.full}" for line in lines) + "\n"
