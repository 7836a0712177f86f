"""Work after the ack waits for the acks being sent: Slack gives an acknowledgement 3 seconds, the work none."""

from __future__ import annotations

import asyncio

from bot.inflight import InFlight


async def settle(turns: int = 20) -> None:
    for _ in range(turns):
        await asyncio.sleep(0)


async def test_a_commands_work_waits_while_other_requests_are_being_acknowledged():
    work = InFlight()
    ran: list[str] = []

    async def answer(name: str) -> None:
        ran.append(name)

    tracked = work.track(answer)
    with work.acks.acking():  # a burst: the first command's ack is sent while the others' are still under way
        first = asyncio.ensure_future(tracked("first"))
        await settle()
        assert ran == [], "a command's work started while another request still waited for its ack"
        with work.acks.acking():
            await settle()
        assert ran == []
    await settle()
    assert ran == ["first"]
    await first
    assert work.count == 0


async def test_work_is_held_back_a_second_at_most_by_acks_that_keep_coming():
    work = InFlight()
    ran: list[float] = []
    loop = asyncio.get_running_loop()

    async def answer() -> None:
        ran.append(loop.time())

    with work.acks.acking():  # a stream of requests that never leaves the bot idle
        started = loop.time()
        task = asyncio.ensure_future(work.track(answer)())
        await asyncio.wait_for(task, 5)
    assert ran and ran[0] - started >= work.acks.longest_wait * 0.9


async def test_work_with_no_ack_under_way_starts_at_once():
    work = InFlight()
    ran: list[str] = []

    async def answer() -> None:
        ran.append("now")

    task = asyncio.ensure_future(work.track(answer)())
    await settle(3)
    assert ran == ["now"]
    await task


async def test_work_that_must_use_its_trigger_id_within_3_seconds_does_not_wait_for_other_acks():
    # the Reject button opens its modal with the click's trigger_id, which Slack honours for 3 seconds only
    work = InFlight()
    ran: list[str] = []

    async def open_modal() -> None:
        ran.append("opened")

    with work.acks.acking():
        task = asyncio.ensure_future(work.track(open_modal, acks_first=False)())
        await settle(3)
        assert ran == ["opened"]
    await task


def test_the_reject_button_opens_its_modal_without_waiting_for_other_acks():
    from types import SimpleNamespace

    from slack_bolt.async_app import AsyncApp

    import handlers.approval

    app = AsyncApp(token="xoxb-test", signing_secret="test-secret")
    handlers.approval.register(app, SimpleNamespace(work=InFlight()))  # type: ignore[arg-type]
    lazy = {getattr(f, "__wrapped__", f).__name__: f for listener in app._async_listeners
            for f in listener.lazy_functions}
    assert lazy["ask_reason"].acks_first is False  # type: ignore[attr-defined]
    assert lazy["approve"].acks_first is True  # type: ignore[attr-defined]
