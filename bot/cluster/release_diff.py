"""What a per-service rollback would change besides that service's image.

A per-service rollback is `helm upgrade --reuse-values --set-string services.<svc>.image.tag=<old>`, and
it renders the chart copy shipped in the bot's image, which is not necessarily the chart the pipeline
last deployed from the repository. Before it runs, the bot renders it with `--dry-run` and compares
the result with the release's own manifest: anything but that one Deployment's image (another service
re-rendered, a label from a newer chart) means the per-service way would change more than it says, and
it is refused in favour of a whole-release `helm rollback`, which uses the chart stored in the release.
"""

from __future__ import annotations

from typing import Any

import yaml


def _documents(manifest: str) -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for doc in yaml.safe_load_all(manifest):
        if isinstance(doc, dict) and doc.get("kind"):
            out[(str(doc["kind"]), str((doc.get("metadata") or {}).get("name", "")))] = doc
    return out


def _without_images(deployment: dict[str, Any]) -> dict[str, Any]:
    copy = yaml.safe_load(yaml.safe_dump(deployment))
    for container in (((copy.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []:
        container.pop("image", None)
    return dict(copy)


def changes_besides_the_image(current: str, planned: str, deployment: str) -> list[str]:
    """`Kind/name` of every object the planned manifest changes, adds or drops, other than the image of
    `deployment`'s containers. Empty: the rollback changes that image and nothing else."""
    before, after = _documents(current), _documents(planned)
    changed = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if key == ("Deployment", deployment) and old is not None and new is not None:
            old, new = _without_images(old), _without_images(new)
        if old != new:
            changed.append(f"{key[0]}/{key[1]}" + (" (new)" if old is None else " (gone)" if new is None else ""))
    return changed
