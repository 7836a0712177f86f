"""`/erp <verb> [args]`: one parser for every verb.

Every mistake becomes a `UsageError` whose message is one line that says what
to type instead; a misspelled service, environment or verb gets the closest
valid name. The parser only accepts names it knows, so user text never reaches
a shell, a query or an API call unchecked.
"""

from __future__ import annotations

import difflib
import html
import itertools
import re
import shlex
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bot.config import Config, duration_seconds
from bot.delivery.escaping import escape_text
from bot.delivery.image_tag import TAG


@dataclass(frozen=True)
class VerbHelp:
    usage: str
    summary: str
    examples: tuple[str, ...]


VERBS: dict[str, VerbHelp] = {
    "deploy": VerbHelp(
        "/erp deploy <service|all> <env> [break-glass <reason>]  or  /erp deploy <env>",
        "Start the pipeline for a service (or all, or whatever changed) in an environment; during a freeze an"
        " approver may break the glass for one deploy, with a reason.",
        ("/erp deploy employee prod", "/erp deploy all dev", "/erp deploy dev",
         '/erp deploy employee prod break-glass "INC-42 payments fix"'),
    ),
    "promote": VerbHelp(
        "/erp promote [<service> [to <env>] [override <reason>] [break-glass <reason>]]",
        "Deploy to prod the exact image that passed dev (no rebuild; the prod approval still applies); with no"
        " service, what dev runs that prod does not.",
        ("/erp promote", "/erp promote employee", "/erp promote employee to prod",
         '/erp promote employee override "INC-42 fix verified in dev"'),
    ),
    "lock": VerbHelp(
        "/erp lock <env> [for <30m|2h|1d>] [reason]",
        "Lock an environment: only you can deploy to it until it expires or you unlock it (rollbacks still work).",
        ("/erp lock prod for 2h INC-42 payments down", "/erp lock dev testing the migration"),
    ),
    "unlock": VerbHelp(
        "/erp unlock <env>",
        "Remove an environment's lock: its holder, or an approver.",
        ("/erp unlock prod",),
    ),
    "locks": VerbHelp(
        "/erp locks",
        "Every environment's lock: who, why, since and until when.",
        ("/erp locks",),
    ),
    "drift": VerbHelp(
        "/erp drift [env]",
        "What runs differently from what was deployed: the pipeline's record, the Helm release, the cluster.",
        ("/erp drift", "/erp drift prod"),
    ),
    "freeze": VerbHelp(
        "/erp freeze [env]",
        "Whether an environment is frozen now, until when, and its next freeze windows.",
        ("/erp freeze", "/erp freeze prod"),
    ),
    "rollback": VerbHelp(
        "/erp rollback <service> <env> [revision]  or  /erp rollback <env> <revision>",
        "Roll a service, or the whole release, back to an earlier Helm revision (asks to confirm).",
        ("/erp rollback employee prod", "/erp rollback employee prod 12", "/erp rollback prod 12"),
    ),
    "logs": VerbHelp(
        "/erp logs <service> [env] [since] [filter]  or  /erp logs <service> [env] stats",
        "Recent log lines from CloudWatch Logs, errors and warnings first; `stats` charts errors per 5 minutes.",
        ("/erp logs notification", "/erp logs notification prod 30m ERROR",
         '/erp logs employee prod 2h "timeout"', "/erp logs employee prod stats"),
    ),
    "scan": VerbHelp(
        "/erp scan <service> [tag|latest]",
        "ECR scan summary of an image: severity counts, top findings, and whether it may ship.",
        ("/erp scan employee", "/erp scan employee 3f9c2e1"),
    ),
    "status": VerbHelp(
        "/erp status [env]",
        "What runs in the cluster: image tags, replicas, rollout state, Helm revision, last deploy.",
        ("/erp status", "/erp status prod"),
    ),
    "history": VerbHelp(
        "/erp history [service] [env] [since] [csv]",
        "Recent deploys, approvals and rollbacks, newest first; `csv`: the whole period as a file.",
        ("/erp history", "/erp history employee prod", "/erp history prod 30d csv"),
    ),
    "help": VerbHelp(
        "/erp help [verb]",
        "This help, or one verb's usage with examples.",
        ("/erp help", "/erp help logs"),
    ),
}

