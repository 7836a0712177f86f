"""`/erp help [verb]`: usage with examples, answered inside the ack."""

from __future__ import annotations

from typing import Any

from slack_sdk.models.blocks import ContextBlock, DividerBlock, MarkdownTextObject, SectionBlock

from bot.config import Config
from bot.delivery.command_parser import VERBS


def help_reply(config: Config, topic: str | None = None) -> dict[str, Any]:
    """Keyword arguments for `ack(...)`: an ephemeral message with blocks and a plain-text fallback."""
    services = ", ".join(f"`{s}`" for s in config.services)
    envs = ", ".join(f"`{e}`" for e in config.environments)
    names = MarkdownTextObject(text=f"Services: {services}  ·  Environments: {envs}")
    if topic:
        verb = VERBS[topic]
        examples = "\n".join(f"`{e}`" for e in verb.examples)
        blocks = [
            SectionBlock(text=MarkdownTextObject(text=f"*`{verb.usage}`*\n{verb.summary}")),
            SectionBlock(text=MarkdownTextObject(text=f"*Examples*\n{examples}")),
            ContextBlock(elements=[names]),
        ]
        text = f"{verb.usage}: {verb.summary}"
    else:
        lines = [f"`{v.usage.split('  or  ')[0]}`  {v.summary}" for name, v in VERBS.items() if name != "help"]
        blocks = [
            SectionBlock(text=MarkdownTextObject(text="*What I can do* (`/erp help <command>` for examples)")),
            DividerBlock(),
            SectionBlock(text=MarkdownTextObject(text="\n".join(lines))),
            ContextBlock(elements=[names]),
        ]
        text = "erp commands: " + ", ".join(v for v in VERBS if v != "help") + ". Try /erp help deploy."
    return {"response_type": "ephemeral", "text": text, "blocks": [b.to_dict() for b in blocks]}
