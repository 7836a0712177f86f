"""The real `helm` binary, run with argument lists (never a shell string) and a timeout.

Everything the bot changes in the cluster goes through here: per-service
rollback (`helm upgrade --reuse-values --set-string services.<svc>.image.tag=...`)
and whole-release rollback (`helm rollback`). Reads: history and values.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.delivery.image_tag import split_ref

log = logging.getLogger(__name__)

MAX_ERROR = 300
# helm gets only what it needs to reach the cluster: never the Slack token or signing secret, never AWS keys.
# In the pod it uses the service account (KUBERNETES_SERVICE_*); elsewhere a kubeconfig, whose exec plugin
# (aws eks get-token) may read an IRSA token file or a profile, named here, never the keys themselves.
HELM_ENVIRONMENT = ("PATH", "HOME", "TMPDIR", "KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT",
                    "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_ROLE_ARN",
                    "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_STS_REGIONAL_ENDPOINTS", "HELM_CACHE_HOME",
                    "HELM_CONFIG_HOME", "HELM_DATA_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME")


# Helm keeps its release records in ConfigMaps, not Secrets (the same in the buildspec): the bot's Role then
# needs no access to Secrets in the ERP's namespaces, where db-secret lives (charts/erp-chatops rbac.yaml).
HELM_DRIVER = "configmap"


def helm_environment(environ: Mapping[str, str]) -> dict[str, str]:
    return {**{k: environ[k] for k in HELM_ENVIRONMENT if k in environ}, "HELM_DRIVER": HELM_DRIVER}
HELM_TIMEOUT = 300  # helm's own --timeout for changes, in seconds
OUTER_TIMEOUT = HELM_TIMEOUT + 60  # ours is longer: helm gets to time out and record the failure itself
STOP_GRACE = 10.0  # after SIGTERM, before SIGKILL


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), STOP_GRACE)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


DEPLOYED_BY_EXECUTION = "erp-chatops: deploy of execution "


def revision_description(execution_id: str) -> str:
    """What a pipeline deploy (`erp-chatops ci deploy`) writes on its Helm revision, so that the bot can tell
    which revisions an execution made (`helm history` shows each revision's description)."""
    return f"{DEPLOYED_BY_EXECUTION}{execution_id}"


class HelmError(Exception):
    """helm failed; the message is helm's own, trimmed for Slack."""


@dataclass(frozen=True)
class Revision:
    number: int
    updated: str
    status: str
    chart: str
    description: str

    def made_by(self, execution_id: str) -> bool:
        return self.description == revision_description(execution_id)


def _trim(text: str) -> str:
    """helm's own words, summarised for Slack: its last `Error:` line (what went wrong), not its whole
    stderr (warnings, debug output, rendered manifests). The whole of it goes to the bot's log."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    summary = (errors or lines or [""])[-1].replace("```", "'''")
    return summary if len(summary) <= MAX_ERROR else summary[: MAX_ERROR - 3] + "..."


class Helm:
    def __init__(self, binary: str, kubeconfig: str | None = None, timeout: float = 300.0) -> None:
        self.binary = binary
        self.kubeconfig = kubeconfig
        self.timeout = timeout

    async def run(self, *args: str, timeout: float | None = None) -> str:
        """Run helm; on any way out before it finished (our timeout, cancellation at shutdown) it is asked
        to stop (SIGTERM: helm then records the release as failed rather than leave it pending-*), and
        killed only if it does not within STOP_GRACE. helm never outlives its caller."""
        argv = [self.binary, *args]
        if self.kubeconfig:
            argv += ["--kubeconfig", self.kubeconfig]
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE,
                                                    env=helm_environment(os.environ))
        limit = timeout or self.timeout
        try:
            out, err = await asyncio.wait_for(proc.communicate(), limit)
        except TimeoutError:
            await _stop(proc)
            raise HelmError(f"helm {args[0]} did not finish within {limit:.0f}s") from None
        except BaseException:
            await asyncio.shield(_stop(proc))
            raise
        if proc.returncode != 0:
            said = err.decode(errors="replace") or out.decode(errors="replace")
            log.warning("helm %s failed (exit %s): %s", args[0] if args else "", proc.returncode, said[-2000:])
            raise HelmError(_trim(said))
        return out.decode(errors="replace")

    async def history(self, release: str, namespace: str, limit: int = 20) -> list[Revision]:
        """Oldest first, as helm lists them."""
        out = await self.run("history", release, "-n", namespace, "-o", "json", "--max", str(limit), timeout=30)
        return [Revision(number=int(r["revision"]), updated=str(r.get("updated", "")), status=str(r.get("status")),
                         chart=str(r.get("chart", "")), description=str(r.get("description", "")))
                for r in json.loads(out or "[]")]

    async def values(self, release: str, namespace: str, revision: int | None = None) -> dict[str, Any]:
        args = ["get", "values", release, "-n", namespace, "-o", "json", "--all"]
        if revision is not None:
            args += ["--revision", str(revision)]
        return dict(json.loads(await self.run(*args, timeout=30) or "{}"))

    async def set_service_tag(self, release: str, namespace: str, chart: str, service: str, tag: str) -> str:
        """`tag` or `tag@sha256:...`: the digest is set too, or cleared, so a digest a promotion pinned never
        outlives the tag it came with (--reuse-values keeps every value not set here)."""
        return await self.run("upgrade", release, chart, "-n", namespace, "--reuse-values",
                              *image_values(service, tag),
                              "--history-max", "20", "--timeout", f"{HELM_TIMEOUT}s", timeout=OUTER_TIMEOUT)

    async def manifest(self, release: str, namespace: str, revision: int) -> str:
        """A revision's manifest: the one an upgrade diffs from is the deployed one, not always the latest."""
        return await self.run("get", "manifest", release, "-n", namespace, "--revision", str(revision), timeout=30)

    async def planned_service_tag(self, release: str, namespace: str, chart: str, service: str, tag: str) -> str:
        """The manifest `set_service_tag` would apply, rendered by helm without changing anything."""
        out = await self.run("upgrade", release, chart, "-n", namespace, "--reuse-values",
                             *image_values(service, tag),
                             "--dry-run", "--hide-secret", "-o", "json", timeout=60)
        try:
            return str(json.loads(out).get("manifest", ""))
        except (ValueError, AttributeError):
            raise HelmError(f"helm's dry run printed no release: {_trim(out)}") from None

    async def rollback(self, release: str, namespace: str, revision: int) -> str:
        return await self.run("rollback", release, str(revision), "-n", namespace, "--history-max", "20",
                              "--timeout", f"{HELM_TIMEOUT}s", timeout=OUTER_TIMEOUT)

    async def stuck(self, release: str, namespace: str) -> Revision | None:
        """The release's latest revision if helm left it pending-* (a helm that was killed mid-operation)."""
        history = await self.history(release, namespace, limit=1)
        return history[-1] if history and history[-1].status.startswith("pending-") else None


def service_tags(values: dict[str, Any]) -> dict[str, str]:
    """services.<name>.image.tag from a release's values, with `@<digest>` where a promotion pinned one."""
    services = values.get("services") or {}
    tags = {}
    for name, svc in services.items():
        if isinstance(svc, dict):
            image = svc.get("image") or {}
            digest = str(image.get("digest") or "")
            tags[name] = str(image.get("tag", "")) + (f"@{digest}" if digest else "")
    return tags


def image_values(service: str, ref: str) -> list[str]:
    """The --set-string arguments for one service's image: its tag, and its digest (empty when none)."""
    parts = split_ref(ref)
    if parts is None:
        raise HelmError(f"refusing to deploy the image {ref[:80]!r}: not an image tag or tag@sha256 digest")
    tag, digest = parts
    return ["--set-string", f"services.{service}.image.tag={tag}", "--set-string",
            f"services.{service}.image.digest={digest}"]