SINCE_FORMS = "15m, 2h, 1d or an ISO time such as 2026-11-26T03:00Z"
_DURATION = re.compile(r"^(\d{1,4})([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_MAX_FILTER = 200
MAX_REASON = 200
_MAX_LOOKBACK = timedelta(days=30)
# Phones turn quotes into curly ones; Slack escapes &, < and > in command text.
_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'", "\u00a0": " "})


class UsageError(Exception):
    """A one-line answer telling the user what to type instead."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class TimeWindow:
    """A log query's start: either a look-back (`15m`) or an absolute time."""

    text: str
    lookback: timedelta | None = None
    start: datetime | None = None

    def start_time(self, now: datetime) -> datetime:
        return self.start if self.start is not None else now - (self.lookback or timedelta(minutes=15))


@dataclass(frozen=True)
class ErpCommand:
    verb: str
    service: str | None = None  # "all" is allowed for deploy
    environment: str | None = None
    revision: int | None = None
    tag: str | None = None
    since: TimeWindow | None = None
    filter: str | None = None
    stats: bool = False
    topic: str | None = None  # help <topic>
    export: bool = False  # history ... csv: the period as a CSV file
    duration: int | None = None  # lock ... for 2h: seconds
    reason: str | None = None  # lock's reason
    break_glass: str | None = None  # deploy/promote during a freeze: the approver's reason
    override: str | None = None  # promote before the soak time: the approver's reason


def closest(word: str, choices: list[str] | tuple[str, ...], cutoff: float = 0.6) -> str | None:
    found = difflib.get_close_matches(word.lower(), list(choices), n=1, cutoff=cutoff)
    return found[0] if found else None


def _usage(verb: str) -> str:
    return f"Usage: `{VERBS[verb].usage}`"


def _unknown(kind: str, word: str, choices: list[str], verb: str) -> UsageError:
    shown = word if len(word) <= 40 else word[:37] + "..."
    shown = escape_text(shown.replace("`", "'"))
    guess = closest(word, choices)
    hint = f"did you mean `{guess}`?" if guess else f"choose one of: {', '.join(f'`{c}`' for c in choices)}."
    return UsageError(f"Unknown {kind} `{shown}`: {hint} {_usage(verb)}")


def parse_since(text: str, now: datetime | None = None) -> TimeWindow:
    m = _DURATION.match(text)
    if m:
        delta = timedelta(seconds=int(m.group(1)) * _UNIT_SECONDS[m.group(2)])
        if delta <= timedelta(0) or delta > _MAX_LOOKBACK:
            raise UsageError(f"Time window `{text}` must be between 1s and 30d. Try {SINCE_FORMS}.")
        return TimeWindow(text=text, lookback=delta)
    try:
        start = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise UsageError(f"Cannot read the time window `{text[:40]}`: use {SINCE_FORMS}.") from None
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    if start > now:
        raise UsageError(f"Time `{text}` is in the future: use {SINCE_FORMS}.")
    return TimeWindow(text=text, start=start)


def _looks_like_time(token: str) -> bool:
    return bool(token) and token[0].isdigit()


class CommandParser:
    """Parses `/erp` text against the configured services and environments."""

    def __init__(self, config: Config) -> None:
        self.services = list(config.services)
        self.environments = list(config.environments)
        self.max_lock = config.locks.max_seconds
        self.promotion = config.promotion

    def parse(self, text: str) -> ErpCommand:
        text = html.unescape((text or "").translate(_QUOTES)).strip()
        if not text:
            return ErpCommand(verb="help")
        try:
            tokens = shlex.split(text)
        except ValueError:
            raise UsageError('A quote is not closed: put the filter in matching quotes, e.g. `"timeout"`.') from None
        if not tokens:
            return ErpCommand(verb="help")
        verb, args = tokens[0].lower(), tokens[1:]
        if verb not in VERBS:
            guess = closest(verb, list(VERBS))
            hint = f"did you mean `/erp {guess}`?" if guess else "type `/erp help` to see them."
            shown = escape_text(tokens[0][:30].replace("`", "'"))
            raise UsageError(f"Unknown command `{shown}`: {hint}")
        return getattr(self, f"_{verb}")(args)

    # --- token classification ------------------------------------------------

    def _service(self, token: str, verb: str, *, allow_all: bool = False) -> str:
        word = token.lower()
        if word in self.services or (allow_all and word == "all"):
            return word
        choices = self.services + (["all"] if allow_all else [])
        raise _unknown("service", token, choices, verb)

    def _environment(self, token: str, verb: str) -> str:
        word = token.lower()
        if word in self.environments:
            return word
        raise _unknown("environment", token, self.environments, verb)

    def _revision(self, token: str, verb: str) -> int:
        if token.isdigit() and 0 < int(token) < 1_000_000:
            return int(token)
        raise UsageError(f"Revision `{token[:20]}` is not a Helm revision number such as 12. {_usage(verb)}")

    def _is_env_typo(self, token: str) -> bool:
        return token.lower() not in self.environments and closest(token, self.environments, 0.7) is not None

    @staticmethod
    def _too_many(args: list[str], allowed: int, verb: str) -> None:
        if len(args) > allowed:
            extra = " ".join(args[allowed:])[:40].replace("`", "'")
            raise UsageError(f"Unexpected `{extra}`. {_usage(verb)}")

    # --- verbs ----------------------------------------------------------------

    def _help(self, args: list[str]) -> ErpCommand:
        self._too_many(args, 1, "help")
        if not args:
            return ErpCommand(verb="help")
        topic = args[0].lower()
        if topic not in VERBS:
            raise _unknown("command", args[0], list(VERBS), "help")
        return ErpCommand(verb="help", topic=topic)

    def _deploy(self, args: list[str]) -> ErpCommand:
        if not args:
            raise UsageError(f"Say what to deploy and where. {_usage('deploy')}")
        if len(args) == 1:
            word = args[0].lower()
            if word in self.environments:
                return ErpCommand(verb="deploy", environment=word)
            if word in self.services or word == "all":
                envs = "|".join(self.environments)
                raise UsageError(f"Say where to deploy `{word}`: `/erp deploy {word} <{envs}>`.")
            guess = closest(word, self.environments + self.services + ["all"])
            hint = f"did you mean `{guess}`?" if guess else "name a service and an environment."
            shown = escape_text(args[0][:40].replace("`", "'"))
            raise UsageError(f"Unknown service or environment `{shown}`: {hint} {_usage('deploy')}")
        service = self._service(args[0], "deploy", allow_all=True)
        env = self._environment(args[1], "deploy")
        if len(args) > 2 and args[2].lower() in ("break-glass", "breakglass", "break_glass"):
            reason = self._reason(args[3:])
            if not reason:
                raise UsageError(f"Breaking the glass needs a reason: `/erp deploy {service} {env} break-glass"
                                 ' "INC-42 payments fix"`.')
            return ErpCommand(verb="deploy", service=service, environment=env, break_glass=reason)
        self._too_many(args, 2, "deploy")
        return ErpCommand(verb="deploy", service=service, environment=env)

    @staticmethod
    def _reason(words: list[str]) -> str | None:
        reason = " ".join(words).strip()
        if len(reason) > MAX_REASON:
            raise UsageError(f"The reason is {len(reason)} characters long; keep it under {MAX_REASON}.")
        return reason or None

    def _lock(self, args: list[str]) -> ErpCommand:
        if not args:
            raise UsageError(f"Say which environment to lock. {_usage('lock')}")
        env = self._environment(args[0], "lock")
        rest, duration = args[1:], None
        if rest and rest[0].lower() == "for":
            if len(rest) < 2 or duration_seconds(rest[1]) is None:
                shown = escape_text((rest[1] if len(rest) > 1 else "")[:20].replace("`", "'"))
                raise UsageError(f"`for {shown}` is not a duration: say `for 30m`, `for 2h` or `for 1d`.")
            duration, rest = duration_seconds(rest[1]), rest[2:]
        elif rest and duration_seconds(rest[0]) is not None:
            duration, rest = duration_seconds(rest[0]), rest[1:]
        if duration is not None and duration > self.max_lock:
            raise UsageError(f"A lock lasts at most {self.max_lock // 3600}h; say `for {self.max_lock // 3600}h`"
                             " or less, and lock again when it runs out.")
        return ErpCommand(verb="lock", environment=env, duration=duration, reason=self._reason(rest))

    def _promote(self, args: list[str]) -> ErpCommand:
        if self.promotion is None:
            raise UsageError("Promotion is not configured: set `promotion: {from: dev, to: prod}` in the bot's config.")
        if not args:
            return ErpCommand(verb="promote")
        service = self._service(args[0], "promote")
        rest, env = args[1:], self.promotion.target
        if rest and rest[0].lower() == "to":
            if len(rest) < 2:
                raise UsageError(f"Say where to: `/erp promote {service} to {self.promotion.target}`.")
            env = self._environment(rest[1], "promote")
            rest = rest[2:]
        elif rest and rest[0].lower() in self.environments:
            env, rest = rest[0].lower(), rest[1:]
        if env != self.promotion.target:
            raise UsageError(f"Promotion goes from {self.promotion.source} to {self.promotion.target}; to deploy"
                             f" to {env}, use `/erp deploy {service} {env}`.")
        if not rest:
            return ErpCommand(verb="promote", service=service, environment=env)
        # `override <reason>` (the soak time) and `break-glass <reason>` (a freeze), either or both, any order
        kinds = {"override": "override", "break-glass": "break_glass", "breakglass": "break_glass",
                 "break_glass": "break_glass"}
        if rest[0].lower() not in kinds:
            self._too_many(rest, 0, "promote")
        reasons: dict[str, str] = {}
        # the other keyword starts a second reason only right after a one-word or quoted first reason: in
        # `break-glass customers cannot override their address` it is part of the reason, not an override
        second = 2 if len(rest) > 2 and rest[2].lower() in kinds else None
        starts = [0, *([second] if second else []), len(rest)]
        for start, end in itertools.pairwise(starts):
            keyword = rest[start].lower()
            if kinds[keyword] in reasons:
                raise UsageError(f"Say `{keyword}` once, with its reason: `/erp promote {service} {keyword}"
                                 ' "INC-42 fix"`.')
            reason = self._reason(rest[start + 1:end])
            if not reason:
                raise UsageError(f"`{keyword}` needs a reason: `/erp promote {service} {keyword} \"INC-42 fix\"`.")
            reasons[kinds[keyword]] = reason
        return ErpCommand(verb="promote", service=service, environment=env, override=reasons.get("override"),
                          break_glass=reasons.get("break_glass"))

    def _unlock(self, args: list[str]) -> ErpCommand:
        if not args:
            raise UsageError(f"Say which environment to unlock. {_usage('unlock')}")
        self._too_many(args, 1, "unlock")
        return ErpCommand(verb="unlock", environment=self._environment(args[0], "unlock"))

    def _locks(self, args: list[str]) -> ErpCommand:
        self._too_many(args, 0, "locks")
        return ErpCommand(verb="locks")

    def _drift(self, args: list[str]) -> ErpCommand:
        self._too_many(args, 1, "drift")
        return ErpCommand(verb="drift", environment=self._environment(args[0], "drift") if args else None)

    def _freeze(self, args: list[str]) -> ErpCommand:
        self._too_many(args, 1, "freeze")
        return ErpCommand(verb="freeze", environment=self._environment(args[0], "freeze") if args else None)

    def _rollback(self, args: list[str]) -> ErpCommand:
        if not args:
            raise UsageError(f"Say what to roll back. {_usage('rollback')}")
        first = args[0].lower()
        if first in self.environments:
            if len(args) != 2:
                raise UsageError(
                    f"A whole-release rollback needs the revision: `/erp rollback {first} <revision>`."
                    " See `/erp history` for revisions.")
            return ErpCommand(verb="rollback", environment=first, revision=self._revision(args[1], "rollback"))
        service = self._service(args[0], "rollback")
        if len(args) < 2:
            envs = "|".join(self.environments)
            raise UsageError(f"Say where to roll back `{service}`: `/erp rollback {service} <{envs}>`.")
        env = self._environment(args[1], "rollback")
        revision = self._revision(args[2], "rollback") if len(args) >= 3 else None
        self._too_many(args, 3, "rollback")
        return ErpCommand(verb="rollback", service=service, environment=env, revision=revision)

    def _logs(self, args: list[str]) -> ErpCommand:
        if not args:
            raise UsageError(f"Say which service's logs. {_usage('logs')}")
        service = self._service(args[0], "logs")
        rest = args[1:]
        env = None
        if rest and rest[0].lower() in self.environments:
            env = rest.pop(0).lower()
        elif rest and self._is_env_typo(rest[0]) and not _looks_like_time(rest[0]):
            raise _unknown("environment", rest[0], self.environments, "logs")
        if rest and rest[0].lower() == "stats":
            self._too_many(rest, 1, "logs")
            return ErpCommand(verb="logs", service=service, environment=env, stats=True)
        since = None
        if rest and _looks_like_time(rest[0]):
            since = parse_since(rest.pop(0))
        filter_text = " ".join(rest).strip() or None
        if filter_text is not None and len(filter_text) > _MAX_FILTER:
            raise UsageError(f"The filter is {len(filter_text)} characters long; keep it under {_MAX_FILTER}.")
        return ErpCommand(verb="logs", service=service, environment=env, since=since, filter=filter_text)

    def _scan(self, args: list[str]) -> ErpCommand:
        self._too_many(args, 2, "scan")
        if not args:
            raise UsageError(f"Say which service's image to scan. {_usage('scan')}")
        service = self._service(args[0], "scan")
        tag = None
        if len(args) == 2 and args[1].lower() != "latest":
            if not (TAG.match(args[1]) or _DIGEST.match(args[1])):
                raise UsageError(f"`{args[1][:40]}` is not an image tag or sha256 digest. {_usage('scan')}")
            tag = args[1]
        return ErpCommand(verb="scan", service=service, tag=tag)

    def _status(self, args: list[str]) -> ErpCommand:
        self._too_many(args, 1, "status")
        env = self._environment(args[0], "status") if args else None
        return ErpCommand(verb="status", environment=env)

    def _history(self, args: list[str]) -> ErpCommand:
        self._too_many(args, 4, "history")
        service = env = None
        since: TimeWindow | None = None
        export = False
        for token in args:
            word = token.lower()
            if word in self.services and service is None:
                service = word
            elif word in self.environments and env is None:
                env = word
            elif word == "csv" and not export:
                export = True
            elif since is None and (_DURATION.match(word) or word[:1].isdigit()):
                since = parse_since(word)
            else:
                raise _unknown("service or environment", token, self.services + self.environments, "history")
        if export and env is None:
            raise UsageError(f"Say which environment to export: `/erp history {service + ' ' if service else ''}"
                             f"<{'|'.join(self.environments)}> 30d csv`.")
        return ErpCommand(verb="history", service=service, environment=env, since=since, export=export)
