"""The bot's answers to a request's response_url: Bolt's `respond()`, through the bot's one HTTP session.

Bolt's own `respond()` makes a new HTTP session for every answer, so each is a new TCP and TLS connection
to hooks.slack.com, and retries only a connection that failed: a 500 or 503 from Slack lost the answer,
and the person who typed `/erp status` at 3 a.m. saw nothing. Here the answer goes through the Slack
client's kept-alive session, with slack_sdk's retry handlers for connection errors and server errors (as
the Web API calls have: a 5xx may rarely mean the answer was shown and is then shown twice; an answer never
shown is worse). Installed by a Bolt middleware, after the response_url check (`response_url_policy`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_bolt.context.respond.internals import _build_message
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.webhook import WebhookResponse
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.slack.web_client import InstrumentedWebClient

log = logging.getLogger(__name__)
# stateless (each call keeps its own RetryState): one list for every answer
ANSWER_RETRIES = [AsyncConnectionErrorRetryHandler(max_retry_count=2), AsyncServerErrorRetryHandler(max_retry_count=2)]


class PooledRespond(AsyncRespond):
    def __init__(self, *, response_url: str | None, client: InstrumentedWebClient) -> None:
        super().__init__(response_url=response_url)
        self.client = client

    def __deepcopy__(self, memo: dict[int, Any]) -> PooledRespond:
        # Bolt deep-copies each request for its lazy listeners: this holds no state of the request's own
        # beyond its URL, and the client (its session, pacer and metrics) must be shared, not copied
        return self

    async def __call__(self, text: str | dict[str, Any] = "", blocks: Sequence[Any] | None = None,  # type: ignore[override]
                       attachments: Sequence[Any] | None = None, response_type: str | None = None,
                       replace_original: bool | None = None, delete_original: bool | None = None,
                       unfurl_links: bool | None = None, unfurl_media: bool | None = None,
                       thread_ts: str | None = None, metadata: dict[str, Any] | None = None) -> WebhookResponse:
        if self.response_url is None:
            raise ValueError("respond is unsupported here as there is no response_url")
        if isinstance(text, dict):  # a whole message, as Bolt's respond() takes it too
            message = _build_message(**text)
        else:
            message = _build_message(text=text, blocks=blocks, attachments=attachments, response_type=response_type,
                                     replace_original=replace_original, delete_original=delete_original,
                                     unfurl_links=unfurl_links, unfurl_media=unfurl_media, thread_ts=thread_ts,
                                     metadata=metadata)
        # the session's own timeout applies (slack_sdk uses the client's only for a session it makes)
        hook = AsyncWebhookClient(url=self.response_url, session=self.client.http_session(),
                                  retry_handlers=ANSWER_RETRIES)
        sent = await hook.send_dict(message)
        if sent.status_code >= 400:  # Bolt's respond() says nothing; the URL itself is a credential: not logged
            log.warning("Slack refused an answer to a response_url: %s %s", sent.status_code, str(sent.body)[:100])
        return sent


class PooledRespondMiddleware:
    def __init__(self, client: InstrumentedWebClient) -> None:
        self.client = client

    async def middleware(self, req: AsyncBoltRequest, next: Any) -> BoltResponse | None:
        """Bolt global middleware: every listener's `respond` is a PooledRespond."""
        if req.context.response_url:
            req.context["respond"] = PooledRespond(response_url=req.context.response_url, client=self.client)
        return await next()  # type: ignore[no-any-return]
