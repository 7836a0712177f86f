"""The Terraform module, parsed and cross-checked with the code that relies on it."""

from __future__ import annotations

import ast
import functools
import json
import re
from pathlib import Path
from typing import Any

import hcl2
import yaml

from bot.delivery.pipeline_events import KNOWN, PROGRESS
from bot.event_consumer import RECEIVES_BEFORE_DEAD_LETTER, backoff
from sandbox.seed import EVENTS_QUEUE, SLACK_SECRET_ID, STATE_TABLE
from tests.support import ROOT

MODULE = ROOT / "infra" / "terraform" / "erp-dev-ChatOps"
DECLARATION = json.loads((ROOT / "infra" / "pipeline.json").read_text())["pipeline"]
NO_RESOURCE_LEVEL = {"logs:GetQueryResults", "logs:StopQuery"}  # IAM offers only "*" for these


def unquote(value: Any) -> Any:
    """python-hcl2 keeps HCL's quotes; strip them, recursively."""
    if isinstance(value, str):
        return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value
    if isinstance(value, list):
        return [unquote(v) for v in value]
    if isinstance(value, dict):
        return {unquote(k): unquote(v) for k, v in value.items() if k != "__is_block__"}
    return value


def terraform() -> dict[str, dict[str, Any]]:
    """{"resource.type.name": body, "data.type.name": body} over every .tf file of the module."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(MODULE.glob("*.tf")):
        parsed = unquote(hcl2.load(path.open()))
        for kind in ("resource", "data"):
            for entry in parsed.get(kind, []):
                for rtype, named in entry.items():
                    for name, body in named.items():
                        found[f"{kind}.{rtype}.{name}"] = body
    return found


TF = terraform()


def test_pipeline_matches_the_declaration_the_sandbox_runs():
    pipe = TF["resource.aws_codepipeline.erp"]
    assert pipe["pipeline_type"] == DECLARATION["pipelineType"] == "V2"
    assert pipe["execution_mode"] == DECLARATION["executionMode"]
    assert [(v["name"], v["default_value"]) for v in pipe["variable"]] == \
        [(v["name"], v["defaultValue"]) for v in DECLARATION["variables"]]
    assert [v["name"] for v in pipe["variable"]] == ["SERVICE", "ENVIRONMENT", "REQUESTED_BY", "SLACK_CHANNEL",
                                                     "SLACK_THREAD_TS", "PROMOTE_IMAGE"]
    assert [s["name"] for s in pipe["stage"]] == [s["name"] for s in DECLARATION["stages"]] == \
        ["Source", "Build", "Approval", "Deploy", "Promote"]
    # issue 19: a promotion skips Build and Deploy and runs Promote; every stage's entry condition agrees
    for tf_stage, decl_stage in zip(pipe["stage"], DECLARATION["stages"], strict=True):
        declared = decl_stage.get("beforeEntry", {}).get("conditions", [])
        in_tf = [c for entry in tf_stage.get("before_entry", []) for c in entry["condition"]]
        assert [(c["result"], [(r["name"], r["ruleTypeId"]["provider"], r["configuration"]) for r in c["rules"]])
                for c in declared] == \
            [(c["result"], [(r["name"], r["rule_type_id"][0]["provider"], r["configuration"]) for r in c["rule"]])
             for c in in_tf], decl_stage["name"]
    for tf_stage, decl_stage in zip(pipe["stage"], DECLARATION["stages"], strict=True):
        [tf_action] = tf_stage["action"]
        [decl_action] = decl_stage["actions"]
        assert tf_action["name"] == decl_action["name"]
        assert (tf_action["category"], tf_action["provider"]) == \
            (decl_action["actionTypeId"]["category"], decl_action["actionTypeId"]["provider"])
    [approval] = [s for s in pipe["stage"] if s["name"] == "Approval"]
    [condition] = approval["before_entry"][0]["condition"]
    rule = condition["rule"][0]
    assert condition["result"] == "SKIP" and rule["rule_type_id"][0]["provider"] == "VariableCheck"
    assert rule["configuration"] == {"Variable": "#{variables.ENVIRONMENT}", "Value": "prod", "Operator": "EQ"}
    decl_rule = DECLARATION["stages"][2]["beforeEntry"]["conditions"][0]["rules"][0]["configuration"]
    assert rule["configuration"] == decl_rule


def test_codebuild_gets_secrets_and_parameters_by_reference():
    for name in ("build", "deploy"):
        env = TF[f"resource.aws_codebuild_project.{name}"]["environment"][0]["environment_variable"]
        types = {v["name"]: v["type"] for v in env}
        # no Slack credential in CI (issue 18 item 2): progress goes to the bot's queue
        assert "SECRETS_MANAGER" not in types.values() and types["EKS_CLUSTER_NAME"] == "PARAMETER_STORE"
        assert types["PROGRESS_QUEUE_URL"] == "PLAINTEXT"
        for v in env:
            if v["type"] == "PLAINTEXT":
                assert not re.search(r"(?i)token|secret|password", v["name"])
    build_env = {v["name"]: v for v in TF["resource.aws_codebuild_project.build"]["environment"][0]["environment_variable"]}
    assert build_env["ECR_REPOSITORY"]["value"].startswith("/erp/")  # the SSM parameter names the platform uses (/erp/<env>/...)
    assert TF["resource.aws_codebuild_project.build"]["logs_config"][0]["cloudwatch_logs"][0]["group_name"] == \
        "/aws/codebuild/erp-build"


def test_names_agree_with_the_bot_the_chart_and_the_sandbox():
    assert TF["resource.aws_dynamodb_table.state"]["name"] == STATE_TABLE
    table = TF["resource.aws_dynamodb_table.state"]
    assert (table["hash_key"], table["range_key"], table["ttl"][0]["attribute_name"]) == ("pk", "sk", "ttl")
    assert TF["resource.aws_sqs_queue.events"]["name"] == EVENTS_QUEUE
    redrive = TF["resource.aws_sqs_queue.events"]["redrive_policy"]
    assert "maxReceiveCount" in redrive and "events_dlq" in redrive


def test_a_good_event_outlives_a_long_outage_and_only_poison_is_dead_lettered():
    redrive = TF["resource.aws_sqs_queue.events"]["redrive_policy"]
    receives = int(re.search(r"maxReceiveCount[^0-9]*(\d+)", str(redrive)).group(1))  # type: ignore[union-attr]
    assert receives == RECEIVES_BEFORE_DEAD_LETTER  # the queue and the consumer's schedule agree
    # a healthy event held through an outage comes back after backoff(n): it reaches the dead-letter
    # queue only after the outage lasted this long (the issue: a 15-45 s hiccup must never get there)
    survived = sum(backoff(n) for n in range(1, receives))
    assert survived >= 15 * 60, survived
    assert backoff(1) <= 2 and max(backoff(n) for n in range(1, 50)) == 300  # quick first, never hours
    assert TF["resource.aws_secretsmanager_secret.slack"]["name"] == SLACK_SECRET_ID
    chart = yaml.safe_load((ROOT / "charts" / "erp-chatops" / "values.yaml").read_text())
    assert chart["slackSecret"]["remoteKey"] == SLACK_SECRET_ID
    assert chart["config"]["state_table"] == STATE_TABLE and chart["config"]["pipeline"] == DECLARATION["name"]
    assert chart["serviceAccount"]["roleArn"].endswith("role/erp-dev-ChatOps-bot")


def test_event_rules_cover_every_event_the_bot_reads():
    patterns = [TF[f"resource.aws_cloudwatch_event_rule.{r}"]["event_pattern"] for r in ("codepipeline", "codebuild",
                                                                                         "scans", "alarms")]
    text = " ".join(patterns)
    for detail_type in set(KNOWN) - {PROGRESS}:  # the buildspec's progress is sent to the queue directly
        assert detail_type in text, detail_type
    targets = TF["resource.aws_cloudwatch_event_target.to_queue"]
    assert "aws_sqs_queue.events.arn" in targets["arn"]


# --- least privilege: the bot's IAM policy is exactly what its code calls -------------------

SERVICES = {"codepipeline", "sqs", "dynamodb", "ecr", "logs", "secretsmanager", "xray", "ssm"}
CODEBUILD_SIDE = ROOT / "bot" / "ci"  # run by the buildspec in CodeBuild, with its role
OPERATOR_SIDE = ROOT / "bot" / "ops"  # run by a person with their own credentials, not the bot's role


def _pascal(snake: str) -> str:
    return "".join(part.capitalize() for part in snake.split("_"))


@functools.cache
def _client(service: str) -> Any:
    import boto3

    return boto3.client(service, region_name="ap-northeast-2", aws_access_key_id="x", aws_secret_access_key="x")


def _waiter_operation(service: str, waiter: str) -> str:
    return str(_client(service).get_waiter(waiter).config.operation)


def _is_operation(service: str, method: str) -> bool:
    """Only real API operations count (a dict that happens to be called `logs` does not)."""
    return _pascal(method) in _client(service).meta.service_model.operation_names


def calls_in(files: list[Path]) -> set[str]:
    """Every AWS API these files call, read from their source."""
    found: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            args = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            method, target = node.func.attr, node.func.value
            # aws.call("service", "operation", ...)
            if method == "call" and len(args) >= 2 and args[0] in SERVICES:
                found.add(f"{args[0]}:{_pascal(args[1])}")
                continue
            # aws.client("service").op(...) / boto3.client("service", ...).op(...), or a client held in a
            # variable named after its service: ecr.op(...)
            service = None
            if isinstance(target, ast.Call) and isinstance(target.func, ast.Attribute) and target.func.attr == "client":
                first = target.args[0] if target.args else None
                service = first.value if isinstance(first, ast.Constant) else None
            elif isinstance(target, ast.Name) and target.id in SERVICES:
                service = target.id
            if service not in SERVICES:
                continue
            if method == "get_paginator" and args:
                found.add(f"{service}:{_pascal(args[0])}")
            elif method == "get_waiter" and args:
                found.add(f"{service}:{_waiter_operation(str(service), args[0])}")
            elif _is_operation(str(service), method):
                found.add(f"{service}:{_pascal(method)}")
    return found


def bot_files() -> list[Path]:
    files = list((ROOT / "bot").rglob("*.py")) + list((ROOT / "handlers").rglob("*.py"))
    return [p for p in files if not p.is_relative_to(CODEBUILD_SIDE) and not p.is_relative_to(OPERATOR_SIDE)]


# IAM authorises SQS batch calls with the single call's permission
IAM_ACTION = {"sqs:DeleteMessageBatch": "sqs:DeleteMessage", "sqs:ChangeMessageVisibilityBatch":
              "sqs:ChangeMessageVisibility", "sqs:SendMessageBatch": "sqs:SendMessage"}


def calls_in_code() -> set[str]:
    return {IAM_ACTION.get(c, c) for c in calls_in(bot_files())}


# Used on the bot's behalf by DynamoDB and Secrets Manager, which encrypt with the module's key.
ON_ITS_BEHALF = {"kms:Decrypt", "kms:GenerateDataKey"}


def test_bot_policy_grants_exactly_what_the_code_calls():
    statements = TF["data.aws_iam_policy_document.bot"]["statement"]
    policy = [s for s in statements if s.get("effect", "Allow") == "Allow"]
    granted = {a for s in policy for a in s["actions"]} - ON_ITS_BEHALF
    called = calls_in_code()
    assert called, "found no AWS calls: the derivation is broken"
    assert granted == called, f"granted but unused: {granted - called}; used but not granted: {called - granted}"
    for statement in policy:
        resources = statement["resources"]
        if resources == ["*"]:
            assert set(statement["actions"]) <= NO_RESOURCE_LEVEL, statement["sid"]
        else:
            assert all("*" not in r or r.endswith("/erp/*") for r in resources), statement["sid"]
    kms = [s for s in policy if set(s["actions"]) & ON_ITS_BEHALF]
    assert kms and all(s["resources"] == ["${aws_kms_key.chatops.arn}"] for s in kms)


def policy_statements(role: str) -> list[dict[str, Any]]:
    """A role's policy document with the documents it builds on (source_policy_documents)."""
    doc = TF[f"data.aws_iam_policy_document.{role}"]
    sources = re.findall(r"aws_iam_policy_document\.(\w+)\.json", str(doc.get("source_policy_documents", "")))
    return [*(s for src in sources for s in TF[f"data.aws_iam_policy_document.{src}"]["statement"]), *doc["statement"]]


