"""ECR's scan findings in pages, as AWS serves them: moto returns every finding in one answer.

botocore's ECR documentation for DescribeImageScanFindings: without maxResults it "returns up to 100
results and a nextToken value, if applicable"; maxResults is 1 to 1000; the rest comes with the nextToken.
boto3 reaches this proxy through `AWS_ENDPOINT_URL_ECR`; it asks moto for the whole answer and hands it
out a page at a time (basic findings, then enhanced ones). Every other request goes to moto untouched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from sandbox.aws_fault_proxy import AwsFaultProxy, MotoProxy

DEFAULT_PAGE = 100
JSON = "application/x-amz-json-1.1"


def _error(code: str, message: str) -> web.Response:
    return web.json_response({"__type": code, "message": message}, status=400, content_type=JSON)


@dataclass
class EcrPager(MotoProxy):
    upstream: str  # moto's server
    url: str = ""
    pages_served: int = 0

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        _, operation = AwsFaultProxy.identify(request)
        if operation != "DescribeImageScanFindings":
            return await self.forward(request, body)
        asked: dict[str, Any] = json.loads(body or b"{}")
        size = asked.pop("maxResults", DEFAULT_PAGE)
        token = asked.pop("nextToken", None)
        if not isinstance(size, int) or not 1 <= size <= 1000:
            return _error("InvalidParameterException", "maxResults must be between 1 and 1000")
        start = 0
        if token is not None:
            if not isinstance(token, str) or not token.startswith("page-") or not token[5:].isdigit():
                return _error("InvalidParameterException", "Invalid parameter at 'nextToken'")
            start = int(token[5:])
        answer = await self.forward(request, json.dumps(asked).encode())
        if answer.status != 200:
            return answer
        whole = json.loads(answer.body)  # type: ignore[arg-type]
        found = whole.get("imageScanFindings") or {}
        items = [("findings", f) for f in found.get("findings", [])] + \
                [("enhancedFindings", f) for f in found.get("enhancedFindings", [])]
        page = items[start:start + size]
        if found:
            for kind in ("findings", "enhancedFindings"):
                if kind in found:
                    found[kind] = [f for k, f in page if k == kind]
        if start + size < len(items):
            whole["nextToken"] = f"page-{start + size}"
        self.pages_served += 1
        return web.json_response(whole, content_type=JSON)
