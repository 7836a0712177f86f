"""Competing consumer of the events queue (EventBridge rule -> SQS -> here).

Delivery is at least once and unordered: duplicates are skipped through the
processed-event ids in the state store, and the card logic tolerates any order.
Each received batch is handled, then every touched card is brought up to date
once (fewer Slack edits), and only then are the messages marked processed and
deleted: a message is deleted only after its effect is durable. One that cannot
be read is made visible again at once, so the queue's redrive policy moves it
to the dead-letter queue after a few receives; one whose handling fails backs
off. Every failure is logged with its reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from bot.aws.clients import error_code
from bot.delivery.pipeline_events import EventScope, MalformedEvent, NotOurs, PipelineEvent, parse_event
from bot.jsonlog import execution_id as execution_id_var
from bot.jsonlog import log_fields
from bot.runtime import Runtime

log = logging.getLogger(__name__)

Change = TypeVar("Change")
DEFAULT_WAIT_SECONDS = 5  # long poll; short enough that shutdown never waits long on it
BATCH = 10
MAX_BACKOFF = 300
# The queue's redrive policy (Terraform's and the sandbox's maxReceiveCount) must equal this. With the backoff
# below, a good event survives an outage of Slack or DynamoDB of more than 15 minutes before it is
# dead-lettered; one that cannot be read comes back at once and reaches the dead-letter queue in seconds.
RECEIVES_BEFORE_DEAD_LETTER = 12


def backoff(receives: int) -> int:
    """Seconds before a message handled `receives` times comes back: doubling from 2 s, at most 5 minutes."""
    return int(min(MAX_BACKOFF, 2 ** max(1, receives)))
HEARTBEAT_SECONDS = 2  # a batch still in hand after this long has its messages' visibility extended...
HEARTBEAT_EXTEND = 8  # ...to this many seconds, again every HEARTBEAT_SECONDS until it is done
CONSUMER = "event consumer"  # its name in Runtime.failing_since and /readyz
CONSUMER_MAX_BACKOFF = 30.0


@dataclass
class _Handled(Generic[Change]):
    receipt: str
    event: PipelineEvent
    change: Change | None
    receives: int = 1


class EventConsumer(Generic[Change]):
    def __init__(self, runtime: Runtime, handler: Callable[[PipelineEvent, Runtime], Awaitable[Change | None]],
                 publisher: Callable[[Runtime, list[Change]], Awaitable[None]], concurrency: int = 4,
                 wait_seconds: int = DEFAULT_WAIT_SECONDS, queue_url: str | None = None,
                 scope: EventScope | None = None, name: str = CONSUMER) -> None:
        self.runtime = runtime
        self.handler = handler
        self.publisher = publisher  # takes the touched cards durably (marked waiting), or raises
        self.wait_seconds = wait_seconds
        self.queue_url = queue_url or runtime.config.events_queue_url
        self.scope = scope or EventScope.of(runtime.config)
        # its own name in Runtime.failing_since: one poller doing well must not clear another's failure
        self.name = name
        self._limit = asyncio.Semaphore(concurrency)
        self._in_flight: set[str] = set()  # receipts of the batch being handled

    async def run(self) -> None:
        """Receive and handle batches until shutdown. Any error (SQS, DynamoDB, a bug) is logged and backed
        off, never the end of the loop: the batch's messages come back after their visibility timeout.
        While it keeps failing the replica reports itself unready, and after a bound it exits."""
        log.info("consuming events from the queue")
        failures = 0
        while not self.runtime.draining:
            try:
                messages = await self._receive()
                if messages:
                    await self.process_batch(messages)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                failures += 1
                self.runtime.failing_since.setdefault(self.name, time.monotonic())
                delay = min(CONSUMER_MAX_BACKOFF, 2 ** min(failures, 6)) * random.uniform(0.5, 1.0)  # noqa: S311
                log.warning("the %s failed (%d in a row): %s; again in %.0fs", self.name, failures, error_code(e),
                            delay, exc_info=failures == 1, extra=log_fields(reason=error_code(e)))
                await asyncio.sleep(delay)
                continue
            if failures:
                log.info("the %s is working again after %d failure(s)", self.name, failures)
            failures = 0
            self.runtime.failing_since.pop(self.name, None)

    async def _receive(self) -> list[dict[str, Any]]:
        """One long poll. If the replica stops while it is open (shutdown cancels this task), whatever it
        brings in is handed back to the queue at once instead of staying hidden for the visibility timeout.
        The lock decides who hands it back: the poll's thread, or this task if the thread had finished.
        (Each open poll of a stopping replica may take a message and give it back: its receive count grows
        by one per poll, far from the queue's maxReceiveCount of 12.)"""
        lock = threading.Lock()
        abandoned = False
        delivered: list[dict[str, Any]] = []

        def poll() -> list[dict[str, Any]]:
            nonlocal delivered
            messages = self.runtime.aws.client("sqs").receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=BATCH, WaitTimeSeconds=self.wait_seconds,
                AttributeNames=["ApproximateReceiveCount"]).get("Messages", [])
            with lock:
                if not abandoned:
                    delivered = messages
                    return messages
            self._hand_back(messages)
            return []

        try:
            return await asyncio.get_running_loop().run_in_executor(None, poll)
        except asyncio.CancelledError:
            with lock:
                abandoned = True
                taken, delivered = delivered, []
            if taken:  # the executor runs it before the process exits (asyncio.run waits for it)
                asyncio.get_running_loop().run_in_executor(None, self._hand_back, taken)
            raise

    def _hand_back(self, messages: list[dict[str, Any]]) -> None:
        """Visible again now (best effort: what fails here comes back after the visibility timeout)."""
        handed = 0
        for i in range(0, len(messages), BATCH):
            entries = [{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                       for n, m in enumerate(messages[i:i + BATCH])]
            try:
                resp = self.runtime.aws.client("sqs", last_call=True).change_message_visibility_batch(
                    QueueUrl=self.queue_url, Entries=entries)
            except Exception as e:
                log.warning("could not hand %d message(s) back to the queue: %s", len(entries), error_code(e))
                continue
            # "check for batch errors even when the call returns an HTTP status code of 200" (SQS API reference,
            # ChangeMessageVisibilityBatch; botocore's sqs service-2.json)
            for failed in resp.get("Failed", []):
                log.warning("could not hand a message back to the queue: %s", failed.get("Code"))
            handed += len(resp.get("Successful", []))
        if handed:
            log.info("handed %d message(s) back to the queue while stopping", handed)

    async def process_batch(self, messages: list[dict[str, Any]]) -> None:
        async def guarded(m: dict[str, Any], e: PipelineEvent) -> _Handled[Change] | None:
            async with self._limit:
                return await self._handle(m, e)

        parsed = [p for p in (self._parse(m) for m in messages) if p is not None]
        seen = await self.runtime.state.processed_among([e.event_id for _, e in parsed])
        for message, event in parsed:
            if event.event_id in seen:  # at-least-once delivery: already handled
                self.runtime.metrics.events_processed.labels("duplicate").inc()
                await self._delete(message["ReceiptHandle"])
        fresh = [(m, e) for m, e in parsed if e.event_id not in seen]

        async def in_order(events: list[tuple[dict[str, Any], PipelineEvent]]) -> list[_Handled[Change] | None]:
            return [await guarded(m, e) for m, e in events]

        # One execution's events one after another (side by side they only raced each other for its card, each
        # losing write reading it again); different executions side by side.
        by_execution: dict[str, list[tuple[dict[str, Any], PipelineEvent]]] = {}
        for m, e in fresh:
            by_execution.setdefault(e.execution_id or e.event_id, []).append((m, e))
        self._in_flight = {m["ReceiptHandle"] for m, _ in fresh}
        heartbeat = asyncio.ensure_future(self._keep_invisible())  # through handling and publishing
        try:
            done = await asyncio.gather(*(in_order(events) for events in by_execution.values()))
            handled = [h for events in done for h in events if h is not None]
            if handled:
                await self._publish(handled)
        finally:
            heartbeat.cancel()
            self._in_flight = set()

    async def _publish(self, handled: list[_Handled[Change]]) -> None:
        metrics = self.runtime.metrics
        try:
            await self.publisher(self.runtime, [h.change for h in handled if h.change is not None])
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the cards could not be marked waiting: the events come back, they catch up then
            log.warning("could not hand %d card(s) to the publisher: %s", len(handled), e, exc_info=True)
            for h in handled:
                metrics.events_failed.labels(h.event.kind).inc()
                self._in_flight.discard(h.receipt)  # its back-off decides when it comes back
                await self._retry_later(h.receipt, backoff(h.receives))
            return
        # durable effects first, then one request each to remember the ids and to delete the messages
        await self.runtime.state.mark_events_processed([h.event.event_id for h in handled])
        await self._delete_batch([h.receipt for h in handled])
        for h in handled:
            metrics.events_processed.labels(h.event.kind).inc()

    def _parse(self, message: dict[str, Any]) -> tuple[dict[str, Any], PipelineEvent] | None:
        """The event in a message; unreadable ones are sent on toward the DLQ, unknown types dropped."""
        receipt = message["ReceiptHandle"]
        receives = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        try:
            event = parse_event(message.get("Body", ""), self.scope)
        except NotOurs as e:  # a shared bus or a wide rule: someone else's event, not a fault
            log.debug("event not ours (%s), dropped", e, extra=log_fields(message_id=message.get("MessageId")))
            # counted, so a misconfigured pipeline name or account (every event "not ours") shows on /metrics
            self.runtime.metrics.events_processed.labels("not_ours").inc()
            self.runtime.work.spawn(self._delete(receipt))
            return None
        except MalformedEvent as e:
            self.runtime.metrics.events_failed.labels("malformed").inc()
            log.warning("unreadable queue message (receive %d): %s; it goes to the dead-letter queue", receives, e,
                        extra=log_fields(message_id=message.get("MessageId"), reason=str(e)))
            self.runtime.work.spawn(self._retry_later(receipt, 0))
            return None
        if event is None:
            log.debug("event type the bot does not handle, dropped")
            self.runtime.work.spawn(self._delete(receipt))
            return None
        return message, event

    async def _handle(self, message: dict[str, Any], event: PipelineEvent) -> _Handled[Change] | None:
        receipt = message["ReceiptHandle"]
        receives = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        token = execution_id_var.set(event.execution_id)
        try:
            return _Handled(receipt, event, await self.handler(event, self.runtime), receives)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self._in_flight.discard(receipt)  # its back-off below decides when it comes back
            self.runtime.metrics.events_failed.labels(event.kind).inc()
            log.warning("event %s (%s) failed on receive %d: %s", event.event_id, event.kind, receives, e,
                        exc_info=True, extra=log_fields(reason=str(e)))
            await self._retry_later(receipt, backoff(receives))
            return None
        finally:
            execution_id_var.reset(token)

    async def _keep_invisible(self) -> None:
        """While a batch is still being handled (a handler waiting out another replica's lease, say),
        keep its messages from going back to the queue, where another replica would take them too and
        their receive count would climb toward the dead-letter queue. A dead replica stops extending:
        its messages come back within HEARTBEAT_EXTEND."""
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            receipts = sorted(self._in_flight)
            for i in range(0, len(receipts), BATCH):
                entries = [{"Id": str(n), "ReceiptHandle": r, "VisibilityTimeout": HEARTBEAT_EXTEND}
                           for n, r in enumerate(receipts[i:i + BATCH])]
                with contextlib.suppress(Exception):  # best effort: the visibility timeout still applies
                    await self.runtime.aws.call("sqs", "change_message_visibility_batch",
                                                QueueUrl=self.queue_url, Entries=entries)

    async def _delete(self, receipt: str) -> None:
        await self.runtime.aws.call("sqs", "delete_message", QueueUrl=self.queue_url, ReceiptHandle=receipt)

    async def _delete_batch(self, receipts: list[str]) -> None:
        for i in range(0, len(receipts), BATCH):
            entries = [{"Id": str(n), "ReceiptHandle": r} for n, r in enumerate(receipts[i:i + BATCH])]
            resp = await self.runtime.aws.call("sqs", "delete_message_batch", QueueUrl=self.queue_url,
                                               Entries=entries)
            for failed in resp.get("Failed", []):  # the message comes back; its id is already marked processed
                log.warning("could not delete a handled message: %s", failed.get("Message"))

    async def _retry_later(self, receipt: str, seconds: int) -> None:
        with contextlib.suppress(Exception):  # if this fails, the visibility timeout does the same job
            await self.runtime.aws.call("sqs", "change_message_visibility", QueueUrl=self.queue_url,
                                        ReceiptHandle=receipt, VisibilityTimeout=seconds)
