"""The sandbox's web page: a Slack-like view of the local workspace.

GET  /                 the page
GET  /ui/state?user=U  channels, people, and the messages and modals that user sees
GET  /ui/events        server-sent events: something changed, fetch the state again
POST /ui/command       {user, channel, text}: type a slash command
POST /ui/click         {user, channel, ts, action_id}: press a button
POST /ui/submit        {user, view_id, values}: submit a modal
POST /ui/push          {environment}: a push to main starts the pipeline without Slack
POST /ui/advance       {days}: move the CodePipeline stand-in's clock forward (an approval expires after 7)
POST /ui/alarm         {environment, service, firing}: a service's error alarm goes to ALARM, or back to OK
POST /ui/drift         {}: patch employee's Deployment in erp-dev behind Helm's back (drift)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

from aiohttp import web

from sandbox.alarms import set_alarm
from sandbox.codepipeline import PipelineStandIn
from sandbox.erp_services import SERVICES
from sandbox.local_kube import LocalKube
from sandbox.slack_workspace import SlackWorkspace

STATIC = Path(__file__).parent / "static"


def _visible(workspace: SlackWorkspace, user: str) -> list[dict[str, Any]]:
    out = []
    for m in workspace.messages:
        if m.ephemeral_for and m.ephemeral_for != user:
            continue
        out.append({"channel": m.channel, "ts": m.ts, "text": m.text, "blocks": m.blocks, "thread_ts": m.thread_ts,
                    "ephemeral": bool(m.ephemeral_for), "files": m.files, "edited": m.edited,
                    "user": m.user, **({"subtype": "thread_broadcast"} if m.broadcast else {})})
    return out


def add_page_routes(app: web.Application, workspace: SlackWorkspace, pipeline: PipelineStandIn | None = None,
                    kube: LocalKube | None = None) -> None:
    async def index(_: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html")

    async def state(request: web.Request) -> web.StreamResponse:
        user = request.query.get("user", "")
        views = [{"id": vid, **{k: v for k, v in view.items() if k != "user"}}
                 for vid, view in workspace.views.items() if view.get("user") == user]
        return web.json_response({
            "people": [vars(p) for p in workspace.people.values()],
            "channels": [{"id": cid, "name": name, "bot_member": cid in workspace.bot_in}
                         for cid, name in workspace.channels.items()],
            "messages": _visible(workspace, user),
            "views": views,
            "commands": workspace.command_log[-50:],
        })

    async def close_event_streams(_: web.Application) -> None:
        """aiohttp waits for open handlers when it stops; an open page's stream would hold Ctrl-C until its
        next keep-alive write found the page gone (aiohttp's "Graceful shutdown": close long-lived
        connections in on_shutdown)."""
        workspace.close_subscribers()

    async def events(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        queue = workspace.subscribe()
        try:
            await resp.write(b"data: {\"kind\": \"hello\"}\n\n")
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), 15)
                    if event is None:  # the sandbox is stopping (close_event_streams)
                        break
                    await resp.write(f"data: {json.dumps(event)}\n\n".encode())
                except TimeoutError:
                    await resp.write(b": keep-alive\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            workspace.unsubscribe(queue)
        return resp

    async def command(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        text = str(body.get("text", "")).strip()
        if not text.startswith("/erp"):
            return web.json_response({"ok": False, "error": "Only /erp commands go to the bot here."}, status=400)
        status, _ = await workspace.send_command(str(body["user"]), str(body["channel"]), text[4:].strip())
        return web.json_response({"ok": status == 200, "status": status})

    async def click(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        message = workspace.find(str(body["channel"]), str(body["ts"]))
        if message is None:
            message = next((m for m in workspace.messages if m.ts == body["ts"]), None)
        if message is None:
            return web.json_response({"ok": False, "error": "message_not_found"}, status=404)
        status, _ = await workspace.click(str(body["user"]), message, str(body["action_id"]))
        return web.json_response({"ok": status == 200, "status": status})

    async def submit(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        status, reply = await workspace.submit_view(str(body["user"]), str(body["view_id"]), body.get("values", {}))
        errors = {}
        if reply.strip():
            with contextlib.suppress(ValueError):
                errors = json.loads(reply).get("errors", {})
        return web.json_response({"ok": status == 200 and not errors, "errors": errors})

    async def push(request: web.Request) -> web.StreamResponse:
        if pipeline is None:
            return web.json_response({"ok": False, "error": "no pipeline in this sandbox"}, status=404)
        body = await request.json()
        execution = pipeline.start_from_push(str(body.get("environment", "dev")))
        return web.json_response({"ok": True, "execution_id": execution.id})

    async def advance(request: web.Request) -> web.StreamResponse:
        if pipeline is None:
            return web.json_response({"ok": False, "error": "no pipeline in this sandbox"}, status=404)
        body = await request.json()
        days = body.get("days", 7)
        if not isinstance(days, int | float) or not 0 < days <= 30:
            return web.json_response({"ok": False, "error": "days: a number from 0 to 30"}, status=400)
        pipeline.advance(float(days) * 86400)
        return web.json_response({"ok": True})

    async def alarm(request: web.Request) -> web.StreamResponse:
        if pipeline is None:
            return web.json_response({"ok": False, "error": "no local AWS in this sandbox"}, status=404)
        body = await request.json()
        env, service = str(body.get("environment", "dev")), str(body.get("service", "employee"))
        if env not in ("dev", "prod") or service not in SERVICES:
            return web.json_response({"ok": False, "error": "environment dev or prod, and an ERP service"}, status=400)
        await asyncio.to_thread(set_alarm, pipeline.aws, pipeline.queue_url, env, service, bool(body.get("firing")))
        return web.json_response({"ok": True})

    async def drift(_: web.Request) -> web.StreamResponse:
        if kube is None:
            return web.json_response({"ok": False, "error": "no cluster in this sandbox (make tools)"}, status=404)
        # what `kubectl set image` does: a strategic merge patch of one container's image
        patch = {"spec": {"template": {"spec": {"containers": [{"name": "employee", "image":
                 "806332783810.dkr.ecr.ap-northeast-2.amazonaws.com/erp/employee-service:hotfix-by-hand"}]}}}}
        status, _ = await asyncio.to_thread(
            kube.request, "PATCH", "/apis/apps/v1/namespaces/erp-dev/deployments/employee-service", patch,
            content_type="application/strategic-merge-patch+json")
        return web.json_response({"ok": status == 200}, status=200 if status == 200 else 502)

    async def membership(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        channel = str(body.get("channel", ""))
        if channel not in workspace.channels:
            return web.json_response({"ok": False, "error": "channel_not_found"}, status=404)
        (workspace.invite_bot if body.get("member") else workspace.remove_bot)(channel)
        return web.json_response({"ok": True, "member": channel in workspace.bot_in})

    app.router.add_post("/ui/membership", membership)
    app.router.add_post("/ui/push", push)
    app.router.add_post("/ui/advance", advance)
    app.router.add_post("/ui/alarm", alarm)
    app.router.add_post("/ui/drift", drift)
    app.router.add_get("/", index)
    app.router.add_get("/ui/state", state)
    app.router.add_get("/ui/events", events)
    app.on_shutdown.append(close_event_streams)
    app.router.add_post("/ui/command", command)
    app.router.add_post("/ui/click", click)
    app.router.add_post("/ui/submit", submit)
