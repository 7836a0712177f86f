"""boto3 clients for the bot, called off the event loop.

Endpoints and credentials come from boto3's own resolution only (AWS_REGION,
AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_<SERVICE>, IRSA ...); throttling and 5xx
are absorbed by botocore's `standard` retry mode. Failed calls are counted
through botocore's event hooks, so no call site has to remember to.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from bot.metrics import Metrics

RETRY_CONFIG = BotoConfig(
    retries={"mode": "standard", "max_attempts": 5},
    connect_timeout=3,
    read_timeout=20,
    user_agent_appid="erp-chatops",
)


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "ClientError"))
    return type(exc).__name__


class AwsClients:
    """One boto3 session, its clients created once (boto3 sessions are not thread-safe; clients are)."""

    def __init__(self, metrics: Metrics | None = None, session: boto3.session.Session | None = None) -> None:
        self._session = session or boto3.session.Session()
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._metrics = metrics

    def client(self, service: str) -> Any:
        with self._lock:
            if service not in self._clients:
                c = self._session.client(service, config=RETRY_CONFIG)  # type: ignore[call-overload]
                if self._metrics is not None:
                    c.meta.events.register("after-call", self._count_http_error)
                    c.meta.events.register("after-call-error", self._count_transport_error)
                self._clients[service] = c
            return self._clients[service]

    async def call(self, service: str, operation: str, **params: Any) -> dict[str, Any]:
        """Run one API call in a worker thread: boto3 blocks, the event loop must not."""
        client = self.client(service)
        method = getattr(client, operation)
        return await asyncio.to_thread(method, **params)

    def _count_http_error(self, http_response: Any, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        status = getattr(http_response, "status_code", 200)
        if status >= 400 and self._metrics is not None:
            code = str(parsed.get("Error", {}).get("Code", status))
            self._metrics.aws_errors.labels(model.service_model.service_name, model.name, code).inc()

    def _count_transport_error(self, exception: BaseException, model: Any, **_: Any) -> None:
        if self._metrics is not None:
            self._metrics.aws_errors.labels(
                model.service_model.service_name, model.name, type(exception).__name__).inc()


__all__ = ["AwsClients", "BotoCoreError", "ClientError", "error_code"]
