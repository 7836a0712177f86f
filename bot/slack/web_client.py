"""The Slack Web API client: slack_sdk's AsyncWebClient with its retry handlers.

`SLACK_API_URL` points it at another Web API (the sandbox's); rate limits honour
Retry-After, and 5xx and dropped connections are retried a few times.
"""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient

from bot.metrics import Metrics
from bot.slack.rate_pacing import NOTE, PROGRESS, SlackPacer, already_paced, calling

DEFAULT_API_URL = "https://slack.com/api/"


with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # aiohttp discourages subclassing; this adds one method

    class SharedSession(aiohttp.ClientSession):
        """The client's one session. Bolt deep-copies each request, client and session included, for its
        lazy listeners; a session (sockets, its event loop) cannot be copied, and need not be: share it."""

        def __deepcopy__(self, memo: dict[int, Any]) -> SharedSession:
            return self


class PacedRateLimitRetryHandler(AsyncRateLimitErrorRetryHandler):
    """slack_sdk's 429 handler (wait Retry-After, retry), which first holds the call's lane in the pacer for
    as long, so the calls queued behind it do not each collect a 429 and retry together."""

    def __init__(self, pacer: SlackPacer, max_retry_count: int = 3) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self.pacer = pacer

    async def prepare_for_next_attempt_async(self, *, state: RetryState, request: HttpRequest,
                                             response: HttpResponse | None = None,
                                             error: Exception | None = None) -> None:
        lane = calling.get()
        if response is not None and lane is not None:
            retry_after = next((v for k, v in response.headers.items() if k.lower() == "retry-after"), ["1"])
            try:
                seconds = float(retry_after[0] if isinstance(retry_after, list) else retry_after)
            except ValueError:
                seconds = 1.0
            self.pacer.hold(*lane, seconds=min(max(seconds, 1.0), 600.0))  # as long as slack_sdk will wait
        await super().prepare_for_next_attempt_async(state=state, request=request, response=response, error=error)


class InstrumentedWebClient(AsyncWebClient):
    """Counts failed calls per method for /metrics, and keeps one HTTP session (kept-alive connections)
    for all calls; without one, slack_sdk opens a new session, and a new TCP+TLS connection, per call."""

    metrics: Metrics | None = None
    _session_loop: asyncio.AbstractEventLoop | None = None
    pacer: SlackPacer = SlackPacer()  # replaced per client in make_web_client

    async def api_call(self, api_method: str, **kwargs: Any) -> Any:  # type: ignore[override]
        args = _args_of(kwargs)
        channel = str(args.get("channel") or "")
        if not already_paced.get():
            await self.pacer.slot(api_method, channel, NOTE if args.get("thread_ts") else PROGRESS)
        await self.pacer.wait_out_hold(api_method, channel)
        lane = calling.set((api_method, channel))  # for the 429 handler, which runs inside this call
        try:
            return await self._call(api_method, **kwargs)
        finally:
            calling.reset(lane)

    def http_session(self) -> aiohttp.ClientSession:
        """The one session (kept-alive connections) for this client's calls and the bot's answers to
        response_urls; made on first use, in the running event loop, which it belongs to."""
        loop = asyncio.get_running_loop()
        if self.session is None or self.session.closed or self._session_loop is not loop:
            # no cookie jar: the API needs none, and a cookie one Slack host set would go to the others
            self.session = SharedSession(timeout=aiohttp.ClientTimeout(total=self.timeout),
                                         cookie_jar=aiohttp.DummyCookieJar())
            self._session_loop = loop
        return self.session

    async def _call(self, api_method: str, **kwargs: Any) -> Any:
        self.http_session()
        try:
            return await super().api_call(api_method, **kwargs)
        except SlackApiError as e:
            if self.metrics is not None:
                self.metrics.slack_errors.labels(api_method, str(e.response.get("error", "unknown"))).inc()
            raise
        except Exception as e:
            if self.metrics is not None:
                self.metrics.slack_errors.labels(api_method, type(e).__name__).inc()
            raise

    async def close(self) -> None:
        if self.session is not None and not self.session.closed:
            await self.session.close()


def make_web_client(token: str, api_url: str | None, metrics: Metrics | None = None,
                    rate_scale: float = 1.0) -> InstrumentedWebClient:
    base_url = (api_url or DEFAULT_API_URL).rstrip("/") + "/"
    pacer = SlackPacer(rate_scale)
    client = InstrumentedWebClient(
        token=token,
        base_url=base_url,
        timeout=10,
        retry_handlers=[
            PacedRateLimitRetryHandler(pacer, max_retry_count=3),
            AsyncServerErrorRetryHandler(max_retry_count=2),
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
        ],
    )
    client.metrics = metrics
    client.pacer = pacer
    return client


def _args_of(kwargs: dict[str, Any]) -> dict[str, Any]:
    for key in ("json", "data", "params"):
        args = kwargs.get(key)
        if isinstance(args, dict):
            return args
    return {}
