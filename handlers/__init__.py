"""One module per capability, all registered here: find `/erp <verb>` by its name."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.runtime import Runtime
from handlers import erp_command
from handlers.erp_command import VerbHandler

# Verbs whose handlers have landed; the others answer "not available yet".
VERBS: dict[str, VerbHandler] = {}


def register(app: AsyncApp, runtime: Runtime) -> None:
    erp_command.register(app, runtime, VERBS)
