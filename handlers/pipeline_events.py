"""Pipeline, build and scan events from the queue -> the deploy card and its thread.

Executions not started from Slack (a push) get a card too, in the channel of
the environment their variables name, or the dev channel.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from slack_sdk.errors import SlackApiError

from bot.aws.clients import BotoCoreError, ClientError, error_code
from bot.aws.codepipeline import APPROVAL_STAGE, approval_token, execution_facts
from bot.aws.ecr_scans import fetch_scan_report
from bot.aws.state import AuditRecord
from bot.delivery.access_policy import mention_list
from bot.delivery.deploy_card import DeployCard, ThreadNote, apply_event, severity_line
from bot.delivery.image_tag import short_tag
from bot.delivery.pipeline_events import PipelineEvent
from bot.delivery.scan_report import ScanReport, finding_line, severity_counts, verdict
from bot.jsonlog import log_fields
from bot.runtime import Runtime
from bot.slack.channel_membership import UNPOSTABLE
from bot.slack.deploy_card_blocks import CARD_EVENT_TYPE
from handlers.alarms import handle_alarm
from handlers.approval_reminders import supersede_older

log = logging.getLogger(__name__)
EXECUTION_ID = re.compile(r"^[0-9a-zA-Z-]{1,100}$")  # CodePipeline's execution ids

IMAGE_INDEX_TTL = 14 * 86400
HISTORY_LOOKBACK = timedelta(hours=6)  # a build scans its images within minutes of its start
CLOCK_SKEW = timedelta(minutes=1)  # event times have whole seconds; AWS's clocks differ a little
POST_LEASE = timedelta(seconds=15)  # how long one replica may take to post a card before another tries
POST_POLL_SECONDS = 0.5


class CardNotPosted(Exception):
    """The event waits (it comes back from the queue) until the card it belongs to has its message."""


def image_key(repository: str, tag: str) -> tuple[str, str]:
    return f"IMAGE#{repository}", tag


def _blank(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


async def ensure_card(runtime: Runtime, execution_id: str) -> tuple[DeployCard, dict[str, Any]] | None:
    """The execution's card (and its stored item), created from its own variables if nobody made it yet;
    a push's card gets its message posted if it has none yet (its poster may have died)."""
    loaded = await runtime.cards.load(execution_id) or await _create_card(runtime, execution_id)
    if loaded is not None and loaded[0].ts is None and loaded[0].trigger == "push":
        await _post_card(runtime, execution_id)
        loaded = await runtime.cards.load(execution_id)
    return loaded


async def _create_card(runtime: Runtime, execution_id: str) -> tuple[DeployCard, dict[str, Any]] | None:
    """A card from the execution's own variables (a push has none of Slack's); None if the pipeline has no such
    execution."""
    execution = await execution_facts(runtime.aws, runtime.config.pipeline, execution_id)
    if execution is None:
        log.info("event for an execution the pipeline does not know: %s", execution_id)
        return None
    variables = execution["variables_by_name"]
    env = runtime.config.execution_environment(variables)
    environment = runtime.config.environments[env]
    ts = _blank(variables.get("SLACK_THREAD_TS"))
    card = DeployCard(
        execution_id=execution_id, pipeline=runtime.config.pipeline, environment=env,
        service=_blank(variables.get("SERVICE")) or "changed",
        channel=_blank(variables.get("SLACK_CHANNEL")) or environment.channel,
        requested_by=_blank(variables.get("REQUESTED_BY")), ts=ts, trigger="slack" if ts else "push",
        needs_approval=environment.approval)
    revisions = execution.get("artifactRevisions") or []
    if revisions and revisions[0].get("revisionId"):
        card.commit = str(revisions[0]["revisionId"])
    if await runtime.cards.create(card) and card.commit:
        await _index_images(runtime, card)
    return await runtime.cards.load(execution_id)