def test_no_role_can_change_or_delete_the_audit_trail():
    """Issue 18 item 6: the bot and CI could update or delete audit records. Now the bot may only add and
    read (a conditional put in the code), and both roles are denied every rewrite explicitly."""
    audit = "${aws_dynamodb_table.audit.arn}"
    rewrites = {"dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem", "dynamodb:PartiQLUpdate",
                "dynamodb:PartiQLDelete"}
    for role in ("bot", "build", "deploy"):
        statements = policy_statements(role)
        allowed = {a for s in statements if s.get("effect", "Allow") == "Allow" and audit in s["resources"]
                   for a in s["actions"]}
        denied = {a for s in statements if s.get("effect") == "Deny" and audit in s["resources"] for a in s["actions"]}
        assert not allowed & rewrites and (rewrites <= denied or "dynamodb:*" in denied), role
        assert not [s for s in statements if s.get("effect", "Allow") == "Allow"
                    and any("*" in r and "dynamodb" in r for r in s["resources"])], role
    bot_allowed = {a for s in TF["data.aws_iam_policy_document.bot"]["statement"]
                   if s.get("effect", "Allow") == "Allow" and audit in s["resources"] for a in s["actions"]}
    assert bot_allowed == {"dynamodb:PutItem", "dynamodb:Query"}
    assert TF["resource.aws_dynamodb_table.audit"]["deletion_protection_enabled"] is True
    code = (ROOT / "bot" / "aws" / "state.py").read_text()
    record = code[code.index("async def record_audit"):code.index("async def list_audit")]
    assert 'ConditionExpression="attribute_not_exists(pk)"' in record and "self.audit_table" in record


