"""AWS's JSON 1.1 protocol, for the stand-ins that answer an API themselves (CodePipeline, Logs Insights).

The `X-Amz-Target` header names the operation and `op_<Operation>(body)` answers it; an error is
`{"__type": code, "message": ...}` with status 400, as botocore reads them; an operation the stand-in does
not serve is an UnknownOperationException, a malformed body a ValidationException.
"""

from __future__ import annotations

import json

from aiohttp import web

CONTENT_TYPE = "application/x-amz-json-1.1"


class ApiError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def error_response(code: str, message: str) -> web.Response:
    return web.json_response({"__type": code, "message": message}, status=400, content_type=CONTENT_TYPE)


class JsonApi:
    url: str = ""

    def web_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/", self._dispatch)
        return app

    def before(self, operation: str) -> web.Response | None:
        """An answer to give instead of the operation's (a fault), or None."""
        return None

    async def _dispatch(self, request: web.Request) -> web.Response:
        operation = request.headers.get("X-Amz-Target", "").rsplit(".", 1)[-1]
        early = self.before(operation)
        if early is not None:
            return early
        try:
            body = json.loads(await request.text() or "{}")
            handler = getattr(self, f"op_{operation}", None)
            if handler is None:
                raise ApiError("UnknownOperationException", f"{operation} is not served by this stand-in")
            result = await handler(body)
        except ApiError as e:
            return error_response(e.code, e.message)
        except (ValueError, KeyError) as e:
            return error_response("ValidationException", str(e))
        return web.json_response(result, content_type=CONTENT_TYPE)
