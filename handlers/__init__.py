"""One module per capability, all registered here: find `/erp <verb>` by its name."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.runtime import Runtime
from handlers import (
    alarm_rollback,
    alarms,
    approval,
    approval_reminders,
    drift,
    erp_command,
    locks,
    promote,
    rollback,
    scan,
)
from handlers.deploy import deploy
from handlers.erp_command import VerbHandler
from handlers.freeze import freeze
from handlers.history import history
from handlers.logs import logs
from handlers.pipeline_events import handle_pipeline_event, publish_changes, sweep_forever
from handlers.status import status

# Every verb the parser knows has its handler here (tests/test_http_server.py checks it).
VERBS: dict[str, VerbHandler] = {
    "deploy": deploy,
    "drift": drift.drift,
    "freeze": freeze,
    "history": history,
    "lock": locks.lock,
    "locks": locks.locks,
    "promote": promote.promote,
    "logs": logs,
    "rollback": rollback.rollback,
    "scan": scan.scan,
    "status": status,
    "unlock": locks.unlock,
}

EVENT_HANDLER = handle_pipeline_event  # what the queue consumer calls for each event
EVENT_PUBLISHER = publish_changes  # and, once per batch, to bring the touched cards up to date
CARD_SWEEPER = sweep_forever  # in the background: cards left waiting for an invite, published again
APPROVAL_SWEEPER = approval_reminders.sweep_approvals_forever  # and: reminders of approvals left waiting
DRIFT_CHECK = drift.check_forever  # and: the periodic drift check, one replica at a time
AUTO_ROLLBACK_SWEEPER = alarm_rollback.sweep_forever  # and: automatic rollbacks a dead replica left
LOCK_SWEEPER = locks.sweep_locks_forever  # and: lock reminders and expiry, the freeze calendars for the pipeline


def register(app: AsyncApp, runtime: Runtime) -> None:
    erp_command.register(app, runtime, VERBS)
    approval.register(app, runtime)
    alarms.register(app, runtime)
    drift.register(app, runtime)
    rollback.register(app, runtime)
    locks.register(app, runtime)
    promote.register(app, runtime)
    scan.register(app, runtime)