def test_bot_role_is_for_its_service_account_only():
    trust = TF["data.aws_iam_policy_document.bot_trust"]["statement"][0]
    subjects = [c for c in trust["condition"] if c["variable"].endswith(":sub")]
    assert subjects and subjects[0]["values"] == ["system:serviceaccount:${var.bot_namespace}:${var.bot_service_account}"]


def test_ci_cannot_read_the_slack_secret_nor_write_the_bots_state():
    """Issue 18 item 2: CodeBuild read the whole Slack secret (so it could sign an "Approve" click) and could
    write any item of the bot's table. Now it may send progress to the queue and keep the last deployed
    commits, nothing else of the bot's."""
    for role, table_actions in (("build", {"dynamodb:GetItem"}), ("deploy", {"dynamodb:GetItem", "dynamodb:PutItem"})):
        statements = policy_statements(role)
        allowed = [s for s in statements if s.get("effect", "Allow") == "Allow"]
        assert not [s for s in allowed if any(a.startswith("secretsmanager:") for a in s["actions"])], role
        table = [s for s in allowed if "${aws_dynamodb_table.state.arn}" in s["resources"]]
        [last_deploy] = [s for s in table if s["condition"][0]["values"] == ["LASTDEPLOY#*"]]
        assert set(last_deploy["actions"]) == table_actions, role
        [condition] = last_deploy["condition"]
        assert (condition["test"], condition["variable"]) == ("ForAllValues:StringLike", "dynamodb:LeadingKeys")
        # issue 19: the Deploy action reads the lock, the published freeze calendar and its grant, and only reads
        others = [s for s in table if s is not last_deploy]
        if role == "build":
            assert not others
        else:
            [gate] = others
            assert gate["actions"] == ["dynamodb:GetItem"]
            assert gate["condition"][0]["values"] == ["LOCK#*", "RULES#*", "GRANT#*"]
        queue = [s for s in allowed if "${aws_sqs_queue.progress.arn}" in s["resources"]]
        assert [s["actions"] for s in queue] == [["sqs:SendMessage"]], role
        assert not [s for s in allowed if "${aws_sqs_queue.events.arn}" in s["resources"]], role
    # and the events queue, which the bot trusts as AWS's, takes EventBridge's rules only: a deny for the rest
    policy = TF["data.aws_iam_policy_document.events_to_queue"]["statement"]
    [deny] = [s for s in policy if s.get("effect") == "Deny"]
    assert deny["actions"] == ["sqs:SendMessage"] and deny["principals"][0]["identifiers"] == ["*"]
    assert deny["condition"][0]["test"] == "ArnNotEquals" and deny["condition"][0]["variable"] == "aws:SourceArn"
    code = (ROOT / "bot" / "ci" / "build_steps.py").read_text()
    assert set(re.findall(r'"pk": \{"S": f"([A-Z]+)#', code)) == {"LASTDEPLOY"}  # the only key space CI writes