async def _post_card(runtime: Runtime, execution_id: str) -> None:
    """Post a push's card once, across replicas: one takes a lease on the card and posts; if it dies on
    the way, the others wait the lease out, and the next one first looks for the message it may have posted.
    Waiting (rare: only after a crash) keeps this event until the card has its message."""
    earlier: str | None = None
    won = False

    def take_lease(c: DeployCard) -> bool:  # mutate may call it again on a conflict: the last call counts
        nonlocal earlier, won
        now = datetime.now(UTC)
        earlier, won = c.posting_since, False
        if c.ts or (c.posting_since and datetime.fromisoformat(c.posting_since) > now - POST_LEASE):
            return False  # posted, or another replica is posting it right now
        c.posting_since, won = now.isoformat(timespec="seconds"), True
        return True

    deadline = time.monotonic() + 2 * POST_LEASE.total_seconds()
    while True:
        result = await runtime.cards.mutate(execution_id, take_lease)
        if result is None or result[0].ts or won:
            break
        if time.monotonic() > deadline:
            raise CardNotPosted(f"the card of {execution_id} is still being posted by another replica")
        await asyncio.sleep(POST_POLL_SECONDS)
    if result is None or not won:
        return
    card = result[0]
    ts = await _find_posted_card(runtime, card) if earlier else None
    if ts is None:
        try:
            ts = await runtime.cards.post_message(card)
        except SlackApiError as e:
            if e.response.get("error") not in UNPOSTABLE:
                raise
            # not for retrying into the dead-letter queue: the card stays unposted, and the sweeper (or the
            # execution's next event) posts it once someone has invited the bot; the log and /metrics say where
            await runtime.cards.mutate(execution_id, _release_lease)
            await runtime.state.mark_card_waiting(execution_id)
            runtime.membership.saw(card.channel, False)
            log.warning("could not post the card of %s in %s (%s): %s", execution_id,
                        runtime.membership.label(card.channel), e.response.get("error"),
                        runtime.membership.invite_hint(card.channel),
                        extra=log_fields(execution_id=execution_id, channel=card.channel))
            return
        runtime.membership.saw(card.channel, True)
    # a slow poster whose lease ran out: another replica's card is the card; ours goes
    await runtime.cards.record_message(card, ts, replacing=None)


def _release_lease(c: DeployCard) -> None:
    c.posting_since = None


async def _find_posted_card(runtime: Runtime, card: DeployCard) -> str | None:
    """The card's message, if a replica posted it and died before it could note where."""
    history = await runtime.slack.conversations_history(channel=card.channel, limit=200, include_all_metadata=True)
    for message in history.get("messages") or []:
        meta = message.get("metadata") or {}
        if meta.get("event_type") == CARD_EVENT_TYPE and \
                (meta.get("event_payload") or {}).get("execution_id") == card.execution_id:
            log.info("found the card a replica posted before it stopped", extra=log_fields(ts=message.get("ts")))
            return str(message["ts"])
    return None


def _services_of(card: DeployCard, runtime: Runtime) -> list[str]:
    if card.service in runtime.config.services:
        return [card.service]
    return list(runtime.config.services)


async def _index_images(runtime: Runtime, card: DeployCard) -> None:
    """Remember which execution builds the images of this commit, so their scan events find its card."""
    assert card.commit
    for service in _services_of(card, runtime):
        pk, sk = image_key(runtime.config.services[service].image_repository, card.commit)
        await runtime.state.put_marker(pk, sk, IMAGE_INDEX_TTL, only_if_absent=False,
                                       execution_id=card.execution_id)


@dataclass
class CardChange:
    """What handling an event did to a card: the consumer syncs the message once per batch."""

    execution_id: str
    notes: list[ThreadNote] = field(default_factory=list)


