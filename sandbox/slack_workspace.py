"""A local Slack workspace: the Web API methods the bot uses, and Slack's side of the app.

It answers as Slack does (same envelopes, same error codes, Block Kit limits
enforced), records every call for tests, and sends slash commands and clicks
to the bot signed exactly as Slack signs them, with `response_url`s that work.
It is the sandbox's Slack and the tests' Slack: one implementation for both.

It is as strict as Slack documents, always (each rule cites its page):
- the bot posts only where it was invited (`not_in_channel`), as the manifest grants
  `chat:write`, not `chat:write.public`;
- a method whose scope `manifest.yaml` does not grant answers `missing_scope`;
- a trigger_id lives 3 seconds and is used once;
- a request the bot does not acknowledge within 3 seconds fails for the person
  (`operation_timeout`) and the late answer is dropped;
- a response_url takes 5 posts in 30 minutes, and `replace_original` replaces
  only a message with buttons, never a slash command's earlier answer;
- the published rate limits (sandbox/slack_rate_limits.py): 429 with Retry-After.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from sandbox.block_kit_limits import validate_blocks, validate_view
from sandbox.slack_rate_limits import RateLimits
from sandbox.slack_signing import interaction_body, signed_headers, slash_command_body

log = logging.getLogger(__name__)

TEAM_ID = "T0ERP"
BOT_USER_ID = "U0ERPBOT"
BOT_ID = "B0ERPBOT"


@dataclass
class Person:
    id: str
    name: str
    real_name: str
    title: str = ""


@dataclass
class Message:
    channel: str
    ts: str
    user: str
    text: str = ""
    blocks: list[dict[str, Any]] = field(default_factory=list)
    thread_ts: str | None = None
    ephemeral_for: str | None = None  # user id: only they see it
    files: list[dict[str, Any]] = field(default_factory=list)
    edited: int = 0
    metadata: dict[str, Any] | None = None  # message metadata: {"event_type": ..., "event_payload": {...}}
    broadcast: bool = False  # a thread reply also shown in the channel (chat.postMessage reply_broadcast)

    def as_slack(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "message", "user": self.user, "text": self.text, "ts": self.ts,
                               "blocks": self.blocks, "team": TEAM_ID}
        if self.user == BOT_USER_ID:
            out["bot_id"] = BOT_ID
        if self.thread_ts:
            out["thread_ts"] = self.thread_ts
        if self.broadcast:
            out["subtype"] = "thread_broadcast"
        if self.files:
            out["files"] = self.files
        return out


@dataclass
class ApiCall:
    method: str
    args: dict[str, Any]
    ok: bool
    error: str | None = None
    connection: int | None = None  # the client's port: one per TCP connection it opened
    at: float = field(default_factory=time.monotonic)  # when it arrived, for the pacing tests


@dataclass
class Fault:
    """An answer to give instead of the real one, `times` times (for failure tests)."""

    method: str
    status: int = 200
    error: str | None = None
    retry_after: int | None = None
    times: int = 1
    reset: bool = False  # drop the connection without an answer, as a failing load balancer does
    in_thread: bool = False  # only calls with a thread_ts (a thread reply, not the card itself)


# "You have 3 seconds to respond ... with an HTTP 200 OK" and trigger_ids "expire 3 seconds after they're
# sent" (docs.slack.dev: "Handling user interaction", "Interactivity: trigger_id").
ACK_SECONDS = 3.0
TRIGGER_SECONDS = 3.0
# "You can use a response_url to publish up to 5 responses within 30 minutes" ("Handling user interaction").
RESPONSE_URL_POSTS = 5
RESPONSE_URL_SECONDS = 30 * 60

# Scopes each Web API method needs, from its reference page (docs.slack.dev/reference/methods/<method>,
# "Scopes"); one of a method's scopes is enough. Methods with none (auth.test, chat.getPermalink, views.*)
# are absent. A bot token also needs to be a member of the channel for the posting methods (below).
METHOD_SCOPES: dict[str, tuple[str, ...]] = {
    "chat.postMessage": ("chat:write",),
    "chat.update": ("chat:write",),
    "chat.delete": ("chat:write",),
    "chat.postEphemeral": ("chat:write",),
    "conversations.history": ("channels:history", "groups:history", "im:history", "mpim:history"),
    "conversations.info": ("channels:read", "groups:read", "im:read", "mpim:read"),
    "usergroups.users.list": ("usergroups:read",),
    "users.info": ("users:read",),
    "files.getUploadURLExternal": ("files:write",),
    "files.completeUploadExternal": ("files:write",),
}
TIMED_OUT = 0  # the status _deliver reports when the bot did not answer in time (Slack shows an error)
MANIFEST = Path(__file__).resolve().parent.parent / "manifest.yaml"


def manifest_scopes(path: Path = MANIFEST) -> frozenset[str]:
    """The bot scopes the app's manifest asks for: what an install of it grants."""
    manifest = yaml.safe_load(path.read_text())
    return frozenset(manifest["oauth_config"]["scopes"]["bot"])