def allowed_actions(role: str) -> set[str]:
    return {a for s in policy_statements(role) if s.get("effect", "Allow") == "Allow"
            for a in s["actions"]}


def test_codebuild_roles_allow_what_the_build_steps_call():
    granted = allowed_actions("build") | allowed_actions("deploy")
    called = calls_in([*CODEBUILD_SIDE.glob("*.py"), ROOT / "bot" / "aws" / "ecr_scans.py"])
    assert {"ecr:DescribeImageScanFindings", "xray:PutTraceSegments", "dynamodb:GetItem", "sqs:SendMessage"} <= called
    assert called <= granted, f"the buildspec's steps call {called - granted}, which no CodeBuild role allows"


def test_the_build_that_runs_the_repositorys_code_cannot_act_past_the_approval():
    """Issue 18 item 1: Build and Deploy shared one role, so Build (the repository's own code, privileged, on
    every push) could do whatever Deploy can: write to erp-prod. Now each project has its own role; Build's
    reaches neither the cluster nor the bot's state beyond reading the last deployed commits."""
    build, deploy = allowed_actions("build"), allowed_actions("deploy")
    assert TF["resource.aws_codebuild_project.build"]["service_role"] == "${aws_iam_role.build.arn}"
    assert TF["resource.aws_codebuild_project.deploy"]["service_role"] == "${aws_iam_role.deploy.arn}"
    assert not [a for a in build if a.startswith(("eks:", "xray:", "secretsmanager:", "sts:"))], build
    assert build & {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "s3:PutObject"} == set()
    assert not [a for a in deploy if a.startswith("ecr:") or a.startswith("secretsmanager:")], deploy
    assert "eks:DescribeCluster" in deploy and "ecr:PutImage" in build


