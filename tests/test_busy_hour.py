"""Issue 16 item 10: cards converge under Slack's published rate limits, which the local Slack enforces.

How fast is `make bench`'s to measure (the busy hour, against its 20 s goal); this checks the outcome a
channel sees and that the bot keeps to Slack's limits and Retry-After."""

from __future__ import annotations

import re

import pytest

from sandbox.codepipeline import PipelineStandIn
from sandbox.slack_workspace import Fault, SlackWorkspace
from tests.busy_hour import run_busy_hour
from tests.support import BackgroundLoop, BotProcess

RETRY_AFTER = 3
IN_FLIGHT = 0.25  # seconds: the 429's way back to the bot, and calls already sent meanwhile


@pytest.mark.slow
def test_a_busy_hour_ends_with_every_card_final_and_every_note_once_without_tripping_slacks_limits(
        bot: BotProcess, slack: SlackWorkspace, background_loop: BackgroundLoop, pipeline: PipelineStandIn,
        erp_images: None):
    # Another replica has just spent the workspace's chat.update quota: Slack refuses the first edit with
    # Retry-After (docs.slack.dev "Rate limits": wait that long before calling the method again).
    slack.faults.append(Fault("chat.update", status=429, error="ratelimited", retry_after=RETRY_AFTER))
    hour = run_busy_hour(background_loop, slack, pipeline)

    # one card per execution, each showing its final state (run_busy_hour waits for exactly that) ...
    assert len(hour.cards) == len(hour.executions) == 8
    # ... and in each thread one scan note per image the execution built, none lost, none twice
    for execution in hour.executions:
        notes = [m.text for m in slack.thread("C0DEV", hour.cards[execution.id])]
        scanned = re.findall(r"Scan of `([^`]+)`", "\n".join(notes))
        assert scanned and len(scanned) == len(set(scanned)), notes
        assert all(image.endswith(f":{execution.revision[:7]}") for image in scanned), (scanned, execution.revision)

    # the bot paced itself under the published limits: the local Slack never had to refuse a call
    assert hour.limited == []
    # Retry-After held for every edit, not only the refused one: once the bot had the 429 (a moment for the
    # answer to travel: a call already on the wire cannot be called back), none reached Slack until it passed
    refused = next(c for c in hour.calls if c.method == "chat.update" and c.error == "ratelimited")
    heard = refused.at + IN_FLIGHT
    too_soon = [c for c in hour.calls if c.method == "chat.update" and heard < c.at < refused.at + RETRY_AFTER]
    assert too_soon == [], [(round(c.at - refused.at, 2), c.args.get("text", "")[:40]) for c in too_soon]
