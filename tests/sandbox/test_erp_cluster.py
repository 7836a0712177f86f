"""The local cluster's controller loops, as Kubernetes documents its controllers: the HPA sets a Deployment's
replicas within its bounds (the chart leaves the field to it), and the Deployment controller observes a new
spec a moment after it changes, then rolls it out; until it observes, the status is the old generation's."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from bot.cluster.kube import Cluster, RolloutState
from sandbox.erp_cluster import SandboxCluster
from sandbox.local_kube import LocalKube


async def test_the_hpa_sets_replicas_and_the_controller_lags_then_rolls_out(kube: LocalKube, tools: Path):
    sandbox = SandboxCluster(tools, kube=kube)
    await sandbox.install()
    reader = Cluster.from_environment(str(kube.kubeconfig))
    assert reader is not None

    async def employee() -> RolloutState:
        return (await reader.rollouts("erp-prod", ["employee-service"]))["employee-service"]

    before = await employee()
    assert (before.state, before.desired) == ("complete", 5)  # prod's HPA minimum, not the API's default of 1
    loop = asyncio.create_task(sandbox.play_controllers())
    try:
        await sandbox.deploy("prod", ["employee"], "v9.9.9")
        seen: list[str] = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            state = await employee()
            seen.append(state.reason if state.state == "progressing" else state.state)
            if state.state == "complete" and state.image_tag == "v9.9.9":
                break
            await asyncio.sleep(0.1)
        assert seen[0] == "waiting for the controller", seen  # the generation is ahead of the status at first
        assert "0/5 updated" in seen, seen  # observed: a new ReplicaSet, nothing updated yet
        assert seen[-1] == "complete", seen
        assert (await employee()).desired == 5  # the deploy left the HPA's count alone
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
