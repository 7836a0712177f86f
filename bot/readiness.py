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

    async def _slack(self) -> str:
        resp = await self.runtime.slack.auth_test()
        return f"ok ({resp.get('team', 'workspace')})"

    async def _aws(self) -> str:
        await self.runtime.state.ping()
        return "ok"

    async def check(self) -> tuple[bool, dict[str, Any]]:
        if self.runtime.draining:
            return False, {"status": "draining"}
        now = time.monotonic()
        if self._cached and self._cached[0] > now:
            return self._cached[1], self._cached[2]
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
