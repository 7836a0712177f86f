"""`erp-chatops notify`: the buildspec's progress, handed to the bot, which posts it in the deploy's thread.

CodeBuild holds no Slack credential (README "Security"): anyone who can push to main runs code in the
build, and a token or signing secret there could post as the bot or sign an "Approve" click. So a progress
line goes onto the bot's progress queue (PROGRESS_QUEUE_URL) as an event of its own ("ERP Deploy Progress",
for PIPELINE_EXECUTION_ID), and the bot adds it to that execution's card as a thread note, escaped, under
the same rate-aware publisher as the cards. It is fast and harmless: a line that cannot be queued is
logged on stderr and the build goes on.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime

from botocore.config import Config as BotoConfig

PROGRESS_DETAIL_TYPE = "ERP Deploy Progress"
PROGRESS_SOURCE = "erp-chatops.ci"
MAX_TEXT = 3000
QUICK = BotoConfig(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=3, read_timeout=5)


def _value(environ: Mapping[str, str], name: str) -> str:
    return environ.get(name, "").strip()


def progress_event(execution_id: str, text: str, phase: str = "") -> dict[str, object]:
    """The message the bot reads (bot/delivery/pipeline_events.py), shaped as EventBridge shapes events."""
    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": PROGRESS_DETAIL_TYPE, "source": PROGRESS_SOURCE,
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "detail": {"execution-id": execution_id, "text": text[:MAX_TEXT], "phase": phase}}


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.environ = os.environ if environ is None else environ

    def post(self, text: str) -> bool:
        queue, execution = _value(self.environ, "PROGRESS_QUEUE_URL"), _value(self.environ, "PIPELINE_EXECUTION_ID")
        if not queue or not execution:
            print(f"notify: no progress queue or execution to report to; message was: {text[:200]}", file=sys.stderr)
            return False
        try:
            import boto3

            event = progress_event(execution, text, _value(self.environ, "DEPLOY_PHASE"))
            boto3.client("sqs", config=QUICK).send_message(QueueUrl=queue, MessageBody=json.dumps(event))
            return True
        except Exception as e:  # never fail a build over a progress line
            print(f"notify: cannot queue the progress line ({type(e).__name__})", file=sys.stderr)
            return False
