"""The local workspace is as strict as Slack documents: membership, scopes, triggers, acks, response_urls.

Each rule is what a new install of the bot meets in a real workspace; the bot's own tests run against it.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web
from slack_sdk.errors import SlackApiError

from bot.slack.web_client import make_web_client
from sandbox.slack_rate_limits import RateLimits
from sandbox.slack_workspace import (
    MANIFEST,
    RESPONSE_URL_POSTS,
    TIMED_OUT,
    SlackWorkspace,
    manifest_scopes,
)
from tests.support import BOT_TOKEN


async def slack_error(call) -> str:  # type: ignore[no-untyped-def]
    try:
        await call
    except SlackApiError as e:
        return str(e.response["error"])
    return "ok"


async def test_the_bot_posts_only_where_it_was_invited(slack: SlackWorkspace):
    client = make_web_client(BOT_TOKEN, f"{slack.base_url}/api/")
    slack.remove_bot("C0PROD")
    assert await slack_error(client.chat_postMessage(channel="C0PROD", text="card")) == "not_in_channel"
    assert await slack_error(client.chat_postEphemeral(channel="C0PROD", user="U0DEV1", text="x")) == "not_in_channel"
    assert await slack_error(client.conversations_history(channel="C0PROD")) == "not_in_channel"
    upload = await client.files_getUploadURLExternal(filename="a.txt", length=1)
    async with aiohttp.ClientSession() as http:
        await http.post(upload["upload_url"], data=b"x")
    assert await slack_error(client.files_completeUploadExternal(
        files=[{"id": upload["file_id"]}], channel_id="C0PROD")) == "not_in_channel"
    assert (await client.conversations_info(channel="C0PROD"))["channel"]["is_member"] is False
    assert slack.channel_messages("C0PROD") == []
    # other channels are unaffected, and an invite is all it takes
    assert (await client.chat_postMessage(channel="C0DEV", text="x"))["ok"]
    slack.invite_bot("C0PROD")
    assert (await client.conversations_info(channel="C0PROD"))["channel"]["is_member"] is True
    assert (await client.chat_postMessage(channel="C0PROD", text="card"))["ok"]


async def test_a_method_whose_scope_the_manifest_lacks_is_refused(slack: SlackWorkspace, tmp_path: Path):
    manifest = yaml.safe_load(MANIFEST.read_text())
    assert slack.scopes == frozenset(manifest["oauth_config"]["scopes"]["bot"])
    manifest["oauth_config"]["scopes"]["bot"].remove("files:write")
    narrower = tmp_path / "manifest.yaml"
    narrower.write_text(yaml.safe_dump(manifest))
    slack.scopes = manifest_scopes(narrower)
    client = make_web_client(BOT_TOKEN, f"{slack.base_url}/api/")
    try:
        await client.files_getUploadURLExternal(filename="a.txt", length=1)
    except SlackApiError as e:
        assert e.response["error"] == "missing_scope"
        assert e.response["needed"] == "files:write" and "chat:write" in e.response["provided"].split(",")
    else:
        raise AssertionError("files.getUploadURLExternal without files:write was accepted")
    assert (await client.chat_postMessage(channel="C0DEV", text="x"))["ok"]  # chat:write is still granted


@pytest.fixture
def slow_bot():  # type: ignore[no-untyped-def]
    """A bot that opens a modal from each trigger it receives, or answers after `delay` seconds."""
    state: dict = {"delay": 0.0, "triggers": []}

    async def handle(request: web.Request) -> web.Response:
        form = await request.post()
        payload = json.loads(str(form["payload"])) if "payload" in form else dict(form)
        state["triggers"].append(payload.get("trigger_id"))
        await asyncio.sleep(state["delay"])
        return web.json_response({"response_type": "ephemeral", "text": "the late answer"})

    state["handle"] = handle
    return state


async def serve_bot(slack: SlackWorkspace, handle) -> web.AppRunner:  # type: ignore[no-untyped-def]
    app = web.Application()
    app.router.add_post("/slack/events", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    slack.bot_url = f"http://127.0.0.1:{port}/slack/events"
    return runner


async def test_an_answer_later_than_three_seconds_is_dropped_and_the_person_sees_the_timeout(
        slack: SlackWorkspace, slow_bot):  # type: ignore[no-untyped-def]
    runner = await serve_bot(slack, slow_bot["handle"])
    try:
        slow_bot["delay"] = 3.5
        status, _ = await slack.send_command("U0DEV1", "C0DEV", "status")
        assert status == TIMED_OUT
        seen = [m.text for m in slack.ephemerals("U0DEV1")]
        assert seen == ['/erp failed with the error "operation_timeout"']
        await asyncio.sleep(0.6)  # the bot's late answer arrives after Slack stopped waiting
        assert [m.text for m in slack.ephemerals("U0DEV1")] == seen
        slow_bot["delay"] = 0.0
        status, _ = await slack.send_command("U0DEV1", "C0DEV", "status")
        assert status == 200 and slack.ephemerals("U0DEV1")[-1].text == "the late answer"
    finally:
        await runner.cleanup()


async def test_a_trigger_lives_three_seconds_and_opens_one_view(slack: SlackWorkspace, slow_bot):  # type: ignore[no-untyped-def]
    runner = await serve_bot(slack, slow_bot["handle"])
    client = make_web_client(BOT_TOKEN, f"{slack.base_url}/api/")
    view = {"type": "modal", "title": {"type": "plain_text", "text": "Reject deploy"}, "blocks": []}
    try:
        await slack.send_command("U0APPR1", "C0PROD", "status")
        await slack.send_command("U0APPR1", "C0PROD", "status")
        first, second = slow_bot["triggers"]
        assert (await client.views_open(trigger_id=first, view=view))["ok"]
        assert await slack_error(client.views_open(trigger_id=first, view=view)) == "exchanged_trigger_id"
        started = slack.clock()
        slack.clock = lambda: started + 3.1  # type: ignore[method-assign]
        assert await slack_error(client.views_open(trigger_id=second, view=view)) == "expired_trigger_id"
        assert await slack_error(client.views_open(trigger_id="1.2.nope", view=view)) == "invalid_trigger_id"
    finally:
        await runner.cleanup()


async def test_a_response_url_takes_five_posts_and_a_command_answer_cannot_be_replaced(
        slack: SlackWorkspace, slow_bot):  # type: ignore[no-untyped-def]
    async def capture(request: web.Request) -> web.Response:
        slow_bot["response_url"] = str((await request.post())["response_url"])
        return web.Response()

    runner = await serve_bot(slack, capture)
    try:
        await slack.send_command("U0DEV1", "C0DEV", "logs notification")
        url = slow_bot["response_url"]
        async with aiohttp.ClientSession() as http:
            answers = []
            for n in range(RESPONSE_URL_POSTS + 1):
                async with http.post(url, json={"text": f"answer {n}", "replace_original": True}) as resp:
                    answers.append((resp.status, await resp.text()))
        assert answers[:RESPONSE_URL_POSTS] == [(200, "ok")] * RESPONSE_URL_POSTS
        assert answers[-1] == (404, "used_url")
        # replace_original had no effect on a slash command's answers: each is its own message
        assert [m.text for m in slack.ephemerals("U0DEV1")] == [f"answer {n}" for n in range(RESPONSE_URL_POSTS)]
    finally:
        await runner.cleanup()



async def test_the_published_rate_limits_answer_429_with_retry_after(slack: SlackWorkspace):
    now = [1000.0]
    slack.rate_limits = RateLimits(clock=lambda: now[0])
    headers = {"Authorization": f"Bearer {BOT_TOKEN}"}

    async def call(http: aiohttp.ClientSession, method: str, **args: str) -> tuple[int, str | None, str]:
        async with http.post(f"{slack.base_url}/api/{method}", data=args, headers=headers) as resp:
            return resp.status, resp.headers.get("Retry-After"), (await resp.json())["error" if resp.status != 200
                                                                                   else "ok"]

    async with aiohttp.ClientSession() as http:
        # chat.postMessage: about one a second per channel, with a short burst
        posts = [await call(http, "chat.postMessage", channel="C0DEV", text=f"m{n}") for n in range(4)]
        assert [p[0] for p in posts] == [200, 200, 200, 429] and posts[3][1:] == ("1", "ratelimited")
        assert (await call(http, "chat.postMessage", channel="C0PROD", text="x"))[0] == 200  # per channel
        now[0] += 1.0
        assert (await call(http, "chat.postMessage", channel="C0DEV", text="later"))[0] == 200
        # Tier 3 (chat.update): 50 a minute for the workspace, whatever the channel
        ts = slack.channel_messages("C0DEV")[0].ts
        updates = [(await call(http, "chat.update", channel="C0DEV", ts=ts, text=f"u{n}"))[0] for n in range(9)]
        assert updates == [200] * 8 + [429]
        now[0] += 60 / 50
        assert (await call(http, "chat.update", channel="C0DEV", ts=ts, text="after"))[0] == 200
    assert ("chat.update", "C0DEV") in slack.rate_limits.limited
