"""`/erp scan <service> [tag|latest]`: the ECR scan summary of an image and its verdict."""

from __future__ import annotations

import asyncio
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.models.blocks import ActionsBlock, ButtonElement, SectionBlock

from bot.aws.clients import BotoCoreError, ClientError, error_code
from bot.aws.ecr_scans import fetch_scan_report
from bot.delivery.command_parser import ErpCommand
from bot.delivery.image_tag import short_tag
from bot.runtime import Runtime
from bot.slack.scan_blocks import report_blocks
from handlers.erp_command import Invocation

NOTIFY_ACTION = "scan_notify_when_done"
WATCH_TTL = 3600  # a scan that has not finished in an hour has failed


def watch_key(repository: str, tag: str) -> tuple[str, str]:
    return f"SCANWATCH#{repository}", tag


def _latest_image(runtime: Runtime, repository: str) -> dict[str, Any] | None:
    paginator = runtime.aws.client("ecr").get_paginator("describe_images")
    newest: dict[str, Any] | None = None
    for page in paginator.paginate(repositoryName=repository, filter={"tagStatus": "TAGGED"}):
        for image in page.get("imageDetails", []):
            if newest is None or image["imagePushedAt"] > newest["imagePushedAt"]:
                newest = image
    return newest


def _recent_tags(runtime: Runtime, repository: str, n: int = 3) -> list[str]:
    resp = runtime.aws.client("ecr").describe_images(repositoryName=repository, filter={"tagStatus": "TAGGED"})
    images = sorted(resp.get("imageDetails", []), key=lambda i: i["imagePushedAt"], reverse=True)
    return [short_tag(i["imageTags"][0]) for i in images[:n] if i.get("imageTags")]


async def scan(command: ErpCommand, who: Invocation, runtime: Runtime, respond: AsyncRespond) -> None:
    assert command.service is not None
    repository = runtime.config.services[command.service].image_repository

    async def answer(text: str, blocks: list[dict[str, Any]] | None = None) -> None:
        await respond(response_type="ephemeral", replace_original=True, text=text, blocks=blocks)

    try:
        if command.tag is None:
            latest = await asyncio.to_thread(_latest_image, runtime, repository)
            if latest is None:
                await answer(f"`{repository}` has no tagged images yet: nothing to scan.")
                return
            tag = str(latest["imageTags"][0])
        else:
            tag = command.tag
        image_id = {"imageDigest": tag} if tag.startswith("sha256:") else {"imageTag": tag}
        report = await fetch_scan_report(runtime.aws, repository, image_id)
    except ClientError as e:
        code = error_code(e)
        if code == "RepositoryNotFoundException":
            await answer(f"The ECR repository `{repository}` does not exist: check `services.{command.service}"
                         ".image_repository` in the bot's config.")
        elif code == "ImageNotFoundException":
            recent = await asyncio.to_thread(_recent_tags, runtime, repository)
            hint = f" Recent tags: {', '.join(f'`{t}`' for t in recent)}." if recent else ""
            await answer(f"No image `{command.tag}` in `{repository}`.{hint} Or try `/erp scan {command.service}`"
                         " for the latest.")
        elif code == "ScanNotFoundException":
            await answer(f"`{repository}:{short_tag(command.tag or 'latest')}` has not been scanned. The pipeline scans"
                         " every image it builds; images pushed by hand are scanned on push when the repository"
                         " has scan-on-push.")
        else:
            await answer(f":warning: ECR answered `{code}`; try again in a minute.")
        return
    except BotoCoreError as e:
        await answer(f":warning: I can't reach ECR right now ({type(e).__name__}); try again in a minute.")
        return
    if report.pending:
        button = ButtonElement(text="Post the result here when done", action_id=NOTIFY_ACTION,
                               value=f"{repository} {tag}")
        blocks = [SectionBlock(text=f":hourglass_flowing_sand: The scan of `{repository}:{short_tag(tag)}` is still"
                                    f" {report.status.lower().replace('_', ' ')}."),
                  ActionsBlock(elements=[button])]
        await answer("The scan is still running.", [b.to_dict() for b in blocks])
        return
    outcome = "the scan failed" if report.failed else "blocks the gate" if report.blocking else "passes the gate"
    await answer(f"Scan of {repository}:{short_tag(tag)}: {outcome}", report_blocks(report, command.service))


def register(app: AsyncApp, runtime: Runtime) -> None:
    async def ack_click(ack: AsyncAck) -> None:
        await ack()

    async def watch(body: dict[str, Any], respond: AsyncRespond) -> None:
        repository, _, tag = str(body["actions"][0]["value"]).partition(" ")
        await runtime.state.put_marker(*watch_key(repository, tag), WATCH_TTL, only_if_absent=False,
                                       user=body["user"]["id"], channel=body.get("channel", {}).get("id", ""))
        await respond(response_type="ephemeral", replace_original=True,
                      text=f"I'll post the scan of `{repository}:{short_tag(tag)}` here when it is done.")

    app.action(NOTIFY_ACTION)(ack=ack_click, lazy=[runtime.work.track(watch)])
