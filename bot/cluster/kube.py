"""Reading the cluster with the official kubernetes client, off the event loop.

The client is imported on first use, in a worker thread: it costs about 40 MB and 0.4 s, which a
replica that never answers `/erp status` or a rollback should not pay at start (README "Benchmarks").

Rollout state follows `kubectl rollout status`: the controller must have seen
the newest generation (before that, nothing in the status is about this spec),
a Progressing=False condition (ProgressDeadlineExceeded) means it failed, and
otherwise every replica must be updated and available.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any


class ClusterUnavailable(Exception):
    pass


@dataclass(frozen=True)
class RolloutState:
    name: str
    image_tag: str
    desired: int
    ready: int
    updated: int
    state: str  # complete, progressing, failed
    reason: str = ""

    @property
    def done(self) -> bool:
        return self.state in ("complete", "failed")


def rollout_of(dep: Any) -> RolloutState:
    spec, status, meta = dep.spec, dep.status, dep.metadata
    desired = spec.replicas if spec.replicas is not None else 1
    image = spec.template.spec.containers[0].image if spec.template.spec.containers else ""
    name, _, digest = image.partition("@")  # repo:tag@sha256:... (a promotion pins the digest)
    tag = name.rsplit(":", 1)[-1] if ":" in name.rsplit("/", 1)[-1] else "latest"
    tag += f"@{digest}" if digest else ""
    ready = status.ready_replicas or 0
    updated = status.updated_replicas or 0
    available = status.available_replicas or 0
    total = status.replicas or 0
    # the generation first, as kubectl does: until the controller has observed this spec, the conditions
    # (an earlier rollout's ProgressDeadlineExceeded, say) describe the previous one
    if (status.observed_generation or 0) < (meta.generation or 0):
        return RolloutState(meta.name, tag, desired, ready, updated, "progressing", "waiting for the controller")
    for cond in status.conditions or []:
        if cond.type == "Progressing" and cond.status == "False":
            return RolloutState(meta.name, tag, desired, ready, updated, "failed", cond.reason or "")
    if updated < desired:
        return RolloutState(meta.name, tag, desired, ready, updated, "progressing", f"{updated}/{desired} updated")
    if total > updated:
        return RolloutState(meta.name, tag, desired, ready, updated, "progressing", "old pods terminating")
    if available < updated:
        return RolloutState(meta.name, tag, desired, ready, updated, "progressing", f"{available}/{desired} available")
    return RolloutState(meta.name, tag, desired, ready, updated, "complete")


class Cluster:
    def __init__(self, connect: Callable[[], Any]) -> None:
        self._connect = connect  # makes the kubernetes ApiClient; called once, on first use
        self._apps: Any = None

    def _apps_api(self) -> Any:
        """AppsV1Api, made on first use (in the worker thread that uses it)."""
        if self._apps is None:
            from kubernetes import client as k8s
            self._apps = k8s.AppsV1Api(self._connect())
        return self._apps

    @classmethod
    def from_environment(cls, kubeconfig: str | None = None) -> Cluster | None:
        """The cluster from KUBECONFIG (or the given file), or in-cluster credentials; None when neither."""
        path = kubeconfig or os.environ.get("KUBECONFIG")
        if path:
            def from_file() -> Any:
                from kubernetes import config as k8s_config
                return k8s_config.new_client_from_config(config_file=path)
            return cls(from_file)
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            def in_cluster() -> Any:
                from kubernetes import client as k8s
                from kubernetes import config as k8s_config
                k8s_config.load_incluster_config()
                return k8s.ApiClient()
            return cls(in_cluster)
        return None

    async def deployments(self, namespace: str) -> dict[str, dict[str, Any]]:
        """The namespace's Deployments as the API serves them (plain JSON-shaped dicts), by name."""
        def listing() -> dict[str, dict[str, Any]]:
            apps = self._apps_api()
            found = apps.list_namespaced_deployment(namespace, _request_timeout=10)
            plain = apps.api_client.sanitize_for_serialization(found)
            return {str(d["metadata"]["name"]): d for d in plain.get("items", [])}
        try:
            return await asyncio.to_thread(listing)
        except Exception as e:
            if type(e).__name__ == "ApiException":
                raise ClusterUnavailable(f"the API server answered {getattr(e, 'status', '?')}"
                                         f" {getattr(e, 'reason', '')}") from None
            raise ClusterUnavailable(f"cannot reach the cluster ({type(e).__name__})") from None

    async def rollouts(self, namespace: str, names: list[str] | None = None) -> dict[str, RolloutState]:
        def listing() -> Any:
            return self._apps_api().list_namespaced_deployment(namespace, _request_timeout=10)
        try:
            found = await asyncio.to_thread(listing)
        except Exception as e:  # the API's refusal; connection refused, DNS, TLS; an unreadable kubeconfig
            if type(e).__name__ == "ApiException":  # kubernetes.client.ApiException, not imported up here
                raise ClusterUnavailable(f"the API server answered {getattr(e, 'status', '?')}"
                                         f" {getattr(e, 'reason', '')}") from None
            raise ClusterUnavailable(f"cannot reach the cluster ({type(e).__name__})") from None
        states = {d.metadata.name: rollout_of(d) for d in found.items}
        return {n: s for n, s in states.items() if names is None or n in names}

    async def wait_rollout(self, namespace: str, names: list[str], timeout: float,
                           progress: Callable[[dict[str, RolloutState]], Awaitable[None]],
                           interval: float = 1.0) -> dict[str, RolloutState]:
        """Poll until every named deployment is complete or failed, or `timeout` passes; report changes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last: dict[str, RolloutState] = {}
        while True:
            states = await self.rollouts(namespace, names)
            if states != last:
                await progress(states)
                last = states
            if all(s.done for s in states.values()) or loop.time() >= deadline:
                return states
            await asyncio.sleep(interval)
