"""Requests to the bot built exactly as Slack builds them: form bodies, signed.

Slack signs `v0:<timestamp>:<raw body>` with HMAC-SHA256 and the app's signing
secret; slack_sdk's SignatureVerifier produces the same signature.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlencode

from slack_sdk.signature import SignatureVerifier

FORM = "application/x-www-form-urlencoded"


def signed_headers(signing_secret: str, body: str, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(signing_secret).generate_signature(timestamp=ts, body=body) or ""
    return {"Content-Type": FORM, "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature}


def slash_command_body(*, text: str, user_id: str, user_name: str, channel_id: str, channel_name: str,
                       response_url: str, trigger_id: str, team_id: str = "T0ERP",
                       command: str = "/erp", api_app_id: str = "A0ERPCHATOPS") -> str:
    return urlencode({
        "token": "deprecated-verification-token",
        "team_id": team_id,
        "team_domain": "erp-team",
        "channel_id": channel_id,
        "channel_name": channel_name,
        "user_id": user_id,
        "user_name": user_name,
        "command": command,
        "text": text,
        "api_app_id": api_app_id,
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": trigger_id,
    })


def interaction_body(payload: dict[str, Any]) -> str:
    """Button clicks and view submissions: form body with one `payload` field holding JSON."""
    return urlencode({"payload": json.dumps(payload, separators=(",", ":"))})