DEFAULT_PEOPLE = [
    Person("U0DEV1", "dana", "Dana Developer", "Backend developer"),
    Person("U0APPR1", "ari", "Ari Approver", "Release manager"),
    Person("U0ONCALL", "oli", "Oli On-call", "SRE, on call"),
    Person("U0GUEST", "gus", "Gus Guest", "Contractor (guest account)"),
]
DEFAULT_CHANNELS = {"C0DEV": "erp-dev", "C0PROD": "erp-prod", "C0ONCALL": "erp-oncall", "C0GENERAL": "general"}
DEFAULT_GROUPS = {"S0APPROVERS": ["U0APPR1"], "S0ONCALL": ["U0ONCALL", "U0APPR1"], "S0DEVS": ["U0DEV1"]}


class SlackWorkspace:
    def __init__(self, *, bot_token: str, signing_secret: str, bot_url: str | None = None,
                 people: list[Person] | None = None, channels: dict[str, str] | None = None,
                 groups: dict[str, list[str]] | None = None, bot_in: set[str] | None = None,
                 scopes: frozenset[str] | None = None, rate_limits: RateLimits | None = None) -> None:
        self.bot_token = bot_token
        self.signing_secret = signing_secret
        self.bot_url = bot_url  # the bot's /slack/events
        self.base_url = ""  # set once served: http://host:port
        self.people = {p.id: p for p in (people or DEFAULT_PEOPLE)}
        self.channels = dict(channels or DEFAULT_CHANNELS)
        self.groups = {k: list(v) for k, v in (groups or DEFAULT_GROUPS).items()}
        # channels the bot was invited to (the sandbox's seed invites it everywhere; tests remove it)
        self.bot_in = set(self.channels) if bot_in is None else set(bot_in)
        self.scopes = manifest_scopes() if scopes is None else scopes
        self.rate_limits = rate_limits or RateLimits()  # always on; a scale for the soak's volume
        self.calls: list[ApiCall] = []
        self.response_posts: list[ApiCall] = []  # posts to response_urls, apart from the Web API's calls
        self.delivered: list[tuple[str, dict[str, str]]] = []  # signed requests sent to the bot, in order
        self.messages: list[Message] = []
        self.views: dict[str, dict[str, Any]] = {}
        self.files: dict[str, dict[str, Any]] = {}
        self.faults: list[Fault] = []
        self._ts = itertools.count(1)
        self._responses: dict[str, dict[str, Any]] = {}  # response_url token -> origin
        self._triggers: dict[str, tuple[str, float]] = {}  # trigger_id -> (user id, issued at, monotonic)
        self._used_triggers: set[str] = set()
        self._subscribers: list[asyncio.Queue[dict[str, Any] | None]] = []  # None: the stream ends
        self._closed = False
        self.command_log: list[dict[str, str]] = []  # what people typed, for the page
        self.timeouts: list[str] = []  # requests the bot did not acknowledge within ACK_SECONDS
        self.clock = time.monotonic  # for trigger and response_url lifetimes; tests move it on

    # --- helpers for tests and the page ------------------------------------------

    def calls_to(self, method: str) -> list[ApiCall]:
        return [c for c in self.calls if c.method == method]

    def channel_messages(self, channel: str, *, top_level: bool = True) -> list[Message]:
        return [m for m in self.messages if m.channel == channel and not m.ephemeral_for
                and (not top_level or m.thread_ts is None or m.thread_ts == m.ts or m.broadcast)]

    def thread(self, channel: str, ts: str) -> list[Message]:
        return [m for m in self.messages if m.channel == channel and m.thread_ts == ts and m.ts != ts]

    def ephemerals(self, user: str) -> list[Message]:
        return [m for m in self.messages if m.ephemeral_for == user]

    def remove_bot(self, channel: str) -> None:
        """Someone removes the bot from a channel (`/kick @erp-chatops`)."""
        self.bot_in.discard(channel)
        self._publish("membership", channel=channel)

    def invite_bot(self, channel: str) -> None:
        """Someone invites the bot (`/invite @erp-chatops`)."""
        self.bot_in.add(channel)
        self._publish("membership", channel=channel)

    def subscribe(self) -> asyncio.Queue[dict[str, Any] | None]:
        q: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        if self._closed:  # it arrived as the sandbox stopped: its stream ends at once
            q.put_nowait(None)
        self._subscribers.append(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[dict[str, Any] | None]) -> None:
        if q in self._subscribers:
            self._subscribers.remove(q)

    def close_subscribers(self) -> None:
        """Each subscriber's stream ends (it reads None), and so does any that subscribes after."""
        self._closed = True
        for q in self._subscribers:
            q.put_nowait(None)

    def _publish(self, kind: str, **data: Any) -> None:
        for q in self._subscribers:
            q.put_nowait({"kind": kind, **data})

    def _next_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    def _add(self, message: Message) -> Message:
        self.messages.append(message)
        self._publish("message", channel=message.channel, ts=message.ts)
        return message

    def find(self, channel: str, ts: str) -> Message | None:
        for m in self.messages:
            if m.channel == channel and m.ts == ts and not m.ephemeral_for:
                return m
        return None

    def _channel_id(self, value: Any) -> str | None:
        if not isinstance(value, str):
            return None
        if value in self.channels:
            return value
        name = value.lstrip("#")
        for cid, cname in self.channels.items():
            if cname == name:
                return cid
        return None

    # --- Slack -> bot ---------------------------------------------------------------

    async def _deliver(self, body: str, *, timestamp: int | None = None) -> tuple[int, str]:
        """Send a signed request; an answer later than Slack's 3 seconds is dropped, as Slack drops it."""
        if not self.bot_url:
            raise RuntimeError("the workspace has no bot URL to deliver to")
        headers = signed_headers(self.signing_secret, body, timestamp)
        self.delivered.append((body, headers))
        try:
            return await asyncio.wait_for(self._post(self.bot_url, body, headers), ACK_SECONDS)
        except TimeoutError:
            self.timeouts.append(body)
            return TIMED_OUT, "operation_timeout"

    async def replay(self, url: str | None = None) -> tuple[int, str]:
        """Send the last request again, byte for byte with its signature, as someone who captured it would."""
        body, headers = self.delivered[-1]
        target = url or self.bot_url
        if not target:
            raise RuntimeError("the workspace has no bot URL to deliver to")
        return await self._post(target, body, headers)

    @staticmethod
    async def _post(url: str, body: str, headers: dict[str, str]) -> tuple[int, str]:
        async with aiohttp.ClientSession() as session, session.post(
                url, data=body.encode(), headers=headers, timeout=aiohttp.ClientTimeout(total=10)) as resp:
            return resp.status, await resp.text()

    def _new_response_url(self, user: str, channel: str, origin_ts: str | None = None) -> str:
        token = secrets.token_urlsafe(12)
        self._responses[token] = {"user": user, "channel": channel, "origin_ts": origin_ts, "last_ts": None,
                                  "posts": [], "issued": self.clock()}
        return f"{self.base_url}/response/{token}"

    def _new_trigger(self, user: str) -> str:
        trigger = f"{int(time.time())}.{secrets.token_hex(6)}"
        self._triggers[trigger] = (user, self.clock())
        return trigger

    async def send_command(self, user: str, channel: str, text: str, command: str = "/erp") -> tuple[int, str]:
        """Type a slash command as `user` in `channel`; the bot's immediate answer is shown like Slack shows it."""
        response_url = self._new_response_url(user, channel)
        body = slash_command_body(
            text=text, user_id=user, user_name=self.people[user].name if user in self.people else user,
            channel_id=channel, channel_name=self.channels.get(channel, channel),
            response_url=response_url, trigger_id=self._new_trigger(user), command=command)
        self.command_log.append({"user": user, "channel": channel, "text": f"{command} {text}".strip(),
                                 "ts": self._next_ts()})
        self._publish("command", user=user, channel=channel)
        status, reply = await self._deliver(body)
        token = response_url.rsplit("/", 1)[1]
        if status == TIMED_OUT:  # what Slack shows the person; the response_url still works afterwards
            self._add(Message(channel=channel, ts=self._next_ts(), user="USLACKBOT", ephemeral_for=user,
                              text=f'{command} failed with the error "operation_timeout"'))
        elif status == 200 and reply.strip():
            try:
                self._apply_response(token, json.loads(reply), from_ack=True)
            except ValueError:
                self._apply_response(token, {"text": reply}, from_ack=True)
        return status, reply

    async def click(self, user: str, message: Message, action_id: str) -> tuple[int, str]:
        """Press a button on a message, as `user`."""
        action = None
        for block in message.blocks:
            for el in block.get("elements", []) + ([block["accessory"]] if "accessory" in block else []):
                if el.get("action_id") == action_id:
                    action = {**el, "block_id": block.get("block_id", ""), "action_ts": str(time.time())}
        if action is None:
            raise LookupError(f"no button {action_id!r} on message {message.ts}")
        payload = {
            "type": "block_actions",
            "team": {"id": TEAM_ID, "domain": "erp-team"},
            "user": {"id": user, "username": self.people[user].name if user in self.people else user,
                     "team_id": TEAM_ID},
            "api_app_id": "A0ERPCHATOPS",
            "token": "deprecated-verification-token",
            "trigger_id": self._new_trigger(user),
            "channel": {"id": message.channel, "name": self.channels.get(message.channel, "")},
            "container": {"type": "message", "message_ts": message.ts, "channel_id": message.channel,
                          "is_ephemeral": bool(message.ephemeral_for)},
            "message": message.as_slack(),
            "response_url": self._new_response_url(user, message.channel, message.ts),
            "actions": [action],
        }
        return await self._deliver(interaction_body(payload))

    async def submit_view(self, user: str, view_id: str, values: dict[str, dict[str, str]]) -> tuple[int, str]:
        """Submit a modal; `values` maps block_id -> {action_id: typed text}."""
        view = self.views[view_id]
        state = {block: {action: {"type": "plain_text_input", "value": text} for action, text in typed.items()}
                 for block, typed in values.items()}
        payload = {
            "type": "view_submission",
            "team": {"id": TEAM_ID, "domain": "erp-team"},
            "user": {"id": user, "username": self.people[user].name if user in self.people else user,
                     "team_id": TEAM_ID},
            "api_app_id": "A0ERPCHATOPS",
            "token": "deprecated-verification-token",
            "trigger_id": self._new_trigger(user),
            "view": {**view, "id": view_id, "state": {"values": state}},
        }
        status, body = await self._deliver(interaction_body(payload))
        if status == 200 and not body.strip():
            self.views.pop(view_id, None)
            self._publish("view_closed", view_id=view_id)
        return status, body

    # --- response_url -----------------------------------------------------------------

    def _apply_response(self, token: str, body: dict[str, Any], *, from_ack: bool = False) -> str | None:
        """Show an answer sent to a response_url (or in an ack); None if accepted, else Slack's refusal."""
        origin = self._responses.get(token)
        if origin is None:
            return "no_such_response_url"
        if not from_ack:
            now = self.clock()
            if now - origin["issued"] > RESPONSE_URL_SECONDS:
                return "expired_url"
            if len(origin["posts"]) >= RESPONSE_URL_POSTS:
                return "used_url"
            origin["posts"].append(now)
        user, channel = origin["user"], origin["channel"]
        # replace_original / delete_original act on the message whose buttons were pressed; a slash command
        # has none, so there they change nothing and the answer is a new message ("Handling user interaction").
        if body.get("delete_original") and origin["origin_ts"]:
            self.messages = [m for m in self.messages if not (m.channel == channel and m.ts == origin["origin_ts"])]
            self._publish("message", channel=channel, ts=origin["origin_ts"])
            return None
        if body.get("replace_original") and origin["origin_ts"]:
            target_ts = origin["last_ts"] or origin["origin_ts"]
            for m in self.messages:
                if m.channel == channel and m.ts == target_ts:
                    m.text, m.blocks, m.edited = body.get("text", ""), body.get("blocks", []), m.edited + 1
                    self._publish("message", channel=channel, ts=m.ts)
                    return None
        ephemeral = body.get("response_type", "ephemeral") != "in_channel"
        msg = self._add(Message(channel=channel, ts=self._next_ts(), user=BOT_USER_ID, text=body.get("text", ""),
                                blocks=body.get("blocks") or [], ephemeral_for=user if ephemeral else None,
                                thread_ts=body.get("thread_ts")))
        origin["last_ts"] = msg.ts
        return None

    # --- the Web API -------------------------------------------------------------------

    def web_app(self) -> web.Application:
        app = web.Application(client_max_size=20 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/response/{token}", self._response)
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_get("/files/{file_id}", self._file)
        return app

    async def _response(self, request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peername") if request.transport is not None else None
        token = request.match_info["token"]

        def record(ok: bool, error: str | None = None) -> None:
            self.response_posts.append(ApiCall("response_url", {"token": token}, ok, error,
                                               connection=peer[1] if peer else None))

        for fault in self.faults:  # Fault("response_url", status=503): the hooks host failing one post
            if fault.method == "response_url" and fault.times > 0:
                fault.times -= 1
                record(False, f"http_{fault.status}")
                return web.Response(status=fault.status, text=fault.error or "service_unavailable")
        try:
            body = await request.json()
        except ValueError:
            record(False, "invalid_payload")
            return web.Response(status=400, text="invalid_payload")
        refusal = self._apply_response(token, body)
        record(refusal is None, refusal)
        if refusal is not None:
            return web.Response(status=404, text=refusal)
        return web.Response(text="ok")

    async def _upload(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        if file_id not in self.files:
            return web.Response(status=404, text="file_not_found")
        data = await request.read()
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            part = await reader.next()
            data = await part.read() if part is not None else b""  # type: ignore[union-attr]
        self.files[file_id]["content"] = data
        return web.Response(text="OK - " + str(len(data)))

    async def _file(self, request: web.Request) -> web.Response:
        f = self.files.get(request.match_info["file_id"])
        if f is None or "content" not in f:
            return web.Response(status=404, text="file_not_found")
        return web.Response(body=f["content"], content_type=f.get("mimetype", "text/plain"))

    async def _args(self, request: web.Request) -> dict[str, Any]:
        args: dict[str, Any] = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                body = await request.json()
                if isinstance(body, dict):
                    args.update(body)
            else:
                args.update(dict(await request.post()))
        for key in ("blocks", "view", "files", "attachments"):
            if isinstance(args.get(key), str):
                try:
                    args[key] = json.loads(args[key])
                except ValueError:
                    args[key] = "<invalid json>"
        return args

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args = await self._args(request)
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else args.get("token", "")
        for fault in self.faults:
            if fault.method in (method, "*") and fault.times > 0 and (not fault.in_thread or args.get("thread_ts")):
                fault.times -= 1
                self.calls.append(ApiCall(method, args, False, fault.error or f"http_{fault.status}"))
                if fault.reset and request.transport is not None:
                    request.transport.abort()
                    return web.Response(status=500)  # never reaches the client: the connection is gone
                headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
                if fault.status != 200:
                    return web.json_response({"ok": False, "error": fault.error or "fatal_error"},
                                             status=fault.status, headers=headers)
                return web.json_response({"ok": False, "error": fault.error}, headers=headers)
        needed = METHOD_SCOPES.get(method, ())
        if token == self.bot_token:
            channel = self._channel_id(args.get("channel") or args.get("channel_id")) or ""
            wait = self.rate_limits.retry_after(method, channel)
            if wait is not None:
                self.calls.append(ApiCall(method, args, False, "ratelimited"))
                return web.json_response({"ok": False, "error": "ratelimited"}, status=429,
                                         headers={"Retry-After": str(wait)})
        if token != self.bot_token:
            result: dict[str, Any] = {"ok": False, "error": "not_authed" if not token else "invalid_auth"}
        elif needed and not self.scopes.intersection(needed):
            # Slack's answer names what was needed and what the token has (docs.slack.dev "Scopes").
            result = {"ok": False, "error": "missing_scope", "needed": ",".join(needed),
                      "provided": ",".join(sorted(self.scopes))}
        else:
            handler = getattr(self, "m_" + method.replace(".", "_"), None)
            result = handler(args) if handler else {"ok": False, "error": "unknown_method"}
        peer = request.transport.get_extra_info("peername") if request.transport is not None else None
        self.calls.append(ApiCall(method, {k: v for k, v in args.items() if k != "token"},
                                  bool(result.get("ok")), result.get("error"),
                                  connection=peer[1] if peer else None))
        return web.json_response(result)

    # Web API methods: m_<method with dots as underscores>(args) -> Slack's JSON answer

    def m_auth_test(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": "https://erp-team.slack.com/", "team": "ERP Team", "user": "erp-chatops",
                "team_id": TEAM_ID, "user_id": BOT_USER_ID, "bot_id": BOT_ID, "is_enterprise_install": False}

    def _message_content(self, args: dict[str, Any]) -> dict[str, Any] | None:
        blocks = args.get("blocks")
        if blocks is not None:
            errors = validate_blocks(blocks)
            if errors:
                return {"ok": False, "error": "invalid_blocks", "errors": errors,
                        "response_metadata": {"messages": [f"[ERROR] {e}" for e in errors]}}
        if not args.get("text") and not blocks and not args.get("attachments"):
            return {"ok": False, "error": "no_text"}
        return None

    def _postable(self, value: Any) -> str | dict[str, Any]:
        """The channel id if the bot may post there; otherwise Slack's error. With `chat:write` and not
        `chat:write.public`, a bot posts only in channels it is a member of (chat.postMessage: not_in_channel)."""
        channel = self._channel_id(value)
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        if channel not in self.bot_in and "chat:write.public" not in self.scopes:
            return {"ok": False, "error": "not_in_channel"}
        return channel

    def m_chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._postable(args.get("channel"))
        if isinstance(channel, dict):
            return channel
        if (problem := self._message_content(args)) is not None:
            return problem
        thread_ts = args.get("thread_ts") or None
        if thread_ts and self.find(channel, thread_ts) is None:
            return {"ok": False, "error": "thread_not_found"}
        metadata = args.get("metadata")
        if isinstance(metadata, str):
            metadata = json.loads(metadata)
        if metadata is not None and not (isinstance(metadata, dict) and isinstance(metadata.get("event_type"), str)
                                         and isinstance(metadata.get("event_payload"), dict)):
            return {"ok": False, "error": "invalid_metadata_format"}
        # reply_broadcast: "Used in conjunction with thread_ts and indicates whether reply should be made
        # visible to everyone in the channel" (chat.postMessage's reference); without thread_ts it means nothing
        broadcast = bool(thread_ts) and str(args.get("reply_broadcast", "")).lower() in ("1", "true")
        msg = self._add(Message(channel=channel, ts=self._next_ts(), user=BOT_USER_ID, text=args.get("text", ""),
                                blocks=args.get("blocks") or [], thread_ts=thread_ts, metadata=metadata,
                                broadcast=broadcast))
        return {"ok": True, "channel": channel, "ts": msg.ts, "message": msg.as_slack()}

    def m_conversations_history(self, args: dict[str, Any]) -> dict[str, Any]:
        """Top-level messages, newest first; metadata only with include_all_metadata, as Slack does."""
        channel = self._channel_id(args.get("channel"))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        if channel not in self.bot_in:  # a bot reads only channels it is in (conversations.history errors)
            return {"ok": False, "error": "not_in_channel"}
        limit = min(int(args.get("limit") or 100), 999)
        with_metadata = str(args.get("include_all_metadata", "")).lower() in ("1", "true")
        newest = sorted(self.channel_messages(channel), key=lambda m: float(m.ts), reverse=True)
        out = []
        for m in newest[:limit]:
            entry = m.as_slack()
            if with_metadata and m.metadata is not None:
                entry["metadata"] = m.metadata
            out.append(entry)
        return {"ok": True, "messages": out, "has_more": len(newest) > limit}

    def _own_message(self, args: dict[str, Any], refusal: str) -> Message | dict[str, Any]:
        """The bot's message named by channel and ts, or Slack's error answer."""
        channel = self._channel_id(args.get("channel"))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        msg = self.find(channel, str(args.get("ts", "")))
        if msg is None:
            return {"ok": False, "error": "message_not_found"}
        if msg.user != BOT_USER_ID:
            return {"ok": False, "error": refusal}
        return msg

    def m_chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        msg = self._own_message(args, "cant_update_message")
        if not isinstance(msg, Message):
            return msg
        channel = msg.channel
        if (problem := self._message_content(args)) is not None:
            return problem
        msg.text = args.get("text", msg.text)
        if "blocks" in args:
            msg.blocks = args.get("blocks") or []
        msg.edited += 1
        self._publish("message", channel=channel, ts=msg.ts)
        return {"ok": True, "channel": channel, "ts": msg.ts, "text": msg.text, "message": msg.as_slack()}

    def m_chat_delete(self, args: dict[str, Any]) -> dict[str, Any]:
        msg = self._own_message(args, "cant_delete_message")
        if not isinstance(msg, Message):
            return msg
        self.messages.remove(msg)
        self._publish("message", channel=msg.channel, ts=msg.ts)
        return {"ok": True, "channel": msg.channel, "ts": msg.ts}

    def m_chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._postable(args.get("channel"))
        if isinstance(channel, dict):
            return channel
        user = args.get("user")
        if user not in self.people:
            return {"ok": False, "error": "user_not_in_channel"}
        if (problem := self._message_content(args)) is not None:
            return problem
        msg = self._add(Message(channel=channel, ts=self._next_ts(), user=BOT_USER_ID, text=args.get("text", ""),
                                blocks=args.get("blocks") or [], ephemeral_for=user,
                                thread_ts=args.get("thread_ts") or None))
        return {"ok": True, "message_ts": msg.ts}

    def m_chat_getPermalink(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel_id(args.get("channel"))
        ts = str(args.get("message_ts", ""))
        if channel is None or self.find(channel, ts) is None:
            return {"ok": False, "error": "message_not_found"}
        return {"ok": True, "channel": channel,
                "permalink": f"{self.base_url}/#/{channel}/p{ts.replace('.', '')}"}

    def m_usergroups_users_list(self, args: dict[str, Any]) -> dict[str, Any]:
        group = args.get("usergroup")
        if group not in self.groups:
            return {"ok": False, "error": "no_such_subteam"}
        return {"ok": True, "users": list(self.groups[group])}

    def m_users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        p = self.people.get(args.get("user", ""))
        if p is None:
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "user": {"id": p.id, "team_id": TEAM_ID, "name": p.name, "real_name": p.real_name,
                                     "is_bot": False, "profile": {"real_name": p.real_name, "title": p.title,
                                                                  "display_name": p.name}}}

    def m_conversations_info(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel_id(args.get("channel"))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        return {"ok": True, "channel": {"id": channel, "name": self.channels[channel], "is_channel": True,
                                        "is_private": False, "is_member": channel in self.bot_in}}

    def m_views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        trigger = args.get("trigger_id")
        if trigger not in self._triggers:
            return {"ok": False, "error": "invalid_trigger_id"}
        if trigger in self._used_triggers:
            return {"ok": False, "error": "exchanged_trigger_id"}
        if self.clock() - self._triggers[trigger][1] > TRIGGER_SECONDS:
            return {"ok": False, "error": "expired_trigger_id"}
        errors = validate_view(args.get("view"))
        if errors:
            return {"ok": False, "error": "invalid_arguments",
                    "response_metadata": {"messages": [f"[ERROR] {e}" for e in errors]}}
        view_id = "V" + secrets.token_hex(5).upper()
        self._used_triggers.add(trigger)
        self.views[view_id] = {**args["view"], "user": self._triggers[trigger][0]}
        self._publish("view", view_id=view_id)
        return {"ok": True, "view": {**args["view"], "id": view_id}}

    def m_views_update(self, args: dict[str, Any]) -> dict[str, Any]:
        view_id = args.get("view_id")
        if view_id not in self.views:
            return {"ok": False, "error": "not_found"}
        errors = validate_view(args.get("view"))
        if errors:
            return {"ok": False, "error": "invalid_arguments",
                    "response_metadata": {"messages": [f"[ERROR] {e}" for e in errors]}}
        self.views[view_id] = {**args["view"], "user": self.views[view_id]["user"]}
        self._publish("view", view_id=view_id)
        return {"ok": True, "view": {**args["view"], "id": view_id}}

    def m_files_getUploadURLExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        name, length = args.get("filename"), args.get("length")
        if not name or not str(length or "").isdigit():
            return {"ok": False, "error": "invalid_arguments"}
        file_id = "F" + secrets.token_hex(5).upper()
        self.files[file_id] = {"id": file_id, "name": name, "length": int(str(length))}
        return {"ok": True, "upload_url": f"{self.base_url}/upload/{file_id}", "file_id": file_id}

    def m_files_completeUploadExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        files = args.get("files")
        if not isinstance(files, list) or not files:
            return {"ok": False, "error": "invalid_arguments"}
        shared = []
        for f in files:
            stored = self.files.get(f.get("id", ""))
            if stored is None or "content" not in stored:
                return {"ok": False, "error": "file_not_found"}
            stored["title"] = f.get("title") or stored["name"]
            stored["url_private"] = f"{self.base_url}/files/{stored['id']}"
            shared.append({k: v for k, v in stored.items() if k != "content"})
        channel: str | None = None
        if args.get("channel_id"):
            postable = self._postable(args.get("channel_id"))
            if isinstance(postable, dict):
                return postable
            channel = postable
        if channel:
            thread_ts = args.get("thread_ts") or None
            self._add(Message(channel=channel, ts=self._next_ts(), user=BOT_USER_ID,
                              text=args.get("initial_comment", ""), files=shared, thread_ts=thread_ts))
        return {"ok": True, "files": shared}