# --- infra/pipeline.json (what the sandbox runs) and the Terraform module describe one pipeline -------------

def _tf_value(value: Any) -> Any:
    """A Terraform attribute as the CodePipeline API would receive it: references resolved to what they name."""
    if not isinstance(value, str):
        return value
    ref = re.fullmatch(r"\$\{aws_codebuild_project\.(\w+)\.name\}", value)
    if ref:
        return TF[f"resource.aws_codebuild_project.{ref.group(1)}"]["name"]
    env = re.fullmatch(r"\$\{jsonencode\(concat\(local\.pipeline_env_vars, \[(.*)\]\)\)\}", value, re.S)
    if env:
        extra = [{"name": n, "value": v, "type": t} for n, v, t in re.findall(
            r'\{\s*name\s*=\s*"([^"]+)",\s*value\s*=\s*"([^"]+)",\s*type\s*=\s*"([^"]+)"\s*\}', env.group(1))]
        return json.loads(json.dumps(LOCALS["pipeline_env_vars"] + extra))
    variable = re.fullmatch(r"\$\{var\.(\w+)\}", value)
    if variable:
        return VARIABLES.get(variable.group(1), f"var.{variable.group(1)}")  # its default, if it has one
    return value


def _declared_config(action: dict[str, Any]) -> dict[str, Any]:
    config = dict(action.get("configuration", {}))
    if "EnvironmentVariables" in config:
        config["EnvironmentVariables"] = json.loads(config["EnvironmentVariables"])
    return config


