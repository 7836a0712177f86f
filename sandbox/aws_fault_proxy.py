"""AWS misbehaving on purpose: an HTTP proxy in front of moto's server that injects faults.

boto3 reaches it through `AWS_ENDPOINT_URL_<SERVICE>` exactly as it reaches AWS,
and everything it does not break is forwarded to moto untouched (the signature
still verifies there: host and body are passed through). A `Fault` answers the
way the service does under load, in the service's own protocol (JSON `__type`
errors with the status AWS uses), or drops the connection without an answer.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import aiohttp
from aiohttp import web

# (status, error code) per kind, as the services answer: botocore's standard retry mode knows each code
FAULTS: dict[str, dict[str, tuple[int, str]]] = {
    "throttle": {"dynamodb": (400, "com.amazonaws.dynamodb.v20120810#ThrottlingException"),
                 "sqs": (400, "com.amazonaws.sqs#RequestThrottled"),
                 "*": (400, "ThrottlingException")},
    "unavailable": {"*": (503, "ServiceUnavailable")},
    "internal": {"dynamodb": (500, "com.amazonaws.dynamodb.v20120810#InternalServerError"),
                 "*": (500, "InternalFailure")},
}
SESSION = web.AppKey("session", aiohttp.ClientSession)
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}
_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/[^/]+/([^/]+)/aws4_request")


@dataclass
class Fault:
    service: str  # signing name: dynamodb, sqs ...; "*" for any
    kind: str  # throttle | unavailable | internal | reset | slow (answers, after `delay` seconds)
    # | unprocessed (DynamoDB BatchGetItem/BatchWriteItem do nothing and hand every key or item back, as
    #   they do under load: "UnprocessedKeys"/"UnprocessedItems", botocore's dynamodb model)
    times: int = 1  # how many matching requests it breaks
    operation: str = "*"  # e.g. "PutItem", "ReceiveMessage"
    every: int = 1  # break only every n-th matching request (1: each one)
    delay: float = 0.0  # for "slow"
    _seen: int = 0

    def takes(self, service: str, operation: str) -> bool:
        if self.times <= 0 or self.service not in ("*", service) or self.operation not in ("*", operation):
            return False
        self._seen += 1
        if self._seen % self.every:
            return False
        self.times -= 1
        return True


class MotoProxy:
    """An HTTP proxy in front of moto's server: what a subclass does not answer itself goes to moto as sent."""

    upstream: str  # moto's server

    def web_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        app.cleanup_ctx.append(self._session)
        return app

    async def _session(self, app: web.Application):  # type: ignore[no-untyped-def]
        app[SESSION] = aiohttp.ClientSession(auto_decompress=False)
        yield
        await app[SESSION].close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError

    async def forward(self, request: web.Request, body: bytes) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with request.app[SESSION].request(request.method, self.upstream + request.path_qs, data=body,
                                                  headers=headers, allow_redirects=False) as upstream:
            payload = await upstream.read()
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
            return web.Response(status=upstream.status, body=payload, headers=out)


@dataclass
class AwsFaultProxy(MotoProxy):
    upstream: str  # moto's server
    faults: list[Fault] = field(default_factory=list)
    injected: list[tuple[str, str, str]] = field(default_factory=list)  # (service, operation, kind)
    forwarded: int = 0
    url: str = ""

    @staticmethod
    def identify(request: web.Request) -> tuple[str, str]:
        """(service, operation) of a signed AWS request: the signing scope names the service; the target
        header (JSON protocols) or the Action parameter (query protocols) names the operation."""
        match = _SCOPE.search(request.headers.get("Authorization", ""))
        service = match.group(1) if match else "unknown"
        target = request.headers.get("X-Amz-Target", "")
        operation = target.rsplit(".", 1)[-1] if target else request.query.get("Action", "")
        return service, operation

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        service, operation = self.identify(request)
        if not operation and body and request.content_type == "application/x-www-form-urlencoded":
            operation = parse_qs(body.decode()).get("Action", [""])[0]
        fault = next((f for f in self.faults if f.takes(service, operation)), None)
        if fault is not None:
            self.injected.append((service, operation, fault.kind))
            if fault.kind == "unprocessed":
                request_items = json.loads(body or b"{}").get("RequestItems", {})
                if operation == "BatchGetItem":
                    answer = {"Responses": {t: [] for t in request_items}, "UnprocessedKeys": request_items}
                else:
                    answer = {"UnprocessedItems": request_items}
                return web.json_response(answer, content_type="application/x-amz-json-1.0")
            if fault.kind == "slow":
                await asyncio.sleep(fault.delay)
                self.forwarded += 1
                return await self.forward(request, body)
            if fault.kind == "reset":
                if request.transport is not None:
                    request.transport.abort()  # the client sees the connection drop mid-request
                return web.Response(status=500)
            kinds = FAULTS[fault.kind]
            status, code = kinds.get(service, kinds["*"])
            return web.json_response({"__type": code, "message": f"{code.rsplit('#', 1)[-1]} (injected)"},
                                     status=status, content_type="application/x-amz-json-1.0",
                                     headers={"x-amzn-query-error": f"{code.rsplit('#', 1)[-1]};Sender"})
        self.forwarded += 1
        return await self.forward(request, body)

    def count(self, service: str) -> int:
        return sum(1 for s, _, _ in self.injected if s == service)


__all__ = ["FAULTS", "AwsFaultProxy", "Fault", "MotoProxy"]
