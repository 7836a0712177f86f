"""`/erp promote <service> [to prod]`: deploy to prod the exact image that passed dev, with no rebuild.

The image is the one dev's pipeline deployed last (the records `erp-chatops ci deploy` keeps), pinned by
its ECR digest. Refused in one line when dev's last deploy of it failed, when it has been in dev for less
than the soak time (an approver may override, with a reason), or when that digest has CRITICAL findings.
The pipeline takes the image as PROMOTE_IMAGE: its Build and Deploy stages are skipped (stage conditions)
and its Promote stage deploys it; the prod approval still applies. `/erp promote` alone lists what dev
runs that prod does not, with a Promote button each.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.models.blocks import ButtonElement, SectionBlock

from bot.aws.clients import BotoCoreError, ClientError, error_code
from bot.aws.ecr_scans import fetch_scan_report
from bot.aws.state import AuditRecord
from bot.delivery.command_parser import ErpCommand
from bot.delivery.freeze_calendar import in_words
from bot.delivery.image_tag import SHA, short_tag, split_ref
from bot.delivery.scan_report import severity_counts
from bot.jsonlog import log_fields
from bot.runtime import Runtime
from handlers.deploy import Answer, Audit, Launch, run_deploy
from handlers.erp_command import Invocation, over_limit

log = logging.getLogger(__name__)

PROMOTE_ACTION = "promote_service"


def _image(record: dict[str, Any] | None) -> str:
    """The image a deploy record names: `tag@sha256:<digest>` as the build pushed and the scan gate passed it
    (or a bare tag, from records made before digests were kept); "" if none."""
    ref = str((record or {}).get("image") or (record or {}).get("commit") or "")
    return ref if split_ref(ref) else ""


def _tag(record: dict[str, Any] | None) -> str:
    return _image(record).partition("@")[0]


def _rollback_since(records: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The rollback record, when a rollback came after the environment's last good deploy (or there is none)."""
    deployed, undone = records.get("deployed"), records.get("rolled_back")
    if undone is not None and int(undone.get("at", 0)) >= int((deployed or {}).get("at", 0)):
        return undone
    return None


def _undone(records: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]] | None:
    """Why an environment's last good deploy of a service is not what it runs well now, and the record that
    says so: its last attempt failed or was rolled back, or a rollback came after it (the buildspec's
    promotion_gate reads the same records)."""
    attempt = records.get("attempt")
    if attempt is not None and not attempt.get("ok", True):
        return ("was rolled back" if attempt.get("rolled_back") else "failed"), attempt
    rollback = _rollback_since(records)
    if rollback is not None and records.get("deployed") is not None:
        return "was rolled back", rollback
    return None


def _running(records: dict[str, dict[str, Any]]) -> str:
    """The tag an environment runs now by its records: its last good deploy, or what a rollback since put back."""
    rollback = _rollback_since(records)
    return str(rollback.get("image") or "").partition("@")[0] if rollback is not None else _tag(records.get("deployed"))


def _rolled_back_from(records: dict[str, dict[str, Any]]) -> str:
    """The tag an environment rolled back from: its last good deploy, when a rollback came after it; or ""."""
    deployed = records.get("deployed")
    return _tag(deployed) if deployed is not None and _rollback_since(records) is not None else ""


def _ago(epoch: Any) -> str:
    return in_words(timedelta(seconds=max(0, time.time() - int(epoch or 0))))


def _image_exists(runtime: Runtime, repository: str, digest: str) -> None:
    runtime.aws.client("ecr").describe_images(repositoryName=repository, imageIds=[{"imageDigest": digest}])


