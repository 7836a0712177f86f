"""The ERP release on the sandbox's real API server, kept moving like a real cluster.

charts/erp is installed in erp-dev and erp-prod (two revisions each, so there is
something to roll back to); a loop plays the HPA controller (each Deployment at its
HPA's minimum, since the chart leaves replicas to the HPA) and the Deployment
controller (it observes a new spec a moment after the change, and the rollout
completes a couple of seconds later); and the pipeline stand-in's Deploy stage runs
the real `helm upgrade` through `deploy`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

from bot.cluster.helm import HELM_DRIVER, image_values
from sandbox.local_kube import LocalKube

log = logging.getLogger(__name__)

CHART = Path(__file__).resolve().parents[1] / "charts" / "erp"
NAMESPACES = {"dev": "erp-dev", "prod": "erp-prod"}
OBSERVE_SECONDS = 0.3  # the controller's lag before it observes a new generation
ROLLOUT_SECONDS = 2.0
# For upgrades that only set the scene (the releases the sandbox and the tests start from, and the tests'
# stand-ins for earlier deploys): helm's client-side check of every object against the API server's OpenAPI
# schema costs about 1 s of CPU per upgrade on 2 cores (0.43 s without it, measured). The API server still
# checks each object it is sent (an unknown field only warns: tests/test_charts.py validates strictly), and
# the buildspec's own deploy step (tests/ci) and the bot's upgrades keep the check.
SKIP_CLIENT_SCHEMA_CHECK = ("--disable-openapi-validation",)


class SandboxCluster:
    def __init__(self, tools: Path, kube: LocalKube | None = None) -> None:
        self.kube = kube or LocalKube(tools)
        self.helm = str(tools / "helm")
        try:
            self.kube.install_external_secrets_crds()
        except BaseException:
            self.kube.stop()
            raise
        self._changed_at: dict[tuple[str, str, int], float] = {}

    async def _helm(self, *args: str) -> None:
        proc = await asyncio.create_subprocess_exec(self.helm, *args, "--kubeconfig", str(self.kube.kubeconfig),
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                    env={**os.environ, "HELM_DRIVER": HELM_DRIVER})  # as the bot
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(err.decode(errors="replace").strip()[:500])

    async def install(self) -> None:
        # the two namespaces are apart, so they install side by side (the sandbox's start waits on this)
        await asyncio.gather(*(self._install(env, ns) for env, ns in NAMESPACES.items()))

    async def _install(self, env: str, ns: str) -> None:
        await asyncio.to_thread(self.kube.apply, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        values = str(CHART / f"values-{env}.yaml")
        await self._helm("upgrade", "--install", "erp", str(CHART), "-n", ns, "-f", values, *SKIP_CLIENT_SCHEMA_CHECK,
                         "--set-string", "services.employee.image.tag=release-2024.12.23")
        await self._helm("upgrade", "erp", str(CHART), "-n", ns, "--reuse-values", *SKIP_CLIENT_SCHEMA_CHECK,
                         "--set-string", "services.employee.image.tag=release-2024.12.26")
        await asyncio.to_thread(self.kube.autoscale, ns)
        for d in await self._deployments(ns):
            await asyncio.to_thread(self.kube.set_rollout, ns, d["metadata"]["name"])

    async def _deployments(self, ns: str) -> list[dict]:  # type: ignore[type-arg]
        status, body = await asyncio.to_thread(self.kube.request, "GET", f"/apis/apps/v1/namespaces/{ns}/deployments")
        return list(body.get("items", [])) if status == 200 else []

    async def play_controllers(self) -> None:
        """Complete each changed Deployment's rollout a moment after it changes, as the controller would."""
        while True:
            for ns in NAMESPACES.values():
                await asyncio.to_thread(self.kube.autoscale, ns)
                for d in await self._deployments(ns):
                    meta, status = d["metadata"], d.get("status", {})
                    key = (ns, meta["name"], meta["generation"])
                    if key not in self._changed_at and status.get("observedGeneration", 0) >= meta["generation"]:
                        continue
                    first = self._changed_at.setdefault(key, time.monotonic())
                    waited = time.monotonic() - first
                    if waited >= ROLLOUT_SECONDS:
                        await asyncio.to_thread(self.kube.set_rollout, ns, meta["name"])
                        self._changed_at.pop(key, None)
                    elif waited >= OBSERVE_SECONDS and status.get("observedGeneration", 0) < meta["generation"]:
                        await asyncio.to_thread(self.kube.observe, ns, meta["name"])
            await asyncio.sleep(0.25)

    async def deploy(self, environment: str, services: list[str], ref: str) -> None:
        """What the buildspec's deploy step does: only the built images change (tag, or tag@digest)."""
        args = ["upgrade", "erp", str(CHART), "-n", NAMESPACES.get(environment, "erp-dev"), "--reuse-values"]
        for service in services:
            args += image_values(service, ref)
        await self._helm(*args)

    def stop(self) -> None:
        self.kube.stop()
