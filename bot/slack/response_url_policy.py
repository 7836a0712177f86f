"""A request's `response_url` must be Slack's before the bot answers through it.

Bolt's `respond()` posts the answer, which may carry log lines or a deploy's details, to whatever
`response_url` the request names. A request that passed the signature check came from Slack, and
Slack's response URLs are on its hooks host (docs.slack.dev "Handling user interaction": `https://hooks.slack.com/...`;
GovSlack's `hooks.slack-gov.com`); anything else is refused, so a leaked signing secret or a bug
upstream cannot turn the bot into a sender of data to another host. The sandbox's local Slack is added
by its own address (the host of `SLACK_API_URL`).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

log = logging.getLogger(__name__)

SLACK_RESPONSE_HOSTS = frozenset({"hooks.slack.com", "hooks.slack-gov.com"})


def _response_urls(body: dict[str, Any]) -> list[str]:
    urls = [body.get("response_url")]
    urls += [u.get("response_url") for u in body.get("response_urls") or [] if isinstance(u, dict)]
    return [str(u) for u in urls if u]


class ResponseUrlPolicy:
    def __init__(self, local_api_url: str | None = None) -> None:
        local = urlsplit(local_api_url).hostname if local_api_url else None
        self.local_hosts = frozenset({local} - SLACK_RESPONSE_HOSTS) if local else frozenset()

    def allowed(self, url: str) -> bool:
        try:
            parts = urlsplit(url)
            port = parts.port  # raises for a port that is not one
        except ValueError:
            return False
        if parts.username is not None or parts.password is not None or "\\" in url:
            return False  # userinfo or backslashes: parsers disagree on the host
        if parts.hostname in SLACK_RESPONSE_HOSTS:
            return parts.scheme == "https" and port in (None, 443)
        return parts.hostname in self.local_hosts and parts.scheme in ("http", "https")

    async def middleware(self, req: AsyncBoltRequest, next: Any) -> BoltResponse | None:
        """Bolt global middleware, after the signature check."""
        refused = [u for u in _response_urls(req.body) if not self.allowed(u)]
        if refused:
            log.warning("refused a request whose response_url is not Slack's (host %r)",
                        urlsplit(refused[0]).hostname if "://" in refused[0] else "?")
            return BoltResponse(status=400, body="response_url is not Slack's")
        return await next()  # type: ignore[no-any-return]
