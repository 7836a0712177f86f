"""CodePipeline calls that need more than one line: finding an execution's open approval."""

from __future__ import annotations

from bot.aws.clients import AwsClients

APPROVAL_STAGE = "Approval"  # the stage and its manual-approval action (infra/pipeline.json)


async def approval_token(aws: AwsClients, pipeline: str, execution_id: str) -> str | None:
    """The token PutApprovalResult needs for this execution's open approval; None if it has none open."""
    state = await aws.call("codepipeline", "get_pipeline_state", name=pipeline)
    for stage in state.get("stageStates", []):
        if stage.get("stageName") != APPROVAL_STAGE:
            continue
        if (stage.get("latestExecution") or {}).get("pipelineExecutionId") != execution_id:
            return None  # the stage holds another execution's approval
        for action in stage.get("actionStates", []):
            token = (action.get("latestExecution") or {}).get("token")
            if token:
                return str(token)
    return None
