"""The Slack Web API client: slack_sdk's AsyncWebClient with its retry handlers.

`SLACK_API_URL` points it at another Web API (the sandbox's); rate limits honour
Retry-After, and 5xx and dropped connections are retried a few times.
"""

from __future__ import annotations

from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.metrics import Metrics

DEFAULT_API_URL = "https://slack.com/api/"


class InstrumentedWebClient(AsyncWebClient):
    """Counts failed calls per method for /metrics; behaviour otherwise unchanged."""

    metrics: Metrics | None = None

    async def api_call(self, api_method: str, **kwargs: Any) -> Any:  # type: ignore[override]
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


def make_web_client(token: str, api_url: str | None, metrics: Metrics | None = None) -> InstrumentedWebClient:
    base_url = (api_url or DEFAULT_API_URL).rstrip("/") + "/"
    client = InstrumentedWebClient(
        token=token,
        base_url=base_url,
        timeout=10,
        retry_handlers=[
            AsyncRateLimitErrorRetryHandler(max_retry_count=3),
            AsyncServerErrorRetryHandler(max_retry_count=2),
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
        ],
    )
    client.metrics = metrics
    return client
