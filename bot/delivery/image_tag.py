"""Image tags: what a valid one looks like, and how to show one briefly."""

from __future__ import annotations

import re

TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")  # Docker's tag grammar
SHA = re.compile(r"^[0-9a-f]{40}$")


def short_tag(tag: str) -> str:
    """Commit SHAs shortened as git does; every other tag in full (release-2024.12.26 != release-2024.12.23)."""
    return tag[:7] if SHA.match(tag) else tag[:64]
