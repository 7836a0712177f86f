"""The bot's YAML config (path in BOT_CONFIG): the shape README's Configuration section documents.

A bad file stops start-up with one line naming the file, the key and what was
expected, so whoever deploys the bot sees exactly what to fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bot.delivery.freeze_calendar import FreezeCalendar, FreezeConfigError

SLACK_PRINCIPAL = re.compile(r"^[UWS][A-Z0-9]{2,}$")  # users U/W, user groups S
SLACK_CHANNEL = re.compile(r"^[CGD][A-Z0-9]{2,}$")
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}$")


class ConfigError(Exception):
    """One line: `<file>: <key>: expected <what>, got <what>`."""


@dataclass(frozen=True)
class ApprovalReminders:
    """A waiting approval reminds its approvers every `every_seconds`; after `escalate_after_seconds` it
    mentions `escalate_to` too; a newer execution's approval of the same service supersedes it."""

    every_seconds: int
    escalate_after_seconds: int | None = None
    escalate_to: tuple[str, ...] = ()
    reject_superseded: bool = False


@dataclass(frozen=True)
class Environment:
    name: str
    namespace: str
    release: str
    channel: str
    approval: bool
    approvers: tuple[str, ...] = ()
    deployers: tuple[str, ...] | None = None  # None: anyone may deploy
    readers: tuple[str, ...] | None = None  # who may read its logs; None: the default (see Config.readers_of)
    freeze: FreezeCalendar | None = None  # when it takes no deploys (bot/delivery/freeze_calendar.py)
    lock_after_rollback: int | None = None  # seconds: a rollback locks it this long, so nobody redeploys at once
    approval_reminders: ApprovalReminders | None = None  # None: an approval waits quietly (handlers/approval_reminders)
    rollback_on_alarm: bool = False  # an alarm within alarms.window of a deploy rolls it back (handlers/alarms)


@dataclass(frozen=True)
class Service:
    name: str
    image_repository: str
    log_group: str  # may contain {env}
    deployment: str

    def log_group_for(self, env: str) -> str:
        return self.log_group.replace("{env}", env)


@dataclass(frozen=True)
class LockSettings:
    """`/erp lock`: how long a lock lasts unless told, the longest one may ask for, when to remind."""

    default_seconds: int = 2 * 3600
    max_seconds: int = 3 * 86400
    remind_before_seconds: int = 15 * 60


_DURATION = re.compile(r"^(\d{1,4})([mhd])$")
_DURATION_SECONDS = {"m": 60, "h": 3600, "d": 86400}


def duration_seconds(text: str) -> int | None:
    """`90m`, `2h`, `3d` in seconds; None if it is not one."""
    m = _DURATION.match(text.strip().lower())
    return int(m.group(1)) * _DURATION_SECONDS[m.group(2)] if m and int(m.group(1)) > 0 else None


@dataclass(frozen=True)
class Promotion:
    """`/erp promote`: the image that passed `source` goes to `target` after `soak_seconds` there."""

    source: str = "dev"
    target: str = "prod"
    soak_seconds: int = 3600


@dataclass(frozen=True)
class Config:
    source: str
    pipeline: str
    events_queue_url: str
    state_table: str
    audit_table: str  # append-only (README "Security"); the state table if the config names none
    progress_queue_url: str | None  # the buildspec's progress lines (bot/ci/notify.py); None: none are read
    environments: dict[str, Environment]
    services: dict[str, Service]
    oncall_channels: tuple[str, ...] = field(default=())
    oncall_readers: tuple[str, ...] = field(default=())  # the on-call group: reads every environment
    locks: LockSettings = field(default_factory=lambda: LockSettings())
    promotion: Promotion | None = None  # None: no `/erp promote` (the config names no source and target)
    alarm_window_seconds: int = 1800  # an alarm this soon after a deploy is answered in its thread (handlers/alarms)
    drift_check_seconds: int | None = None  # how often to look for drift (handlers/drift); None: only on request

    def readers_of(self, env: str) -> tuple[str, ...] | None:
        """Who may read an environment's logs: its `readers` if set; else its deployers, approvers and the
        on-call readers; None (anyone) only where anyone may deploy."""
        e = self.environments[env]
        if e.readers is not None:
            return e.readers + self.oncall_readers
        if e.deployers is None:
            return None
        return tuple(dict.fromkeys(e.deployers + e.approvers + self.oncall_readers))

    def execution_environment(self, variables: dict[str, str]) -> str:
        """The environment a pipeline execution deploys to, from its own ENVIRONMENT variable (a push sets
        none: dev)."""
        env = (variables.get("ENVIRONMENT") or "").strip() or "dev"
        if env not in self.environments:
            env = "dev" if "dev" in self.environments else next(iter(self.environments))
        return env

    def file_channels(self, env: str) -> tuple[str, ...]:
        """Where files of an environment's logs or audit trail may be shared: an environment that needs
        approval keeps them in its own channel and the on-call channels; empty: wherever asked."""
        e = self.environments[env]
        return (e.channel, *self.oncall_channels) if e.approval else ()

    def channel_environment(self, channel_id: str) -> str | None:
        """The environment whose deploy channel this is, if any."""
        for env in self.environments.values():
            if env.channel == channel_id:
                return env.name
        return None


