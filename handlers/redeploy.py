"""Re-deploy via the pipeline: the version the pipeline last deployed to an environment, deployed again.

The drift message's button. What is re-deployed is read now from the pipeline's own record (never from
the message): the image by its digest, at the commit it was deployed from (so the chart and values of that
deploy), with no rebuild: the pipeline takes it as PROMOTE_IMAGE, skips Build and Deploy, and its Promote
action re-checks that it is this environment's last good deploy (build_steps.promotion_gate). It goes
through everything `/erp deploy` does (who may, the lock and the freeze, one waiting approval per service,
a double press); a prod re-deploy waits for the prod approval like any other.
"""

from __future__ import annotations

from slack_bolt.async_app import AsyncRespond

from bot.delivery.command_parser import ErpCommand
from bot.delivery.image_tag import SHA, short_tag, split_ref
from bot.runtime import Runtime
from handlers.deploy import Answer, Audit, Launch, run_deploy
from handlers.erp_command import Invocation


async def redeploy_recorded(service: str, environment: str, who: Invocation, runtime: Runtime,
                            respond: AsyncRespond, expected: str | None = None) -> None:
    """`expected`: the image the button's message was about; refused if the record has moved on since."""
    again = f"`/erp deploy {service} {environment}` builds and deploys it afresh"

    async def prepare(answer: Answer, audit: Audit) -> Launch | None:
        records = (await runtime.state.deploy_records(environment)).get(service, {})
        deployed, undone = records.get("deployed"), records.get("rolled_back") or {}
        if deployed is None:
            await answer(f"The pipeline has not deployed {service} to {environment}: there is no recorded version"
                         f" to re-deploy. {again}.")
            return None
        image = str(deployed.get("image") or "")
        tag, _, digest = image.partition("@")
        if int(undone.get("at", 0)) >= int(deployed.get("at", 0)):  # the recorded version was rolled back since
            await audit("refused", f"rolled back: {undone.get('rolled_back')}"[:200])
            await answer(f":no_entry: {service} `{short_tag(tag)}` was rolled back in {environment}"
                         f" ({undone.get('rolled_back')}): I won't re-deploy it. {again}.")
            return None
        if not digest or split_ref(image) is None:
            await answer(f":no_entry: The record of {service} in {environment} has no image digest (it was deployed"
                         f" before digests were kept), so I can't re-deploy that very image. {again}.")
            return None
        if expected is not None and expected != image:
            await answer(f"The pipeline has deployed {service} to {environment} since (`{short_tag(image)}`): look"
                         " at the drift again before re-deploying.")
            return None
        commit = str(deployed.get("commit") or "")
        if not SHA.match(commit):  # the pipeline would run at main's head: not the chart that deploy used
            await answer(f":no_entry: The record of {service} in {environment} names no commit, so I can't run the"
                         f" pipeline at the one it was deployed from. {again}.")
            return None
        note = (f":arrows_counterclockwise: Re-deploy of the recorded version, asked by <@{who.user_id}>:"
                f" `{short_tag(tag)}` `{digest[:19]}…` from execution `{str(deployed.get('execution', '-'))[:8]}`")
        return Launch(variables={"PROMOTE_IMAGE": f"{service}={image}"}, note=note, verb="Re-deploying",
                      source_commit=commit)

    command = ErpCommand(verb="deploy", service=service, environment=environment)
    await run_deploy(command, who, runtime, respond, action="redeploy", prepare=prepare)
