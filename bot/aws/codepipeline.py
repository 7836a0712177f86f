"""CodePipeline calls that need more than one line: finding an execution's open approval."""

from __future__ import annotations

from typing import Any

from bot.aws.clients import AwsClients, ClientError, error_code

APPROVAL_STAGE = "Approval"  # the stage and its manual-approval action (infra/pipeline.json)


async def execution_facts(aws: AwsClients, pipeline: str, execution_id: str) -> dict[str, Any] | None:
    """GetPipelineExecution: the execution as CodePipeline keeps it (its variables by name, its revisions);
    None if the pipeline has no such execution. What the bot stored about it is checked against this."""
    try:
        resp = await aws.call("codepipeline", "get_pipeline_execution", pipelineName=pipeline,
                              pipelineExecutionId=execution_id)
    except ClientError as e:
        if error_code(e) in ("PipelineExecutionNotFoundException", "PipelineNotFoundException"):
            return None
        raise
    execution = dict(resp["pipelineExecution"])
    execution["variables_by_name"] = {str(v["name"]): str(v.get("resolvedValue", ""))
                                      for v in execution.get("variables", [])}
    return execution


async def approval_token(aws: AwsClients, pipeline: str, execution_id: str) -> str | None:
    """The token PutApprovalResult needs for this execution's open approval; None if it has none open.

    Our pipeline runs in PARALLEL mode, where (botocore's PutApprovalResult documentation) the token
    "is not available" from GetPipelineState: "use the externalExecutionId in the response output from
    the ListActionExecutions action as the token". Each execution's approval is found by its own id,
    whichever execution entered the stage last. A pipeline in another mode still carries the token in
    GetPipelineState, for the execution the stage holds: that is the fallback.
    """
    params: dict[str, Any] = {"pipelineName": pipeline, "filter": {"pipelineExecutionId": execution_id},
                              "maxResults": 100}
    while True:
        page = await aws.call("codepipeline", "list_action_executions", **params)
        for detail in page.get("actionExecutionDetails", []):
            if (detail.get("stageName"), detail.get("actionName"), detail.get("status")) != \
                    (APPROVAL_STAGE, APPROVAL_STAGE, "InProgress"):
                continue
            token = ((detail.get("output") or {}).get("executionResult") or {}).get("externalExecutionId")
            if token:
                return str(token)
        if not page.get("nextToken"):
            break
        params["nextToken"] = page["nextToken"]
    return await _token_in_pipeline_state(aws, pipeline, execution_id)


async def _token_in_pipeline_state(aws: AwsClients, pipeline: str, execution_id: str) -> str | None:
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