def _module_parts() -> tuple[dict[str, Any], dict[str, Any]]:
    locals_: dict[str, Any] = {}
    variables: dict[str, Any] = {}
    for path in sorted(MODULE.glob("*.tf")):
        parsed = unquote(hcl2.load(path.open()))
        for block in parsed.get("locals", []):
            locals_.update(block)
        for block in parsed.get("variable", []):
            for name, body in block.items():
                if "default" in body:
                    variables[name] = body["default"]
    return locals_, variables


LOCALS, VARIABLES = _module_parts()


def test_every_stage_action_configuration_and_variable_agrees():
    pipe = TF["resource.aws_codepipeline.erp"]
    assert len(pipe["stage"]) == len(DECLARATION["stages"])
    for tf_stage, decl_stage in zip(pipe["stage"], DECLARATION["stages"], strict=True):
        assert tf_stage["name"] == decl_stage["name"]
        assert len(tf_stage["action"]) == len(decl_stage["actions"])
        for tf_action, decl_action in zip(tf_stage["action"], decl_stage["actions"], strict=True):
            where = f"{decl_stage['name']}.{decl_action['name']}"
            type_id = decl_action["actionTypeId"]
            assert {k: tf_action[k] for k in ("name", "category", "owner", "provider", "version")} == \
                {"name": decl_action["name"], **type_id}, where
            assert tf_action.get("input_artifacts", []) == [a["name"] for a in decl_action.get("inputArtifacts", [])], where
            assert tf_action.get("output_artifacts", []) == \
                [a["name"] for a in decl_action.get("outputArtifacts", [])], where
            assert tf_action.get("namespace") == decl_action.get("namespace"), where
            tf_config = {k: _tf_value(v) for k, v in tf_action.get("configuration", {}).items()}
            if "EnvironmentVariables" in tf_config:
                tf_config["EnvironmentVariables"] = json.loads(json.dumps(tf_config["EnvironmentVariables"]))
            declared = _declared_config(decl_action)
            if tf_config.get("ConnectionArn") == "var.github_connection_arn":  # no default: the deployer's
                declared.pop("ConnectionArn")
                tf_config.pop("ConnectionArn")
            assert tf_config == declared, where


def test_the_build_outputs_only_what_the_buildspec_produces():
    """A CodeBuild action's output artifact is the buildspec's `artifacts` section: one without the other
    fails the action ("no matching artifact paths found")."""
    spec = yaml.safe_load((ROOT / "buildspec.yml").read_text())
    for stage in DECLARATION["stages"]:
        for action in stage["actions"]:
            if action["actionTypeId"]["provider"] == "CodeBuild":
                assert bool(action.get("outputArtifacts")) == bool(spec.get("artifacts")), action["name"]
    produced = {a["name"] for s in DECLARATION["stages"] for a in s["actions"] for a in a.get("outputArtifacts", [])}
    consumed = {a["name"] for s in DECLARATION["stages"] for a in s["actions"] for a in a.get("inputArtifacts", [])}
    assert consumed <= produced


def test_each_codebuild_project_logs_to_its_own_group():
    for name in ("build", "deploy"):
        project = TF[f"resource.aws_codebuild_project.{name}"]
        group = project["logs_config"][0]["cloudwatch_logs"][0]["group_name"]
        assert group == f"/aws/codebuild/{project['name']}", name
    for role in ("build", "deploy"):  # each role writes its own project's group only
        writes = [s for s in policy_statements(role) if "logs:PutLogEvents" in s["actions"]]
        assert writes and all(r.endswith(f":log-group:/aws/codebuild/erp-{role}*") for s in writes for r in s["resources"])


def test_the_tools_the_buildspec_downloads_never_expire():
    """scripts/publish-ci-tools.sh puts erp-chatops and helm under tools/ in the artifacts bucket: a lifecycle rule
    that expires them would break every build on a cold cache a month after a release."""
    rules = TF["resource.aws_s3_bucket_lifecycle_configuration.artifacts"]["rule"]
    for rule in rules:
        prefix = (rule.get("filter") or [{}])[0].get("prefix", "")
        if rule.get("expiration"):
            assert prefix and not "tools/".startswith(prefix) and prefix != "tools/", rule["id"]
    script = (ROOT / "scripts" / "publish-ci-tools.sh").read_text()
    assert '"s3://$bucket/tools/' in script


