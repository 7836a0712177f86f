"""One JSON object per log line on stdout, tagged with the request or execution id.

Secrets never reach a log line: every record passes through `SecretRedactor`,
which knows the actual token and signing secret values plus the shapes of
Slack tokens, and replaces them before formatting.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from datetime import UTC, datetime

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
execution_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("execution_id", default=None)

_TOKEN_SHAPES = re.compile(r"xox[abposr]-[A-Za-z0-9-]+|xapp-[A-Za-z0-9-]+|https://hooks\.slack\.com/\S+")
REDACTED = "[redacted]"


class SecretRedactor:
    def __init__(self) -> None:
        self._values: set[str] = set()

    def add(self, *values: str | None) -> None:
        for v in values:
            if v and len(v) >= 6:  # a short value would redact ordinary words
                self._values.add(v)

    def redact(self, text: str) -> str:
        for v in self._values:
            if v in text:
                text = text.replace(v, REDACTED)
        return _TOKEN_SHAPES.sub(REDACTED, text)


redactor = SecretRedactor()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if rid := request_id.get():
            entry["request_id"] = rid
        if eid := execution_id.get():
            entry["execution_id"] = eid
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            entry.update(extra)
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return redactor.redact(json.dumps(entry, default=str, ensure_ascii=False))


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Library chatter at INFO would drown ours; their warnings still come through.
    for noisy in ("botocore", "boto3", "urllib3", "aiohttp.access", "slack_bolt", "slack_sdk", "kubernetes"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def log_fields(**fields: object) -> dict[str, object]:
    """`logger.info("msg", extra=log_fields(user=...))` adds fields to the JSON line."""
    return {"fields": fields}
