"""The floor for the bench's acknowledgement aim: a Bolt app that registers `/erp` and only acknowledges it.

Same slack-bolt, same AsyncApp on aiohttp, same request adapter and signing secret as the bot, run as its own
process like the bot, so that the bench's ratio (bot p99 / this p99) is the cost of the bot's own code and
nothing else: what Bolt, aiohttp, the signature check and the machine cost, both pay.

    python -m bench.minimal_bolt_app --port 3100   (SLACK_SIGNING_SECRET, SLACK_BOT_TOKEN, SLACK_API_URL)
"""

from __future__ import annotations

import argparse
import os

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient


def build_app(signing_secret: str, token: str, api_url: str | None) -> web.Application:
    # a client with the bot's token and Slack URL: Bolt's one auth.test on the first request is the same for both
    client = AsyncWebClient(token=token, base_url=api_url or AsyncWebClient.BASE_URL)
    bolt = AsyncApp(client=client, signing_secret=signing_secret)

    @bolt.command("/erp")
    async def erp(ack: AsyncAck) -> None:
        await ack()

    async def slack_events(request: web.Request) -> web.StreamResponse:
        return await to_aiohttp_response(await bolt.async_dispatch(await to_bolt_request(request)))

    async def healthz(_: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "alive"})

    app = web.Application()
    app.router.add_post("/slack/events", slack_events)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    app = build_app(os.environ["SLACK_SIGNING_SECRET"], os.environ["SLACK_BOT_TOKEN"], os.environ.get("SLACK_API_URL"))
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