async def handle_pipeline_event(event: PipelineEvent, runtime: Runtime) -> CardChange | None:
    if event.kind in ("pipeline", "stage", "action") and event.detail.get("pipeline") != runtime.config.pipeline:
        log.debug("event of another pipeline ignored: %s", event.detail.get("pipeline"))
        return None
    if event.kind == "alarm":  # a service's error alarm: answered where its last deploy is
        await handle_alarm(event, runtime)
        return None
    execution_id = event.execution_id
    report: ScanReport | None = None
    if event.kind == "scan":
        findings = _Findings(runtime, event.detail)  # read from ECR only if someone will see them
        await _tell_watchers(runtime, event.detail, findings)
        execution_id = await _execution_of_image(runtime, event)
        if execution_id is None:
            await _scan_without_deploy(runtime, event, findings)
            return None
        report = await findings.get()
    if execution_id is None:
        return None  # a build not started by the pipeline
    if event.kind == "progress":  # a line for a card that exists, never the reason one is made
        loaded = await runtime.cards.load(execution_id) if EXECUTION_ID.match(execution_id) else None
        if loaded is None:
            log.info("progress line for an execution without a card dropped: %r", execution_id[:80])
            return None
    else:
        loaded = await ensure_card(runtime, execution_id)
    if loaded is None:
        return None
    approvers = mention_list(runtime.config.environments[loaded[0].environment].approvers)
    report_text = _report_text(report, _service_of_repository(runtime, report.repository)) if report else None

    def change(c: DeployCard) -> list[ThreadNote]:
        notes = apply_event(c, event, approvers)
        if report_text is not None:  # the thread gets the findings, not only the counts
            notes = [ThreadNote(n.key, report_text) if n.key.startswith("scan:") else n for n in notes]
        c.outbox.extend([n.key, n.text] for n in notes)  # stored with the card: posted later, not lost
        return notes

    waiting = event.kind == "action" and event.stage == APPROVAL_STAGE and event.state == "STARTED"
    other = None
    if waiting and not loaded[0].finished and loaded[0].approval.decision not in ("Approved", "Rejected"):
        # recorded as waiting before any card can show it waiting: a deploy asked in between is refused
        # (handlers/deploy.py), not let through while the token is still being read from CodePipeline
        other = await runtime.state.swap_pending_approval(loaded[0].environment, loaded[0].service, execution_id,
                                                          channel=loaded[0].channel, ts=loaded[0].ts or "")
    result = await runtime.cards.mutate(execution_id, change, loaded)
    if result is None:
        return None
    card, notes = result
    if any(n.key.split("#")[0] == "approval-expired" for n in notes):  # nobody decided: not "rejected"
        await runtime.state.record_audit(AuditRecord(
            actor="pipeline", action="approve", environment=card.environment, service=card.service,
            outcome="expired", detail="nobody decided within 7 days", execution_id=card.execution_id))
    if waiting and not card.approval.token:
        token = await approval_token(runtime.aws, runtime.config.pipeline, execution_id)
        if token:
            def set_token(c: DeployCard) -> None:
                c.approval.token = token
            await runtime.cards.mutate(execution_id, set_token)
    if other and other.get("execution_id") not in (None, execution_id):
        try:  # two executions of the service wait: the one that started first is out of date
            await supersede_older(runtime, card, str(other["execution_id"]))
        except Exception as e:  # its card still shows it waiting; the sweep retries a rejection
            log.warning("could not mark %s superseded: %s", other.get("execution_id"), error_code(e))
    if card.commit and event.kind == "action" and event.stage == "Source":
        await _index_images(runtime, card)
    if card.finished or (card.approval.decision in ("Approved", "Rejected")):
        await runtime.state.clear_pending_approval(card.environment, card.service, card.execution_id)
    return CardChange(execution_id, notes)


async def publish_changes(runtime: Runtime, changes: list[CardChange]) -> None:
    """Hand the touched cards to the background publisher (marked waiting first, durably): Slack's pace no
    longer holds the queue back. Raises if they could not be marked."""
    await runtime.publisher.enqueue(list(dict.fromkeys(change.execution_id for change in changes)))


def _service_of_repository(runtime: Runtime, repository: str) -> str:
    for name, service in runtime.config.services.items():
        if service.image_repository == repository:
            return name
    return repository


def _report_text(report: ScanReport, service: str) -> str:
    image = f"{report.repository}:{short_tag(report.tag or report.digest or '?')}"
    top = "\n".join(finding_line(f) for f in report.top())
    return f":shield: Scan of `{image}` ({service}): {verdict(report)}\n{severity_counts(report.counts)}" + \
        (f"\n{top}" if top else "")


class _Findings:
    """The findings behind a scan event, read from ECR at most once and only when asked for;
    None when ECR cannot give them (the event's own counts still count)."""

    def __init__(self, runtime: Runtime, detail: dict[str, Any]) -> None:
        self.runtime, self.detail = runtime, detail
        self._read = False
        self._report: ScanReport | None = None

    async def get(self) -> ScanReport | None:
        if not self._read:
            self._read = True
            repo = str(self.detail.get("repository-name"))
            tags = self.detail.get("image-tags") or []
            image_id = {"imageTag": str(tags[0])} if tags else {"imageDigest": str(self.detail.get("image-digest"))}
            try:
                self._report = await fetch_scan_report(self.runtime.aws, repo, image_id)
            except (ClientError, BotoCoreError) as e:
                log.info("no findings for %s %s: %s", repo, image_id, error_code(e))
        return self._report


