"""A busy hour under Slack's rate limits: eight executions at once in one channel, four started from
Slack and four by pushes. Shared by the test that checks its outcome and by `make bench`, which times it."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from sandbox.codepipeline import PipelineStandIn
from sandbox.erp_services import SERVICES
from sandbox.slack_workspace import SlackWorkspace
from tests.support import BackgroundLoop

GOAL_S = 20.0  # issue 16: every card final within 20 s of the pipeline finishing


@dataclass
class BusyHour:
    executions: list[Any]
    cards: dict[str, str]  # execution id -> its one card's ts
    convergence_s: float  # last execution's end -> every card shows its final state
    notes_s: float  # last execution's end -> every card's scan note is in its thread
    calls: list[Any] = field(default_factory=list)  # the Slack Web API calls made meanwhile
    limited: list[tuple[str, str]] = field(default_factory=list)  # the calls answered 429

    def summary(self, workspace: SlackWorkspace, channel: str) -> dict[str, Any]:
        return {"executions": len(self.executions), "convergence_s": self.convergence_s, "notes_s": self.notes_s,
                "goal_s": GOAL_S, "slack_calls": len(self.calls),
                "thread_notes": sum(len(workspace.thread(channel, ts)) for ts in self.cards.values()),
                "rate_limited_429": len(self.limited)}


def run_busy_hour(servers: BackgroundLoop, workspace: SlackWorkspace, pipeline: PipelineStandIn,
                  channel: str = "C0DEV", user: str = "U0DEV1", timeout: float = 180) -> BusyHour:
    pipeline.step = 0.3  # overlapping executions of a few seconds each
    known = set(pipeline.executions)
    calls_before, limited_before = len(workspace.calls), len(workspace.rate_limits.limited)
    for service in SERVICES:
        servers.run(workspace.send_command(user, channel, f"deploy {service} dev"))

    async def pushes() -> None:
        for _ in range(4):
            pipeline.start_from_push("dev")
    servers.run(pushes())

    def runs() -> list[Any]:
        return [e for i, e in list(pipeline.executions.items()) if i not in known]

    deadline = time.monotonic() + timeout
    while not (len(runs()) == 2 * len(SERVICES) and all(e.status != "InProgress" for e in runs())):
        if time.monotonic() > deadline:
            raise AssertionError(f"busy hour: the executions did not finish: {[e.status for e in runs()]}")
        time.sleep(0.05)
    ended = time.monotonic()

    def cards() -> dict[str, tuple[str, str]]:
        """execution id -> (its one card's blocks, ts); absent if it has none, or more than one."""
        shown = [(json.dumps(m.blocks), m.ts) for m in workspace.channel_messages(channel)]
        out = {}
        for e in runs():
            mine = [c for c in shown if f"`{e.id[:8]}`" in c[0]]
            if len(mine) == 1:
                out[e.id] = mine[0]
        return out

    def states_shown() -> bool:
        found = cards()
        return all(e.id in found and e.status in found[e.id][0] for e in runs())

    def notes_posted() -> bool:
        found = cards()
        return all(e.id in found and any("Scan of" in m.text for m in workspace.thread(channel, found[e.id][1]))
                   for e in runs())

    while not states_shown():
        if time.monotonic() > deadline:
            raise AssertionError(f"busy hour: the cards did not converge: {cards()}")
        time.sleep(0.05)
    states_s = time.monotonic() - ended
    while not notes_posted():
        if time.monotonic() > deadline:
            raise AssertionError("busy hour: thread notes missing")
        time.sleep(0.05)
    notes_s = time.monotonic() - ended
    return BusyHour(executions=runs(), cards={i: ts for i, (_, ts) in cards().items()}, convergence_s=states_s,
                    notes_s=notes_s, calls=list(workspace.calls[calls_before:]),
                    limited=list(workspace.rate_limits.limited[limited_before:]))
