"""Work that continues after Slack got its acknowledgement.

Everything that runs past the ack goes through `InFlight`, so SIGTERM can wait
for it to finish instead of cutting a deploy or an approval in half. It starts
once the acknowledgements being sent are out (`AcksFirst`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec

from bot.replay_guard import first_delivery

log = logging.getLogger(__name__)
P = ParamSpec("P")


class AcksFirst:
    """Slack shows the user an error when a request is not acknowledged within 3 seconds; the answer that
    follows has no such limit. Work after an ack therefore waits while other requests are being
    acknowledged (a burst of commands: without this, the first ones' work, with its AWS calls on worker
    threads holding the GIL, delayed the others' acks: p99 of 50 at once 252-322 ms before, 131-196 ms
    after, side by side), and at most `longest_wait`, so a steady stream of requests cannot starve it."""

    def __init__(self, longest_wait: float = 1.0) -> None:
        self.longest_wait = longest_wait
        self._acking = 0
        self._none = asyncio.Event()
        self._none.set()

    @contextmanager
    def acking(self) -> Iterator[None]:
        """Around a request's way to its acknowledgement."""
        self._acking += 1
        self._none.clear()
        try:
            yield
        finally:
            self._acking -= 1
            if self._acking == 0:
                self._none.set()

    async def wait(self) -> None:
        if self._acking:
            try:
                await asyncio.wait_for(self._none.wait(), self.longest_wait)
            except TimeoutError:
                pass


class InFlight:
    def __init__(self) -> None:
        self._count = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.acks = AcksFirst()

    @property
    def count(self) -> int:
        return self._count

    def _enter(self) -> None:
        self._count += 1
        self._idle.clear()

    def _exit(self) -> None:
        self._count -= 1
        if self._count == 0:
            self._idle.set()

    def track(self, fn: Callable[P, Awaitable[None]], *,
              acks_first: bool = True) -> Callable[P, Coroutine[Any, Any, None]]:
        """Wrap a Bolt lazy listener; Bolt still sees the wrapped function's arguments. `acks_first=False`
        for work that must use the request's trigger_id, which Slack honours for 3 seconds only."""

        @functools.wraps(fn)
        async def tracked(*args: P.args, **kwargs: P.kwargs) -> None:
            self._enter()
            try:
                if acks_first:
                    await self.acks.wait()
                if await first_delivery():  # a request another replica already received does nothing here
                    await fn(*args, **kwargs)
            finally:
                self._exit()

        tracked.acks_first = acks_first  # type: ignore[attr-defined]
        return tracked

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        self._enter()
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)  # keep a reference: the loop only holds weak ones

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            self._exit()
            if not t.cancelled() and t.exception() is not None:
                log.error("background work failed", exc_info=t.exception())

        task.add_done_callback(done)
        return task

    async def drain(self, budget: float) -> bool:
        """Wait until nothing is in flight; False if the timeout ran out first."""
        try:
            await asyncio.wait_for(self._idle.wait(), budget)
            return True
        except TimeoutError:
            log.warning("shutdown: %d unit(s) of work still running after %.0fs", self._count, budget)
            return False
