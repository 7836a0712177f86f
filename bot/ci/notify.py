"""`erp-chatops notify`: the buildspec posts its progress into the deploy's Slack thread.

Fast (one HTTP call, no server needed) and harmless: a message that cannot be
delivered is logged on stderr and the build goes on. The thread comes from the
pipeline variables SLACK_CHANNEL / SLACK_THREAD_TS; for a push-triggered run
(no Slack variables) it is the card the bot made for PIPELINE_EXECUTION_ID,
found in the state table (STATE_TABLE).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

DEFAULT_API_URL = "https://slack.com/api/"


def _value(environ: Mapping[str, str], name: str) -> str:
    return environ.get(name, "").strip()


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.environ = os.environ if environ is None else environ
        self._thread: tuple[str, str] | None = None
        self._looked_up = False

    def thread(self) -> tuple[str, str] | None:
        """(channel, ts) of the deploy card, or None when there is none to reply to."""
        if self._looked_up:
            return self._thread
        self._looked_up = True
        channel, ts = _value(self.environ, "SLACK_CHANNEL"), _value(self.environ, "SLACK_THREAD_TS")
        if channel and ts:
            self._thread = (channel, ts)
            return self._thread
        execution, table = _value(self.environ, "PIPELINE_EXECUTION_ID"), _value(self.environ, "STATE_TABLE")
        if execution and table:
            try:
                import boto3

                item = boto3.client("dynamodb").get_item(
                    TableName=table, Key={"pk": {"S": f"EXEC#{execution}"}, "sk": {"S": "CARD"}},
                    ConsistentRead=True).get("Item", {})
                if item.get("channel", {}).get("S") and item.get("ts", {}).get("S"):
                    self._thread = (item["channel"]["S"], item["ts"]["S"])
            except Exception as e:  # never fail a build over a progress message
                print(f"notify: cannot find the deploy card of {execution}: {type(e).__name__}", file=sys.stderr)
        return self._thread

    def post(self, text: str) -> bool:
        token = _value(self.environ, "SLACK_BOT_TOKEN")
        thread = self.thread()
        if not token or thread is None:
            print(f"notify: no Slack thread to post to; message was: {text[:200]}", file=sys.stderr)
            return False
        client = WebClient(token=token, base_url=(_value(self.environ, "SLACK_API_URL") or DEFAULT_API_URL).rstrip("/")
                           + "/", timeout=5, retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)])
        try:
            client.chat_postMessage(channel=thread[0], thread_ts=thread[1], text=text[:3900], unfurl_links=False)
            return True
        except SlackApiError as e:
            print(f"notify: Slack refused the message ({e.response.get('error')})", file=sys.stderr)
        except Exception as e:  # connection refused, timeout: the build goes on
            print(f"notify: cannot reach Slack ({type(e).__name__})", file=sys.stderr)
        return False