async def promote(command: ErpCommand, who: Invocation, runtime: Runtime, respond: AsyncRespond,
                  expected: str | None = None) -> None:
    """`expected`: the image a Promote button showed; refused if dev has moved on since."""
    if command.service is None:
        await _list(runtime, respond)
        return
    assert runtime.config.promotion is not None  # the parser refuses `/erp promote` without it
    source, service = runtime.config.promotion.source, command.service
    repository = runtime.config.services[service].image_repository

    async def prepare(answer: Answer, audit: Audit) -> Launch | None:
        records = (await runtime.state.deploy_records(source)).get(service, {})
        deployed = records.get("deployed")
        if deployed is None:
            await answer(f"The pipeline has not deployed {service} to {source} yet: there is nothing to promote."
                         f" Deploy it there first: `/erp deploy {service} {source}`.")
            return None
        undone = _undone(records)
        if undone is not None:
            how, record = undone
            await audit("refused", f"{source}'s last change failed or was rolled back")
            what = (f"was rolled back ({record['rolled_back']})" if how == "was rolled back"
                    else f"failed (`{short_tag(_tag(record))}`)")
            await answer(f":no_entry: {source}'s last deploy of {service} {what}, {_ago(record.get('at'))} ago:"
                         f" deploy it to {source} again first; nothing was started.")
            return None
        image = _image(deployed)
        tag, _, digest = image.partition("@")
        if not digest:
            await answer(f":no_entry: {source}'s record of {service} `{short_tag(tag)}` has no image digest (it was"
                         f" deployed before digests were kept): deploy it to {source} again first.")
            return None
        target = (await runtime.state.deploy_records(command.environment or "")).get(service, {})
        if tag and _rolled_back_from(target) == tag:
            rollback = target["rolled_back"]
            await audit("refused", f"{command.environment} rolled it back")
            await answer(f":no_entry: {command.environment} rolled {service} `{short_tag(tag)}` back"
                         f" {_ago(rollback.get('at'))} ago ({rollback.get('rolled_back')}): I won't promote it again."
                         f" Deploy a fix to {source} first, or `/erp deploy {service} {command.environment}`.")
            return None
        if expected is not None and expected != image:
            await answer(f"{source} has moved on since that list (it now runs {service} `{short_tag(image)}`):"
                         " send `/erp promote` again.")
            return None
        soaked = time.time() - int(deployed.get("at", 0))
        soak = runtime.config.promotion.soak_seconds if runtime.config.promotion else 0
        audits: tuple[AuditRecord, ...] = ()
        if soaked < soak:
            if not command.override:
                await audit("refused", "soak")
                wait, left = in_words(timedelta(seconds=soak)), in_words(timedelta(seconds=soak - soaked))
                await answer(f":hourglass: {service} `{short_tag(tag)}` has been in {source} for"
                             f" {_ago(deployed.get('at'))}; promotions wait {wait} (another {left})."
                             " An approver can override:"
                             f" `/erp promote {service} override <reason>`.")
                return None
            decision = await runtime.policy.is_approver(who.user_id, command.environment or "",
                                                        "You can't override the soak time: only")
            if not decision:
                await audit("refused", f"override: {decision.reason}"[:200])
                await answer(f":no_entry: {decision.reason}")
                return None
            audits = (AuditRecord(actor=who.user_id, action="soak_override", environment=command.environment or "",
                                  service=service, outcome="ok", detail=command.override[:200]),)
        try:  # the very image dev ran, by its digest: whatever the tag points to now
            await asyncio.to_thread(_image_exists, runtime, repository, digest)
            report = await fetch_scan_report(runtime.aws, repository, {"imageDigest": digest})
        except (ClientError, BotoCoreError) as e:
            code = error_code(e)
            why = {"ImageNotFoundException": f"`{repository}@{digest[:19]}` is no longer in ECR",
                   "ScanNotFoundException": f"`{repository}@{digest[:19]}` has never been scanned"}.get(
                code, f"ECR answered `{code}`")
            await audit("refused", code)
            await answer(f":no_entry: {why}, so it cannot be promoted; nothing was started.")
            return None
        if report.pending or report.failed or report.counts.get("CRITICAL", 0):
            state = ("still being scanned" if report.pending else "could not be scanned" if report.failed
                     else f"has {report.counts['CRITICAL']} CRITICAL finding(s)")
            await audit("refused", f"scan: {state}")
            await answer(f":no_entry: `{repository}:{short_tag(tag)}` ({digest[:19]}) {state}: not promoting it."
                         f" `/erp scan {service} {digest}` shows the findings.")
            return None
        execution = str(deployed.get("execution") or "-")
        note = (f":arrow_double_up: Promoted from {source}: execution `{execution[:8]}`, image `{short_tag(tag)}`"
                f" `{digest[:19]}…`, scan {severity_counts(report.counts)}, {_ago(deployed.get('at'))} in {source}")
        if audits:
            note += f" · soak overridden by <@{who.user_id}>"
        commit = str(deployed.get("commit") or "")
        if not SHA.match(commit):  # the pipeline would run at main's head: not the chart dev ran with
            await answer(f":no_entry: {source}'s record of {service} names no commit (`{commit[:40]}`), so I can't"
                         f" run the promotion at the commit {source} ran; deploy it to {source} again first.")
            return None
        return Launch(variables={"PROMOTE_IMAGE": f"{service}={image}"}, note=note, audits=audits,
                      source_commit=commit)

    await run_deploy(command, who, runtime, respond, action="promote", prepare=prepare)


