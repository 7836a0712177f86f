"""Drift: what runs differs from what was deployed. Pure: the caller reads the three sources.

Per service, three layers are compared, each with where a difference comes from:
  the pipeline's record (its last deploy or rollback of the service here)  vs  the Helm release's values:
      "the release differs from the last pipeline deploy" (a hand-run helm upgrade or rollback)
  the Helm release's manifest  vs  the Deployment in the cluster:
      "image changed outside Helm", "environment changed outside Helm", ... (kubectl set image/env/edit)
Only what the manifest sets is compared: fields the API server defaults (a probe's timeoutSeconds) and
what controllers own (replicas under an HPA, status) are not drift.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import yaml

COMPARED = ("image", "env", "resources", "livenessProbe", "readinessProbe", "startupProbe")


@dataclass(frozen=True)
class Drift:
    service: str
    source: str  # "image changed outside Helm", "release differs from the last pipeline deploy", ...
    expected: str
    actual: str

    @property
    def fingerprint(self) -> str:
        """The same drift (same place, same values) has the same fingerprint: posted once, edited on change."""
        return hashlib.sha256(json.dumps([self.service, self.source, self.expected, self.actual]).encode()
                              ).hexdigest()[:16]

    def line(self) -> str:
        return f"{self.service}: {self.source}: `{self.expected[:120]}` → `{self.actual[:120]}`"


def manifest_deployments(manifest: str) -> dict[str, dict[str, Any]]:
    """The Deployments a rendered release manifest declares, by name."""
    found = {}
    for doc in yaml.safe_load_all(manifest):
        if isinstance(doc, dict) and doc.get("kind") == "Deployment":
            found[str(doc["metadata"]["name"])] = doc
    return found


def _containers(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    return {str(c.get("name")): c for c in spec.get("containers") or []}


def _subset(declared: Any, live: Any) -> bool:
    """Everything `declared` says, `live` says too (live may add defaults)."""
    if isinstance(declared, dict):
        return isinstance(live, dict) and all(_subset(v, live.get(k)) for k, v in declared.items())
    if isinstance(declared, list):
        return isinstance(live, list) and len(declared) == len(live) and \
            all(_subset(d, x) for d, x in zip(declared, live, strict=True))
    return declared == live or (declared is not None and str(declared) == str(live))


def _env(container: dict[str, Any]) -> dict[str, Any]:
    """name -> value or valueFrom; an empty value is no value (the API server drops it)."""
    return {str(e.get("name")): e.get("value") or e.get("valueFrom") for e in container.get("env") or []}


def _env_drift(want: dict[str, Any], have: dict[str, Any]) -> str | None:
    """Which variables differ, by name only: values may be secrets, and the message goes to a channel."""
    declared, live = _env(want), _env(have)
    changed = sorted(n for n, v in declared.items() if n in live and not _subset(v, live[n]))
    removed, added = sorted(set(declared) - set(live)), sorted(set(live) - set(declared))
    parts = [f"{label}: {', '.join(names)}" for label, names in
             (("changed", changed), ("removed", removed), ("added", added)) if names]
    return "; ".join(parts) or None


_SUFFIX = {"m": Decimal("0.001"), "k": Decimal(10) ** 3, "M": Decimal(10) ** 6, "G": Decimal(10) ** 9,
           "T": Decimal(10) ** 12, "P": Decimal(10) ** 15, "E": Decimal(10) ** 18, "Ki": Decimal(2) ** 10,
           "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40, "Pi": Decimal(2) ** 50,
           "Ei": Decimal(2) ** 60}


def quantity(value: Any) -> Decimal | None:
    """A Kubernetes quantity ("500m", "0.5Gi", 1) as a number: the API server may write it another way."""
    text = str(value).strip()
    for suffix in sorted(_SUFFIX, key=len, reverse=True):
        if text.endswith(suffix):
            try:
                return Decimal(text[: -len(suffix)]) * _SUFFIX[suffix]
            except InvalidOperation:
                return None
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


def _resources_drift(want: dict[str, Any], have: dict[str, Any]) -> list[str]:
    """The declared requests and limits that differ in amount (a LimitRange's additions are not drift)."""
    out = []
    for kind in ("requests", "limits"):
        for name, amount in ((want or {}).get(kind) or {}).items():
            live = ((have or {}).get(kind) or {}).get(name)
            if live is None or quantity(amount) != quantity(live):
                out.append(f"{kind}.{name} {amount} -> {live}")
    return out


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def cluster_drift(service: str, declared: dict[str, Any], live: dict[str, Any] | None) -> list[Drift]:
    """The Deployment in the cluster against the one the release's manifest declares."""
    if live is None:
        return [Drift(service, "the Deployment is missing from the cluster", "declared by the release", "absent")]
    drifts = []
    live_containers = _containers(live)
    for name, want in _containers(declared).items():
        have = live_containers.get(name)
        if have is None:
            drifts.append(Drift(service, f"container {name} removed outside Helm", name, "absent"))
            continue
        if want.get("image") != have.get("image"):
            drifts.append(Drift(service, "image changed outside Helm", str(want.get("image")), str(have.get("image"))))
        env = _env_drift(want, have)
        if env:
            drifts.append(Drift(service, "environment changed outside Helm", "the chart's variables", env))
        resources = _resources_drift(want.get("resources") or {}, have.get("resources") or {})
        if resources:
            drifts.append(Drift(service, "resources changed outside Helm", "the chart's resources",
                                "; ".join(resources)))
        for field in COMPARED[3:]:  # probes: what the chart sets, the API server may add defaults
            if field in want and not _subset(want.get(field), have.get(field)):
                drifts.append(Drift(service, f"{field} changed outside Helm", _show(want.get(field)),
                                    _show(have.get(field))))
            elif field in have and field not in want:
                drifts.append(Drift(service, f"{field} added outside Helm", "none", _show(have.get(field))))
    return drifts


def release_drift(service: str, recorded: str | None, released: str | None) -> list[Drift]:
    """The release's image of a service against the pipeline's record of it (tag, or tag@digest)."""
    if not recorded or not released:
        return []
    if recorded == released or (("@" not in recorded or "@" not in released)
                                and recorded.partition("@")[0] == released.partition("@")[0]):
        return []
    return [Drift(service, "the release differs from the last pipeline deploy", recorded, released)]


def diff_text(drifts: list[Drift]) -> str:
    """The whole difference, for a file: expected and actual in full."""
    return "\n\n".join(f"# {d.service}: {d.source}\n- expected: {d.expected}\n+ actual:   {d.actual}"
                       for d in drifts) + "\n"