async def _tell_watchers(runtime: Runtime, detail: dict[str, Any], findings: _Findings) -> None:
    repo = str(detail.get("repository-name"))
    for tag in [*(detail.get("image-tags") or []), detail.get("image-digest")]:
        if not tag:
            continue
        marker = await runtime.state.get_marker(f"SCANWATCH#{repo}", str(tag))
        if marker is None:
            continue
        await runtime.state.delete_marker(f"SCANWATCH#{repo}", str(tag))
        service = _service_of_repository(runtime, repo)
        report = await findings.get()
        text = _report_text(report, service) if report else \
            f":shield: Scan of `{repo}:{short_tag(str(tag))}` done: {severity_line(_counts(detail))}"
        await runtime.slack.chat_postEphemeral(channel=str(marker["channel"]), user=str(marker["user"]), text=text)


def _counts(detail: dict[str, Any]) -> dict[str, int]:
    return {str(k).upper(): int(v) for k, v in (detail.get("finding-severity-counts") or {}).items()}


async def _scan_without_deploy(runtime: Runtime, event: PipelineEvent, findings: _Findings) -> None:
    """No deploy is waiting for this image: speak up only if it would be blocked (the team should know)."""
    counts = _counts(event.detail)  # ECR's own counts decide; the findings are read only to be shown
    if not counts.get("CRITICAL"):
        log.info("scan of %s with no deploy in flight: not blocking", event.detail.get("repository-name"))
        return
    report = await findings.get()
    env = "dev" if "dev" in runtime.config.environments else next(iter(runtime.config.environments))
    repo = str(event.detail.get("repository-name"))
    service = _service_of_repository(runtime, repo)
    text = _report_text(report, service) if report else \
        f":no_entry: Scan of `{repo}`: {severity_line(counts)}: an image with CRITICAL findings"
    await runtime.slack.chat_postMessage(channel=runtime.config.environments[env].channel,
                                         text=f"{text}\nNo deploy is using this image yet; the pipeline's scan gate"
                                              " would stop it.", unfurl_links=False)


async def _execution_of_image(runtime: Runtime, event: PipelineEvent) -> str | None:
    """The execution that built the scanned image: from the image index, or, when the scan arrived before
    any other event of its execution (events come in any order), from the pipeline's own history."""
    repo = str(event.detail.get("repository-name"))
    tags = [str(t) for t in event.detail.get("image-tags") or [] if t]
    for tag in [*tags, event.detail.get("image-digest")]:
        if not tag:
            continue
        pk, sk = image_key(repo, str(tag))
        marker = await runtime.state.get_marker(pk, sk)
        if marker:
            return str(marker["execution_id"])
    return await _execution_of_revision(runtime, set(tags), event.time) if tags else None


async def _execution_of_revision(runtime: Runtime, revisions: set[str], at: datetime) -> str | None:
    """The newest execution of one of these commits that started before `at` (the images are tagged with the
    commit), looking back HISTORY_LOOKBACK at most."""
    params: dict[str, Any] = {"pipelineName": runtime.config.pipeline, "maxResults": 100}
    while True:
        page = await runtime.aws.call("codepipeline", "list_pipeline_executions", **params)
        for summary in page.get("pipelineExecutionSummaries", []):
            started = summary.get("startTime")
            if isinstance(started, datetime) and started > at + CLOCK_SKEW:
                continue  # started after the scan: not the build that pushed the image
            if isinstance(started, datetime) and started < at - HISTORY_LOOKBACK:
                return None
            if revisions & {str(r.get("revisionId")) for r in summary.get("sourceRevisions", [])}:
                return str(summary["pipelineExecutionId"])
        if not page.get("nextToken"):
            return None
        params["nextToken"] = page["nextToken"]



async def sweep_waiting_cards(runtime: Runtime) -> None:
    """Cards left waiting longer than a sweep (a replica died before publishing them, or the bot was not in
    the channel): post a push's card if it has none, and publish them again."""
    waiting = await runtime.state.waiting_cards(older_than=runtime.sweep_seconds)
    for execution_id in waiting:
        try:
            await ensure_card(runtime, execution_id)
        except Exception as e:  # the next sweep tries again
            log.warning("could not post the waiting card of %s: %s", execution_id, error_code(e))
    runtime.publisher.schedule(waiting)


async def sweep_forever(runtime: Runtime) -> None:
    while True:
        await asyncio.sleep(runtime.sweep_seconds)
        try:
            await sweep_waiting_cards(runtime)
        except Exception as e:
            log.warning("the sweep of waiting cards failed: %s", error_code(e))
