"""The bot's answers to response_urls (bot/slack/respond.py), against a real aiohttp server standing in for
Slack's API host and its hooks host."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.slack.respond import PooledRespond
from bot.slack.web_client import make_web_client


@pytest.fixture
async def slack_hosts() -> Any:
    seen: dict[str, Any] = {"hook_cookies": [], "hook_auth": []}

    async def api(request: web.Request) -> web.Response:
        response = web.json_response({"ok": True, "url": "https://erp.slack.com/", "team": "erp"})
        response.set_cookie("b", "browser-id")  # what slack.com's hosts set on a browser
        return response

    async def hook(request: web.Request) -> web.Response:
        seen["hook_cookies"].append(dict(request.cookies))
        seen["hook_auth"].append(request.headers.get("Authorization"))
        if request.match_info["token"] == "used":
            return web.Response(status=404, text="used_url")
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/api/{method}", api)
    app.router.add_post("/hook/{token}", hook)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    # by name, not address: aiohttp keeps no cookies from a bare IP address, and Slack's hosts have names
    seen["url"] = f"http://localhost:{server.port}"
    yield seen
    await server.close()


async def test_an_answer_carries_neither_the_token_nor_cookies_from_the_api_host(slack_hosts: dict[str, Any]):
    client = make_web_client("xoxb-secret", slack_hosts["url"] + "/api/")
    try:
        await client.auth_test()
        respond = PooledRespond(response_url=slack_hosts["url"] + "/hook/fresh", client=client)
        assert (await respond(text="prod: 4 services running")).status_code == 200
    finally:
        await client.close()
    assert slack_hosts["hook_cookies"] == [{}]
    assert slack_hosts["hook_auth"] == [None]


async def test_an_answer_slack_refuses_is_logged_without_its_url(slack_hosts: dict[str, Any],
                                                                 caplog: pytest.LogCaptureFixture):
    client = make_web_client("xoxb-secret", slack_hosts["url"] + "/api/")
    try:
        respond = PooledRespond(response_url=slack_hosts["url"] + "/hook/used", client=client)
        with caplog.at_level(logging.WARNING):
            assert (await respond(text="too late")).status_code == 404
    finally:
        await client.close()
    [line] = [r.getMessage() for r in caplog.records if r.name == "bot.slack.respond"]
    assert "404" in line and "used_url" in line and "/hook/" not in line
