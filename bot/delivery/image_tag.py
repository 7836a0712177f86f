"""Image tags: what a valid one looks like, and how to show one briefly."""

from __future__ import annotations

import re

TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")  # Docker's tag grammar
SHA = re.compile(r"^[0-9a-f]{40}$")


DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def split_ref(ref: str) -> tuple[str, str] | None:
    """`tag` or `tag@sha256:<digest>` (a promotion pins the exact image dev ran) -> (tag, digest or "");
    None if it is neither. Nothing else may reach `--set-string`, where a comma would set another value."""
    tag, at, digest = ref.partition("@")
    if not TAG.match(tag) or (at and not DIGEST.match(digest)):
        return None
    return tag, digest


def short_tag(tag: str) -> str:
    """Commit SHAs shortened as git does; every other tag in full (release-2024.12.26 != release-2024.12.23);
    a pinned digest by its first 12 hex digits."""
    tag, _, digest = tag.partition("@")
    short = tag[:7] if SHA.match(tag) else tag[:64]
    return f"{short}@{digest[7:19]}" if digest.startswith("sha256:") else short
