"""Block Kit as Slack validates it: what the local Web API refuses with `invalid_blocks`.

Limits from Slack's Block Kit reference; a message the real Slack would refuse
must fail here too, or the sandbox hides bugs that production would show.
"""

from __future__ import annotations

from typing import Any

MAX_BLOCKS = {"message": 50, "modal": 100}
TEXT_TYPES = {"plain_text", "mrkdwn"}


class _Check:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def fail(self, where: str, what: str) -> None:
        self.errors.append(f"{what} [json-pointer:{where}]")

    def text(self, obj: Any, where: str, limit: int, *, plain_only: bool = False) -> None:
        if not isinstance(obj, dict) or obj.get("type") not in TEXT_TYPES:
            self.fail(where, "must be a text object (plain_text or mrkdwn)")
            return
        if plain_only and obj["type"] != "plain_text":
            self.fail(f"{where}/type", "must be plain_text")
        value = obj.get("text")
        if not isinstance(value, str) or not value:
            self.fail(f"{where}/text", "must be a non-empty string")
        elif len(value) > limit:
            self.fail(f"{where}/text", f"must be less than {limit + 1} characters")

    def length(self, value: Any, where: str, limit: int) -> None:
        if value is not None and (not isinstance(value, str) or len(value) > limit):
            self.fail(where, f"must be a string of at most {limit} characters")

    def confirm(self, obj: Any, where: str) -> None:
        if not isinstance(obj, dict):
            self.fail(where, "must be a confirmation dialog object")
            return
        self.text(obj.get("title"), f"{where}/title", 100, plain_only=True)
        self.text(obj.get("text"), f"{where}/text", 300)
        self.text(obj.get("confirm"), f"{where}/confirm", 30, plain_only=True)
        self.text(obj.get("deny"), f"{where}/deny", 30, plain_only=True)
        if obj.get("style") not in (None, "primary", "danger"):
            self.fail(f"{where}/style", "must be primary or danger")

    def element(self, el: Any, where: str) -> None:
        if not isinstance(el, dict):
            self.fail(where, "must be an element object")
            return
        kind = el.get("type")
        if kind == "button":
            self.text(el.get("text"), f"{where}/text", 75, plain_only=True)
            self.length(el.get("action_id"), f"{where}/action_id", 255)
            self.length(el.get("value"), f"{where}/value", 2000)
            self.length(el.get("url"), f"{where}/url", 3000)
            if el.get("style") not in (None, "primary", "danger"):
                self.fail(f"{where}/style", "must be primary or danger")
            if "confirm" in el:
                self.confirm(el["confirm"], f"{where}/confirm")
        elif kind == "image":
            self.length(el.get("image_url"), f"{where}/image_url", 3000)
            self.length(el.get("alt_text"), f"{where}/alt_text", 2000)
        elif kind in ("plain_text_input", "static_select", "overflow"):
            self.length(el.get("action_id"), f"{where}/action_id", 255)
        else:
            self.fail(f"{where}/type", f"unsupported element type {kind!r}")


def validate_blocks(blocks: Any, surface: str = "message") -> list[str]:
    """Errors in Slack's wording style; an empty list means Slack would accept the blocks."""
    c = _Check()
    if not isinstance(blocks, list):
        return ["must be an array [json-pointer:/blocks]"]
    if len(blocks) > MAX_BLOCKS[surface]:
        c.fail("/blocks", f"no more than {MAX_BLOCKS[surface]} items allowed")
    for i, block in enumerate(blocks):
        where = f"/blocks/{i}"
        if not isinstance(block, dict):
            c.fail(where, "must be a block object")
            continue
        c.length(block.get("block_id"), f"{where}/block_id", 255)
        kind = block.get("type")
        if kind == "section":
            if "text" not in block and "fields" not in block:
                c.fail(where, "must provide text or fields")
            if "text" in block:
                c.text(block["text"], f"{where}/text", 3000)
            fields = block.get("fields")
            if fields is not None:
                if not isinstance(fields, list) or len(fields) > 10:
                    c.fail(f"{where}/fields", "no more than 10 items allowed")
                else:
                    for j, f in enumerate(fields):
                        c.text(f, f"{where}/fields/{j}", 2000)
            if "accessory" in block:
                c.element(block["accessory"], f"{where}/accessory")
        elif kind == "header":
            c.text(block.get("text"), f"{where}/text", 150, plain_only=True)
        elif kind == "divider":
            pass
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not elements or len(elements) > 10:
                c.fail(f"{where}/elements", "must have between 1 and 10 items")
            else:
                for j, el in enumerate(elements):
                    if isinstance(el, dict) and el.get("type") in TEXT_TYPES:
                        c.text(el, f"{where}/elements/{j}", 3000)
                    else:
                        c.element(el, f"{where}/elements/{j}")
        elif kind == "actions":
            elements = block.get("elements")
            if not isinstance(elements, list) or not elements or len(elements) > 25:
                c.fail(f"{where}/elements", "must have between 1 and 25 items")
            else:
                for j, el in enumerate(elements):
                    c.element(el, f"{where}/elements/{j}")
        elif kind == "image":
            c.length(block.get("image_url"), f"{where}/image_url", 3000)
            c.length(block.get("alt_text"), f"{where}/alt_text", 2000)
        elif kind == "input" and surface == "modal":
            c.text(block.get("label"), f"{where}/label", 2000, plain_only=True)
            c.element(block.get("element"), f"{where}/element")
        else:
            c.fail(f"{where}/type", f"unsupported block type {kind!r}")
    return c.errors


def validate_view(view: Any) -> list[str]:
    if not isinstance(view, dict) or view.get("type") != "modal":
        return ["must be a modal view [json-pointer:/view]"]
    c = _Check()
    c.text(view.get("title"), "/view/title", 24, plain_only=True)
    for key in ("submit", "close"):
        if key in view:
            c.text(view[key], f"/view/{key}", 24, plain_only=True)
    c.length(view.get("private_metadata"), "/view/private_metadata", 3000)
    c.length(view.get("callback_id"), "/view/callback_id", 255)
    return c.errors + validate_blocks(view.get("blocks", []), "modal")
