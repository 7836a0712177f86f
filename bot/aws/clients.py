"""boto3 clients for the bot, called off the event loop.

Endpoints and credentials come from boto3's own resolution only (AWS_REGION,
AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_<SERVICE>, IRSA ...); throttling and 5xx
are absorbed by botocore's `standard` retry mode. Failed attempts (retried
ones too) are counted through botocore's event hooks, so no call site has to
remember to.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from bot.metrics import Metrics

THROTTLING_CODES = {"Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
                    "RequestThrottledException", "TooManyRequestsException", "ProvisionedThroughputExceededException",
                    "RequestLimitExceeded", "LimitExceededException", "SlowDown"}
AWS_THREADS = 32  # worker threads for boto3 calls (bot.http_server), one pooled connection each
RETRY_CONFIG = BotoConfig(
    retries={"mode": "standard", "max_attempts": 5},
    max_pool_connections=AWS_THREADS,
    connect_timeout=3,
    read_timeout=20,
    user_agent_appid="erp-chatops",
)

# For a last call on the way out (a stopping replica handing messages back): one attempt, soon over, so the
# pod exits within its grace period even when AWS is slow; the visibility timeout is the fallback.
LAST_CALL_CONFIG = RETRY_CONFIG.merge(BotoConfig(retries={"mode": "standard", "total_max_attempts": 1},
                                                 connect_timeout=2, read_timeout=5))


def aws_trouble(exc: BaseException) -> str:
    """What went wrong with AWS, in words for a chat reply (the retries already gave up)."""
    code = error_code(exc)
    operation = getattr(exc, "operation_name", None)
    where = f" (`{code}` from {operation})" if operation else f" (`{code}`)"
    if code.rsplit("#", 1)[-1] in THROTTLING_CODES:
        return "AWS is throttling the bot's requests" + where
    return "AWS is not answering the bot" + where


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

    def client(self, service: str, *, last_call: bool = False) -> Any:
        """The service's client; `last_call`: the one with LAST_CALL_CONFIG."""
        key = f"{service} last call" if last_call else service
        made = self._clients.get(key)
        if made is not None:  # no lock once made: a model loading for another service holds up no call
            return made
        with self._lock:
            if key not in self._clients:
                config = LAST_CALL_CONFIG if last_call else RETRY_CONFIG
                c = self._session.client(service, config=config)  # type: ignore[call-overload]
                if self._metrics is not None:
                    c.meta.events.register("response-received", self._count_attempt)
                self._clients[key] = c
            return self._clients[key]

    async def call(self, service: str, operation: str, **params: Any) -> dict[str, Any]:
        """Run one API call in a worker thread: boto3 blocks, the event loop must not (nor does making a
        service's client, which reads its model from disk: tens of milliseconds the first time)."""
        def run() -> dict[str, Any]:
            return getattr(self.client(service), operation)(**params)  # type: ignore[no-any-return]
        return await asyncio.to_thread(run)

    def _count_attempt(self, event_name: str, response_dict: dict[str, Any] | None,
                       parsed_response: dict[str, Any] | None, exception: BaseException | None, **_: Any) -> None:
        """Every failed attempt, retried or not, so throttling shows on /metrics before it shows in chat."""
        if self._metrics is None:
            return
        _event, service, operation = event_name.split(".", 2)
        if exception is not None:
            self._metrics.aws_errors.labels(service, operation, type(exception).__name__).inc()
        elif response_dict is not None and response_dict.get("status_code", 200) >= 400:
            code = str((parsed_response or {}).get("Error", {}).get("Code") or response_dict["status_code"])
            self._metrics.aws_errors.labels(service, operation, code).inc()


__all__ = ["AwsClients", "BotoCoreError", "ClientError", "aws_trouble", "error_code"]
