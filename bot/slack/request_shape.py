"""The minimal shape of what Slack sends, checked before Bolt sees it.

Slack always includes these fields; a body without them is not from Slack (or
is broken), and Bolt's own matching would fail on it with a 500. Answering 400
keeps bad input from ever looking like a server fault.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

INTERACTIONS = {"block_actions", "view_submission", "view_closed", "shortcut", "message_action",
                "block_suggestion"}


def request_problem(raw: bytes, content_type: str, timestamp: str | None) -> str | None:
    """A short reason when the request cannot be from Slack, checked before anything parses it."""
    if timestamp is not None and not timestamp.strip().isdigit():
        return "X-Slack-Request-Timestamp is not a number"  # Bolt's signature check would fail on int()
    try:
        body = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "the body is not UTF-8 text"
    return payload_problem(body, content_type)


def payload_problem(body: str, content_type: str) -> str | None:
    """A short reason when the body cannot be a Slack request; None when its shape is fine."""
    if "application/json" in content_type:  # Events API style bodies (url_verification, ssl_check)
        try:
            json.loads(body)
        except (ValueError, RecursionError):
            return "the body is not JSON (or nests too deep)"
        return None
    form = parse_qs(body, keep_blank_values=True)
    if "payload" in form:
        try:
            payload: Any = json.loads(form["payload"][0])
        except (ValueError, RecursionError):
            return "payload is not JSON (or nests too deep)"
        if not isinstance(payload, dict) or not isinstance(payload.get("type"), str):
            return "payload has no type"
        if payload["type"] not in INTERACTIONS:
            return f"payload type {payload['type'][:30]!r} is not one this app receives"
        user = payload.get("user")
        if not isinstance(user, dict) or not isinstance(user.get("id"), str):
            return "payload has no user"
        if payload["type"] == "block_actions":
            actions = payload.get("actions")
            if not isinstance(actions, list) or not actions or not all(
                    isinstance(a, dict) and isinstance(a.get("action_id"), str) for a in actions):
                return "block_actions without actions"
        if payload["type"] in ("view_submission", "view_closed"):
            view = payload.get("view")
            if not isinstance(view, dict) or not isinstance(view.get("type"), str) \
                    or not isinstance(view.get("callback_id"), str):
                return "view payload without a view"
        return None
    if "command" in form:
        for key in ("user_id", "channel_id"):
            if not form.get(key, [""])[0]:
                return f"slash command without {key}"
    return None