async def _list(runtime: Runtime, respond: AsyncRespond) -> None:
    """What the source runs that the target does not, newest first, with a Promote button each; a service
    whose last change in the source failed or was rolled back is listed without one, saying why."""
    assert runtime.config.promotion is not None
    source, target = runtime.config.promotion.source, runtime.config.promotion.target
    there, here = await runtime.state.deploy_records(source), await runtime.state.deploy_records(target)
    rows: list[tuple[int, str, str | None]] = []  # (when, the line, the button's value or None)
    for service in runtime.config.services:
        records = there.get(service, {})
        deployed = records.get("deployed")
        if deployed is None:
            continue
        undone = _undone(records)
        if undone is not None:
            how, record = undone
            how = f"{source}'s last deploy failed" if how == "failed" else f"{source} was rolled back"
            rows.append((int(record.get("at", 0)), f"*{service}*: {how} {_ago(record.get('at'))} ago · not"
                         f" promotable until it is deployed to {source} again", None))
            continue
        dev_tag, prod_tag = _tag(deployed), _running(here.get(service, {}))
        if dev_tag and dev_tag == _rolled_back_from(here.get(service, {})):
            rollback = here[service]["rolled_back"]
            rows.append((int(deployed.get("at", 0)), f"*{service}*: {source} `{short_tag(dev_tag)}` · {target} rolled"
                         f" it back {_ago(rollback.get('at'))} ago · not promotable until {source} has a newer one",
                         None))
            continue
        if dev_tag and dev_tag != prod_tag:
            rows.append((int(deployed.get("at", 0)),
                         f"*{service}*: {source} `{short_tag(dev_tag)}` · {target} `{short_tag(prod_tag) or 'none'}`"
                         f" · {_ago(deployed.get('at'))} in {source}", f"{service}={_image(deployed)}"))
    if not rows:
        await respond(response_type="ephemeral", replace_original=True,
                      text=f"{target} runs everything {source} runs: nothing to promote.")
        return
    blocks: list[dict[str, Any]] = [SectionBlock(text=f"*{source} runs, {target} does not:*").to_dict()]
    for _, line, value in sorted(rows, key=lambda row: row[0], reverse=True):
        button = ButtonElement(text="Promote", action_id=PROMOTE_ACTION, value=value) if value else None
        blocks.append(SectionBlock(text=line, accessory=button).to_dict())
    promotable = sum(1 for row in rows if row[2])
    await respond(response_type="ephemeral", replace_original=True, blocks=blocks[:50],
                  text=f"{promotable} service(s) to promote from {source} to {target}")


def register(app: AsyncApp, runtime: Runtime) -> None:
    async def ack_click(ack: AsyncAck) -> None:
        await ack()

    async def from_list(body: dict[str, Any], respond: AsyncRespond) -> None:
        service, _, shown = str(body["actions"][0].get("value", "")).partition("=")
        if service not in runtime.config.services or runtime.config.promotion is None:
            return
        who = Invocation.from_click(body)

        async def answer(text: str) -> None:
            await respond(response_type="ephemeral", replace_original=False, text=text)

        if runtime.draining:
            await answer("I'm restarting; press Promote again in a few seconds.")
            return
        try:  # as `/erp promote <service>`: the same limits and the same one-line answers
            refusal = await over_limit(runtime, who.user_id, "changes")
            if refusal is not None:
                await answer(refusal)
                return
            command = ErpCommand(verb="promote", service=service, environment=runtime.config.promotion.target)
            await promote(command, who, runtime, respond, expected=shown)
        except Exception as e:
            log.warning("the Promote button failed: %s", error_code(e),
                        extra=log_fields(user=who.user_id, service=service))
            await answer(f":warning: Promoting {service} stopped on my side ({error_code(e)}); nothing more was"
                         f" done. Try `/erp promote {service}` in a minute.")

    app.action(PROMOTE_ACTION)(ack=ack_click, lazy=[runtime.work.track(from_list)])
