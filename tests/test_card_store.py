"""The card's outbox against moto's DynamoDB and the local Slack: no note lost, none stuck, one card's
trouble kept to that card."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.aws.clients import AwsClients
from bot.aws.state import StateStore
from bot.card_store import CardStore, NotePending
from bot.delivery.deploy_card import DeployCard
from bot.slack.web_client import make_web_client
from sandbox.slack_workspace import Fault, SlackWorkspace
from tests.support import BOT_TOKEN


async def card_with_notes(slack: SlackWorkspace, cards: CardStore, execution_id: str,
                          notes: list[list[str]]) -> DeployCard:
    posted = await cards.slack.chat_postMessage(channel="C0DEV", text="Deploy employee to dev")
    card = DeployCard(execution_id=execution_id, pipeline="erp-pipeline", environment="dev", service="employee",
                      channel="C0DEV", ts=str(posted["ts"]), outbox=notes)
    await cards.create(card)
    return card


@pytest.fixture
def cards(slack: SlackWorkspace, aws_resources: dict[str, str]) -> CardStore:
    return CardStore(StateStore(AwsClients(), aws_resources["table"]),
                     make_web_client(BOT_TOKEN, f"{slack.base_url}/api/"))


async def test_a_note_claimed_by_a_replica_that_died_is_held_then_posted_when_its_lease_runs_out(
        slack: SlackWorkspace, cards: CardStore):
    lease = (datetime.now(UTC) + timedelta(seconds=120)).isoformat(timespec="seconds")
    card = await card_with_notes(slack, cards, "exec-dead", [["failed:Build", ":x: Build failed", lease],
                                                             ["rollback", "Rolled back", ""]])
    # the claimant died: this replica must not report the card published (its event would be deleted)
    with pytest.raises(NotePending):
        await cards.publish(card.execution_id)
    assert slack.thread("C0DEV", card.ts) == []

    def lapse(c: DeployCard) -> None:
        c.outbox[0][2] = (datetime.now(UTC) - timedelta(seconds=1)).isoformat(timespec="seconds")
    await cards.mutate(card.execution_id, lapse)
    await cards.publish(card.execution_id)  # the event came back after its backoff
    assert [m.text for m in slack.thread("C0DEV", card.ts)] == [":x: Build failed", "Rolled back"]
    loaded = await cards.load(card.execution_id)
    assert loaded is not None and loaded[0].outbox == []


async def test_a_note_slack_refuses_for_good_is_dropped_and_the_next_one_still_goes(
        slack: SlackWorkspace, cards: CardStore):
    card = await card_with_notes(slack, cards, "exec-locked", [["scan:a", "too long", ""], ["scan:b", "fine", ""]])
    slack.faults.append(Fault("chat.postMessage", error="msg_too_long", times=1, in_thread=True))
    await cards.publish(card.execution_id)
    assert [m.text for m in slack.thread("C0DEV", card.ts)] == ["fine"]


async def test_a_passing_slack_error_keeps_the_note_for_the_retry(slack: SlackWorkspace, cards: CardStore):
    card = await card_with_notes(slack, cards, "exec-blip", [["scan:a", "the scan", ""]])
    slack.faults.append(Fault("chat.postMessage", error="fatal_error", times=1, in_thread=True))
    with pytest.raises(Exception, match="fatal_error"):
        await cards.publish(card.execution_id)
    loaded = await cards.load(card.execution_id)
    assert loaded is not None and loaded[0].outbox == [["scan:a", "the scan", ""]]  # released, not lost
    await cards.publish(card.execution_id)
    assert [m.text for m in slack.thread("C0DEV", card.ts)] == ["the scan"]


async def test_a_channel_the_bot_left_leaves_the_card_waiting_for_the_sweeper(slack: SlackWorkspace,
                                                                             cards: CardStore):
    card = await card_with_notes(slack, cards, "exec-kicked", [["scan:a", "the scan", ""]])
    slack.remove_bot("C0DEV")
    await cards.publish(card.execution_id)  # no raise: retrying the event would not help
    assert await cards.state.waiting_cards() == ["exec-kicked"]
    slack.invite_bot("C0DEV")
    await cards.publish(card.execution_id)
    assert [m.text for m in slack.thread("C0DEV", card.ts)] == ["the scan"]