# --- validation ---------------------------------------------------------------

class _Reader:
    """Walks the parsed YAML, naming the dotted key in every error."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, expected: str, got: Any = None, *, missing: bool = False) -> ConfigError:
        if missing:
            return ConfigError(f"{self.source}: {key}: missing, expected {expected}")
        return ConfigError(f"{self.source}: {key}: expected {expected}, got {_show(got)}")

    def mapping(self, value: Any, key: str, *, required: set[str], optional: set[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key or "(top level)", "a mapping", value)
        for k in value:
            if not isinstance(k, str) or k not in required | optional:
                allowed = ", ".join(sorted(required | optional))
                raise ConfigError(f"{self.source}: {_join(key, str(k))}: unknown key, expected one of: {allowed}")
        for k in sorted(required):
            if k not in value:
                raise self.fail(_join(key, k), _describe(k), missing=True)
        return value

    def string(self, value: Any, key: str, pattern: re.Pattern[str] | None = None, what: str = "a string") -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, what, value)
        if pattern is not None and not pattern.match(value):
            raise self.fail(key, what, value)
        return value

    def duration(self, value: Any, key: str) -> int:
        seconds = duration_seconds(value) if isinstance(value, str) else None
        if seconds is None:
            raise self.fail(key, "a duration such as 30m, 2h or 3d", value)
        return seconds

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, "true or false", value)
        return value

    def id_list(self, value: Any, key: str, pattern: re.Pattern[str], what: str) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.fail(key, f"a list of {what}", value)
        return tuple(self.string(v, f"{key}[{i}]", pattern, what) for i, v in enumerate(value))


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _show(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_DESCRIPTIONS = {
    "pipeline": "the CodePipeline name",
    "events_queue_url": "the SQS queue URL fed by the EventBridge rule",
    "state_table": "the DynamoDB table name",
    "environments": "a mapping of environment name to settings",
    "services": "a mapping of service name to settings",
    "namespace": "a Kubernetes namespace",
    "release": "a Helm release name",
    "channel": "a Slack channel ID such as C0PROD",
    "approval": "true or false",
    "image_repository": "an ECR repository name such as erp/employee-service",
    "log_group": "a CloudWatch Logs group such as /erp/{env}/employee-service",
    "deployment": "a Kubernetes Deployment name",
}


def _describe(key: str) -> str:
    return _DESCRIPTIONS.get(key, "a value")


def parse_config(data: Any, source: str) -> Config:
    r = _Reader(source)
    top = r.mapping(
        data, "",
        required={"pipeline", "events_queue_url", "state_table", "environments", "services"},
        optional={"oncall_channels", "oncall_readers", "audit_table", "progress_queue_url", "locks",
                  "promotion", "alarms", "drift_check"},
    )
    envs_raw = top["environments"]
    if not isinstance(envs_raw, dict) or not envs_raw:
        raise r.fail("environments", "a mapping of environment name to settings", envs_raw)
    environments: dict[str, Environment] = {}
    for name, raw in envs_raw.items():
        key = f"environments.{name}"
        r.string(name, key, NAME, "a lower-case environment name")
        e = r.mapping(raw, key, required={"namespace", "release", "channel", "approval"},
                      optional={"approvers", "deployers", "readers", "freeze", "lock_after_rollback",
                                "approval_reminders", "rollback_on_alarm"})
        approval = r.boolean(e["approval"], f"{key}.approval")
        approvers = r.id_list(e.get("approvers", []), f"{key}.approvers", SLACK_PRINCIPAL,
                              "Slack user or user-group IDs (U..., W..., S...)")
        if approval and not approvers:
            raise r.fail(f"{key}.approvers", "at least one approver when approval is true", e.get("approvers"))
        deployers = None
        if "deployers" in e:
            deployers = r.id_list(e["deployers"], f"{key}.deployers", SLACK_PRINCIPAL,
                                  "Slack user or user-group IDs (U..., W..., S...)")
        readers = None
        if "readers" in e:
            readers = r.id_list(e["readers"], f"{key}.readers", SLACK_PRINCIPAL,
                                "Slack user or user-group IDs (U..., W..., S...)")
        freeze = None
        if "freeze" in e:
            try:
                freeze = FreezeCalendar.parse(e["freeze"])
            except FreezeConfigError as problem:
                raise ConfigError(f"{source}: {key}.freeze: {problem}") from None
        reminders = None
        if "approval_reminders" in e:
            raw = r.mapping(e["approval_reminders"], f"{key}.approval_reminders", required={"every"},
                            optional={"escalate_after", "escalate_to", "reject_superseded"})
            reminders = ApprovalReminders(
                every_seconds=r.duration(raw["every"], f"{key}.approval_reminders.every"),
                escalate_after_seconds=r.duration(raw["escalate_after"], f"{key}.approval_reminders.escalate_after")
                if "escalate_after" in raw else None,
                escalate_to=r.id_list(raw.get("escalate_to", []), f"{key}.approval_reminders.escalate_to",
                                      SLACK_PRINCIPAL, "Slack user or user-group IDs (U..., W..., S...)"),
                reject_superseded=r.boolean(raw.get("reject_superseded", False),
                                            f"{key}.approval_reminders.reject_superseded"))
            if reminders.escalate_after_seconds is not None and not reminders.escalate_to:
                raise r.fail(f"{key}.approval_reminders.escalate_to", "who to mention when escalate_after passes",
                             raw.get("escalate_to"))
        environments[name] = Environment(
            name=name,
            namespace=r.string(e["namespace"], f"{key}.namespace", NAME, "a Kubernetes namespace"),
            release=r.string(e["release"], f"{key}.release", NAME, "a Helm release name"),
            channel=r.string(e["channel"], f"{key}.channel", SLACK_CHANNEL, "a Slack channel ID such as C0PROD"),
            approval=approval,
            approvers=approvers,
            deployers=deployers,
            readers=readers,
            freeze=freeze,
            lock_after_rollback=r.duration(e["lock_after_rollback"], f"{key}.lock_after_rollback")
            if "lock_after_rollback" in e else None,
            approval_reminders=reminders,
            rollback_on_alarm=r.boolean(e.get("rollback_on_alarm", False), f"{key}.rollback_on_alarm"),
        )
    svcs_raw = top["services"]
    if not isinstance(svcs_raw, dict) or not svcs_raw:
        raise r.fail("services", "a mapping of service name to settings", svcs_raw)
    services: dict[str, Service] = {}
    for name, raw in svcs_raw.items():
        key = f"services.{name}"
        r.string(name, key, NAME, "a lower-case service name")
        if name == "all":
            raise r.fail(key, "a service name other than 'all' (it means every service)", name)
        s = r.mapping(raw, key, required={"image_repository", "log_group", "deployment"}, optional=set())
        services[name] = Service(
            name=name,
            image_repository=r.string(s["image_repository"], f"{key}.image_repository"),
            log_group=r.string(s["log_group"], f"{key}.log_group"),
            deployment=r.string(s["deployment"], f"{key}.deployment", NAME, "a Kubernetes Deployment name"),
        )
    oncall = r.id_list(top.get("oncall_channels", []), "oncall_channels", SLACK_CHANNEL, "Slack channel IDs")
    locks = LockSettings()
    if "locks" in top:
        raw_locks = r.mapping(top["locks"], "locks", required=set(), optional={"default", "max", "remind_before"})
        locks = LockSettings(**{field_name: r.duration(raw_locks[k], f"locks.{k}") for k, field_name in
                                (("default", "default_seconds"), ("max", "max_seconds"),
                                 ("remind_before", "remind_before_seconds")) if k in raw_locks})
        if locks.default_seconds > locks.max_seconds:
            biggest = raw_locks["max"] if "max" in raw_locks else f"{LockSettings.max_seconds // 86400}d, the default"
            raise r.fail("locks.default", f"at most locks.max ({biggest})", raw_locks["default"])
    promotion = None
    default_promotion = {"from": "dev", "to": "prod"} if {"dev", "prod"} <= set(environments) else None
    raw_promotion = top.get("promotion", default_promotion)
    if raw_promotion is not None:
        p = r.mapping(raw_promotion, "promotion", required={"from", "to"}, optional={"soak"})
        for k in ("from", "to"):
            if p[k] not in environments:
                raise r.fail(f"promotion.{k}", f"one of the environments ({', '.join(environments)})", p[k])
        if p["from"] == p["to"]:
            raise r.fail("promotion.to", "another environment than promotion.from", p["to"])
        promotion = Promotion(p["from"], p["to"], r.duration(p["soak"], "promotion.soak") if "soak" in p else 3600)
    return Config(
        source=source,
        pipeline=r.string(top["pipeline"], "pipeline"),
        events_queue_url=r.string(top["events_queue_url"], "events_queue_url"),
        state_table=r.string(top["state_table"], "state_table"),
        audit_table=r.string(top.get("audit_table", top["state_table"]), "audit_table"),
        progress_queue_url=r.string(top["progress_queue_url"], "progress_queue_url") if "progress_queue_url" in top
        else None,
        environments=environments,
        services=services,
        oncall_channels=oncall,
        oncall_readers=r.id_list(top.get("oncall_readers", []), "oncall_readers", SLACK_PRINCIPAL,
                                 "Slack user or user-group IDs (U..., W..., S...)"),
        locks=locks,
        promotion=promotion,
        alarm_window_seconds=r.duration(r.mapping(top["alarms"], "alarms", required={"window"}, optional=set())
                                        ["window"], "alarms.window") if "alarms" in top else 1800,
        drift_check_seconds=r.duration(top["drift_check"], "drift_check") if "drift_check" in top else None,
    )


def load_config(path: str | Path) -> Config:
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{source}: cannot read the file: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "somewhere"
        raise ConfigError(f"{source}: not valid YAML at {where}: {getattr(e, 'problem', e)}") from None
    return parse_config(data, source)
