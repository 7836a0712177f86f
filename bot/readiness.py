"""GET /readyz: config loaded, Slack answers auth.test, AWS (the state table) reachable.

Results are cached for a few seconds: the kubelet probes often, and Slack and
AWS should not be asked on every probe.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bot.aws.clients import error_code
from bot.runtime import Runtime

CHECK_TIMEOUT = 3.0
CACHE_SECONDS = 10.0


class Readiness:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._cached: tuple[float, bool, dict[str, Any]] | None = None
        # Probes that arrive together (the kubelet's startup and readiness probes on a new pod) share one
        # check instead of asking Slack and AWS once each.
        self._running: asyncio.Future[tuple[bool, dict[str, Any]]] | None = None

    async def _slack(self) -> str:
        resp = await self.runtime.slack.auth_test()
        return f"ok ({resp.get('team', 'workspace')})"

    async def _aws(self) -> str:
        await self.runtime.state.ping()
        return "ok"

    def start(self) -> None:
        """Begin a check now (as the server starts): the first probe finds it done or under way."""
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(self._probe())

    async def stop(self) -> None:
        if self._running is not None and not self._running.done():
            self._running.cancel()

    async def check(self) -> tuple[bool, dict[str, Any]]:
        if self.runtime.draining:
            return False, {"status": "draining"}
        if self._cached and self._cached[0] > time.monotonic():
            return self._cached[1], self._cached[2]
        self.start()
        assert self._running is not None
        return await asyncio.shield(self._running)  # a probe that hangs up does not cancel the others' check

    async def _probe(self) -> tuple[bool, dict[str, Any]]:
        now = time.monotonic()
        results: dict[str, Any] = {"config": f"ok ({self.runtime.config.source})"}
        ready = True
        probes = {"slack": self._slack, "aws": self._aws}  # asked at once: a pod is ready a round trip sooner
        answers = await asyncio.gather(*(asyncio.wait_for(probe(), CHECK_TIMEOUT) for probe in probes.values()),
                                       return_exceptions=True)
        for name, answer in zip(probes, answers, strict=True):
            if isinstance(answer, TimeoutError):
                ready, results[name] = False, f"no answer within {CHECK_TIMEOUT:.0f}s"
            elif isinstance(answer, BaseException):
                ready, results[name] = False, f"failed: {error_code(answer)}"
            else:
                results[name] = answer
        for name, since in self.runtime.failing_since.items():
            failing = time.monotonic() - since
            if failing >= self.runtime.unready_after:
                ready, results[name] = False, f"failing for {failing:.0f}s"
        results["status"] = "ready" if ready else "not ready"
        self._cached = (now + (CACHE_SECONDS if ready else 1.0), ready, results)
        return ready, results