# The first provider release whose aws_codepipeline schema has stage.before_entry/on_success/on_failure
# (terraform-provider-aws PR #41663). Read from the provider schemas CDKTF publishes per release:
# @cdktf/provider-aws 19.56.0 (aws 5.90.0) has no `before_entry` in lib/codepipeline/index.d.ts,
# 19.56.1 (aws 5.90.1) has it.
FIRST_PROVIDER_WITH_STAGE_CONDITIONS = (5, 90, 1)


def _provider_bounds(constraint: str) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """Lowest version a Terraform version constraint admits, and the first it excludes above."""
    lower: tuple[int, ...] = (0,)
    upper: tuple[int, ...] | None = None
    for part in constraint.split(","):
        op, _, number = part.strip().partition(" ")
        version = tuple(int(n) for n in number.strip().split("."))
        if op in (">=", "=", "~>"):
            lower = max(lower, version)
        if op == "~>":
            # "~> 5.80" admits 5.x; "~> 5.80.1" admits 5.80.x (Terraform's version constraint syntax).
            upper = (*version[:-2], version[-2] + 1)
        elif op == "<":
            upper = version
    return lower, upper


def test_the_provider_lower_bound_has_the_stage_conditions_the_pipeline_uses():
    parsed = unquote(hcl2.load((MODULE / "versions.tf").open()))
    constraint = parsed["terraform"][0]["required_providers"][0]["aws"]["version"]
    stages = TF["resource.aws_codepipeline.erp"]["stage"]
    assert any("before_entry" in stage for stage in stages), "the pipeline no longer gates a stage"
    lower, upper = _provider_bounds(constraint)
    assert lower >= FIRST_PROVIDER_WITH_STAGE_CONDITIONS, (
        f"{constraint!r} admits a provider without stage.before_entry; the first with it is 5.90.1"
    )
    assert upper is not None and upper <= (6, 0, 0), f"{constraint!r} admits provider 6, untested here"


def test_each_service_has_an_error_alarm_in_each_environment_routed_to_the_bot():
    """Issue 20: a metric filter counting ERROR lines on the service's log group, an alarm on it, named as the
    bot reads it (bot/delivery/pipeline_events.alarm_name), and its state changes on the events queue."""
    from bot.delivery.pipeline_events import alarm_name

    metric_filter = TF["resource.aws_cloudwatch_log_metric_filter.errors"]
    alarm = TF["resource.aws_cloudwatch_metric_alarm.errors"]
    assert metric_filter["for_each"] == alarm["for_each"] == "${local.service_environments}"
    assert metric_filter["log_group_name"] == "/erp/${each.value.environment}/${each.value.service}-service"
    assert metric_filter["pattern"] == "ERROR"
    transformation = metric_filter["metric_transformation"][0]
    assert (transformation["namespace"], transformation["name"]) == (alarm["namespace"], alarm["metric_name"])
    # the name the module gives for every service and environment is the one the bot matches
    assert alarm["alarm_name"] == "erp-${each.key}-errors" and LOCALS["service_environments"]
    for service in VARIABLES["services"]:
        for env in VARIABLES["alarm_environments"]:
            assert f"erp-{env}-{service}-errors" == alarm_name(env, service)
    rule = TF["resource.aws_cloudwatch_event_rule.alarms"]["event_pattern"]
    assert "CloudWatch Alarm State Change" in rule and "aws_cloudwatch_metric_alarm.errors" in rule
    assert TF["resource.aws_cloudwatch_event_target.to_queue"]["for_each"]["alarms"] == \
        "${aws_cloudwatch_event_rule.alarms.name}"
    for statement in TF["data.aws_iam_policy_document.events_to_queue"]["statement"]:
        assert "${aws_cloudwatch_event_rule.alarms.arn}" in statement["condition"][0]["values"]
