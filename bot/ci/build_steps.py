"""The buildspec's logic, so that its shell stays a few lines: `erp-chatops ci <step>`.

  changed-services  which services to build: SERVICE overrides; otherwise the git diff since
                    the last successful deploy of the environment (recorded in the state table);
                    a change to shared code rebuilds all
  scan-gate         wait for ECR's scan of each built image (bounded), post the verdict, and
                    fail the build when any CRITICAL finding is reported
  deploy            check the environment's lock and freeze (as the bot does), then
                    helm upgrade --install with only the built tags changed, wait for the
                    rollout, roll back explicitly on failure, record the deploy (state table
                    and an X-Ray segment)
Everything is plain synchronous code: it runs once per build, in CodeBuild.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import yaml
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from bot.aws.ecr_scans import read_findings
from bot.ci.notify import Notifier
from bot.cluster.helm import HELM_DRIVER, image_values, revision_description
from bot.delivery.deploy_gate import DeployGrant, EnvLock, grant_key, lock_key, pipeline_refusal, rules_key
from bot.delivery.freeze_calendar import FreezeCalendar, FreezeConfigError
from bot.delivery.image_tag import split_ref
from bot.delivery.scan_report import FINISHED, ScanReport, finding_line, scan_failed, severity_counts

DEFAULT_CHART = "charts/erp"
# A change under these paths rebuilds every service (shared code and build files).
SHARED = ("services/common/", "build.gradle", "settings.gradle", "gradle/", "gradle.properties", "Dockerfile.base")
RETRIES = BotoConfig(retries={"mode": "standard", "max_attempts": 5})
SCAN_FRESH_SECONDS = 24 * 3600  # a basic scan older than this is started again


class StepFailed(Exception):
    """The build must stop; the message says why, for the log and the thread."""


def chart_services(environ: Mapping[str, str], repo: str = ".") -> dict[str, str]:
    """The services the chart being deployed declares (`$CHART/values.yaml`), each with its ECR repository.

    CI builds exactly what the chart deploys; tests/test_service_list.py holds the chart to the bot's one
    declared list of services.
    """
    values = Path(repo) / environ.get("CHART", DEFAULT_CHART) / "values.yaml"
    try:
        services = (yaml.safe_load(values.read_text()) or {}).get("services") or {}
        return {str(name): str(svc["image"]["repository"]) for name, svc in services.items()}
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as e:
        raise StepFailed(f"cannot read the services from {values}: {type(e).__name__}: {e}") from None


def _state_table(environ: Mapping[str, str]) -> str | None:
    return environ.get("STATE_TABLE") or None


def _last_deployed_commit(environ: Mapping[str, str], environment: str, service: str) -> str | None:
    """The commit this service last went out at in this environment. Per service: a deploy of one service
    says nothing about the others, whose changes since their own last deploy are still to go out."""
    table = _state_table(environ)
    if not table:
        return None
    item = boto3.client("dynamodb", config=RETRIES).get_item(
        TableName=table, Key={"pk": {"S": f"LASTDEPLOY#{environment}"}, "sk": {"S": f"SERVICE#{service}"}},
        ConsistentRead=True).get("Item")
    return item["commit"]["S"] if item else None


def _changed_since(since: str, service: str, repo: str) -> bool:
    diff = subprocess.run(["git", "diff", "--name-only", f"{since}..HEAD"], cwd=repo,  # noqa: S603,S607
                          capture_output=True, text=True)
    if diff.returncode != 0:  # the recorded commit is not in this history (a force push): build it
        return True
    return any(p.startswith((*SHARED, f"services/{service}/")) for p in diff.stdout.splitlines())


def changed_services(environ: Mapping[str, str], repo: str = ".") -> list[str]:
    services = list(chart_services(environ, repo))
    wanted = environ.get("SERVICE", "").strip()
    if wanted == "all":
        return list(services)
    if wanted:
        if wanted not in services:
            raise StepFailed(f"SERVICE={wanted!r} is not one of {', '.join(services)}")
        return [wanted]
    environment = environ.get("ENVIRONMENT", "dev")
    changed = []
    for service in services:
        since = _last_deployed_commit(environ, environment, service)
        if not since or _changed_since(since, service, repo):  # never deployed here: build it once
            changed.append(service)
    return changed


def _reader(environ: Mapping[str, str], what: str) -> Callable[[dict[str, str]], dict[str, Any] | None]:
    """GetItem on the bot's table, as plain values; anything unreadable stops the deploy (fail closed)."""
    table = _state_table(environ)
    if not table:
        raise StepFailed(f"STATE_TABLE is not set, so {what} cannot be checked; not deploying")
    ddb = boto3.client("dynamodb", config=RETRIES)

    def read(key: dict[str, str]) -> dict[str, Any] | None:
        try:
            item = ddb.get_item(TableName=table, ConsistentRead=True,
                                Key={k: {"S": v} for k, v in key.items()}).get("Item")
        except (ClientError, BotoCoreError) as e:
            code = e.response["Error"]["Code"] if isinstance(e, ClientError) else type(e).__name__
            raise StepFailed(f"cannot read {key['pk']} from {table} ({code}), so {what} cannot be checked;"
                             " not deploying") from None
        return {k: next(iter(v.values())) for k, v in item.items()} if item else None
    return read


def promotion_gate(environ: Mapping[str, str], environment: str, pairs: list[tuple[str, str]]) -> None:
    """A promotion (DEPLOY_PHASE=promote) deploys only what its source environment last deployed well, by
    digest, and only to the environment the bot's config promotes to; or, the drift message's re-deploy,
    what this environment itself last deployed well and has not rolled back since. PROMOTE_IMAGE is a
    pipeline variable anyone who may start the pipeline can set: the bot's checks are not the only guard."""
    if not pairs or any("@" not in ref for _, ref in pairs):
        raise StepFailed("a promotion names each image as <service>=<tag>@sha256:<digest> (PROMOTE_IMAGE); not"
                         " deploying")
    read = _reader(environ, f"the promotion to {environment}")

    def redeploy(service: str, ref: str) -> bool:
        mine = read({"pk": f"LASTDEPLOY#{environment}", "sk": f"SERVICE#{service}"}) or {}
        undone = read({"pk": f"LASTDEPLOY#{environment}", "sk": f"ROLLEDBACK#{service}"}) or {}
        return mine.get("image") == ref and float(undone.get("at", 0)) < float(mine.get("at", 0))
    pairs = [(service, ref) for service, ref in pairs if not redeploy(service, ref)]
    if not pairs:
        return
    source = str((read(rules_key(environment)) or {}).get("promotion_source") or "")
    if not source:
        raise StepFailed(f"{environment} takes no promotions (the bot's config names none); not deploying")
    for service, ref in pairs:
        deployed = read({"pk": f"LASTDEPLOY#{source}", "sk": f"SERVICE#{service}"}) or {}
        attempt = read({"pk": f"LASTDEPLOY#{source}", "sk": f"ATTEMPT#{service}"}) or {}
        if deployed.get("image") != ref or attempt.get("ok") is False:
            raise StepFailed(f"{service} {ref[:60]} is not what {source} last deployed well; not promoting it")


def deploy_gate(environ: Mapping[str, str], environment: str, now: datetime | None = None) -> None:
    """Refuse (StepFailed, with the reason for the thread) to deploy into a locked or frozen environment.

    A push to main or a start from the console never passes through the bot, so the Deploy action checks
    itself, with read-only access to the lock, the freeze calendar the bot published from its config, and
    the grant the bot wrote for this very execution (the lock holder's deploy, a broken glass). Anything it
    cannot read stops the deploy: the gate fails closed.
    """
    execution_id = environ.get("PIPELINE_EXECUTION_ID", "").strip()
    read = _reader(environ, f"{environment}'s lock and freeze")
    rules = read(rules_key(environment))
    if rules is None:
        raise StepFailed(f"the bot has not published {environment}'s freeze calendar (start the bot with this"
                         " environment in its config); not deploying")
    try:
        declared = json.loads(str(rules["freeze"]))
        calendar = FreezeCalendar.parse(declared) if declared is not None else None
    except (ValueError, FreezeConfigError, KeyError) as e:
        raise StepFailed(f"{environment}'s published freeze calendar cannot be read ({e}); not deploying") from None
    lock_item = read(lock_key(environment))
    lock = EnvLock.from_item(environment, lock_item) if lock_item else None
    grant_item = read(grant_key(environment, execution_id)) if execution_id else None
    grant = DeployGrant.from_item(execution_id, grant_item) if grant_item else None
    refusal = pipeline_refusal(environment, lock, calendar, grant, now or datetime.now(UTC))
    if refusal:
        raise StepFailed(f"not deploying: {refusal}")
    if grant is not None and grant.break_glass:
        print(f"deploy gate: freeze broken by {grant.broken_by}: {grant.break_glass}", file=sys.stderr)


def image_ref(service: str, tag: str, environ: Mapping[str, str], repo: str = ".") -> str:
    """Where a service's image goes: the registry ($ECR_REGISTRY's host) and the repository the chart pulls."""
    repositories = chart_services(environ, repo)
    if service not in repositories:
        raise StepFailed(f"{service!r} is not a service of the chart ({', '.join(repositories)})")
    registry = environ.get("ECR_REGISTRY", "").split("/", 1)[0]
    if not registry:
        raise StepFailed("ECR_REGISTRY is not set (the /erp/<env>/ecr/repository parameter)")
    return f"{registry}/{repositories[service]}:{tag}"


def image_tags(services: list[str], tag: str, environ: Mapping[str, str] | None = None) -> str:
    """The exported variable the Deploy action reads: employee=<tag>@sha256:<digest>,... The digest is the
    image this build pushed and the scan gate passed, so what is deployed (and later promoted) is exactly
    that image, whatever the tag points to by then."""
    repositories = chart_services(os.environ if environ is None else environ)
    ecr = boto3.client("ecr", config=RETRIES)
    pairs = []
    for service in services:
        if service not in repositories:
            raise StepFailed(f"{service!r} is not a service of the chart ({', '.join(repositories)})")
        try:
            found = ecr.describe_images(repositoryName=repositories[service], imageIds=[{"imageTag": tag}])
            digest = str(found["imageDetails"][0]["imageDigest"])
        except (ClientError, BotoCoreError, KeyError, IndexError) as e:
            raise StepFailed(f"the pushed image {repositories[service]}:{tag[:7]} is not in ECR ({e}); not"
                             " deploying") from None
        pairs.append(f"{service}={tag}@{digest}")
    return ",".join(pairs)


def _has_scan(ecr: Any, repo: str, tag: str, now: float | None = None) -> bool:
    """Whether the image has a scan the gate may wait for: one running, enhanced scanning's continuous one, or
    a basic scan finished in the last day. A failed scan or an older one is started again (ECR allows a basic
    scan once a day: botocore's ECR model, StartImageScan), so findings published since are not missed."""
    try:
        found = ecr.describe_image_scan_findings(repositoryName=repo, imageId={"imageTag": tag}, maxResults=1)
    except ClientError as e:
        if e.response["Error"]["Code"] == "ScanNotFoundException":
            return False
        raise
    status = str(found.get("imageScanStatus", {}).get("status", ""))
    if status in ("IN_PROGRESS", "PENDING", "ACTIVE"):
        return True
    completed = found.get("imageScanFindings", {}).get("imageScanCompletedAt")
    if status != "COMPLETE" or completed is None:
        return False
    when = completed.timestamp() if hasattr(completed, "timestamp") else float(completed)
    return (time.time() if now is None else now) - when < SCAN_FRESH_SECONDS


def scan_gate(services: list[str], tag: str, notifier: Notifier, wait_seconds: int = 900,
              environ: Mapping[str, str] | None = None) -> None:
    ecr = boto3.client("ecr", config=RETRIES)
    # StartImageScan's refusals are answers, not trouble: an image already scanned today gets
    # LimitExceededException, which botocore's standard retry mode would retry as throttling (about 12 s of
    # back-off per image); asked once, the gate then waits for whatever scan there is
    once = boto3.client("ecr", config=RETRIES.merge(BotoConfig(retries={"mode": "standard", "total_max_attempts": 1})))
    repositories = chart_services(os.environ if environ is None else environ)
    blocked: list[str] = []
    for service in services:
        if service not in repositories:
            raise StepFailed(f"{service!r} is not a service of the chart ({', '.join(repositories)})")
        repo = repositories[service]
        try:
            if not _has_scan(ecr, repo, tag):  # scanned on push, or enhanced scanning: nothing to start
                once.start_image_scan(repositoryName=repo, imageId={"imageTag": tag})
        except ClientError as e:
            # scan on push already ran it today (LimitExceeded); the image cannot be scanned (its status says
            # why, and the gate fails closed on it); enhanced scanning scans by itself (StartImageScan starts
            # only basic scans, botocore's ECR documentation)
            if e.response["Error"]["Code"] not in ("LimitExceededException", "ScanNotFoundException",
                                                   "UnsupportedImageTypeException", "ImageArchivedException",
                                                   "ValidationException"):
                raise
        report = _wait_for_scan(ecr, repo, tag, wait_seconds)
        verdict = "BLOCKED" if report.blocking else "passed"
        top = "\n".join(finding_line(f) for f in report.top(3))
        notifier.post(f":shield: Scan of `{repo}:{tag[:7]}`: {severity_counts(report.counts)} -> {verdict}"
                      + (f"\n{top}" if report.blocking and top else ""))
        print(f"scan {repo}:{tag}: {severity_counts(report.counts)} {verdict}", file=sys.stderr)
        if report.blocking:
            blocked.append(f"{repo}:{tag[:7]} ({report.counts['CRITICAL']} CRITICAL; top: "
                           + "; ".join(f"{f.id} in {f.package}" for f in report.top(3)) + ")")
    if blocked:
        raise StepFailed("CRITICAL findings, not deploying: " + ", ".join(blocked))


def _wait_for_scan(ecr: Any, repo: str, tag: str, wait_seconds: int, delay: float = 5.0) -> ScanReport:
    """The image's scan once it has finished, bounded by `wait_seconds`. Not botocore's ImageScanComplete
    waiter: it knows only COMPLETE and FAILED, so enhanced scanning (ACTIVE, never COMPLETE) would wait to the
    end and UNSUPPORTED_IMAGE would never end. A scan that cannot run stops the gate at once (fail closed)."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            status = ecr.describe_image_scan_findings(repositoryName=repo, imageId={"imageTag": tag},
                                                      maxResults=1).get("imageScanStatus", {})
        except ClientError as e:
            if e.response["Error"]["Code"] != "ScanNotFoundException":  # not started yet, right after the push
                raise
            status = {"status": "PENDING"}
        state = str(status.get("status", "PENDING"))
        if state in FINISHED:
            return read_findings(ecr, repo, {"imageTag": tag})
        if scan_failed(state):
            why = f": {status['description']}" if status.get("description") else ""
            raise StepFailed(f"the scan of {repo}:{tag[:7]} {state}{why}; the gate fails closed, not deploying")
        if time.monotonic() + delay > deadline:
            raise StepFailed(f"the scan of {repo}:{tag[:7]} did not finish within {wait_seconds}s (still {state})")
        time.sleep(delay)


@dataclass
class DeployResult:
    ok: bool
    revision: int | None
    message: str


def _helm(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([os.environ.get("HELM_BIN", "helm"), *args], capture_output=True, text=True,  # noqa: S603
                          timeout=timeout, env={**os.environ, "HELM_DRIVER": HELM_DRIVER})  # as the bot's helm


def _history(release: str, namespace: str) -> list[dict[str, object]]:
    out = _helm("history", release, "-n", namespace, "-o", "json", "--max", "5", timeout=60)
    return json.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() else []


def _rollouts_done(namespace: str, deployments: list[str], timeout: float) -> tuple[bool, str]:
    """Wait with the kubernetes client, as the bot does; returns (all complete, summary)."""
    import asyncio

    from bot.cluster.kube import Cluster

    cluster = Cluster.from_environment()
    if cluster is None:
        raise StepFailed("no kubeconfig: run aws eks update-kubeconfig first")

    async def nothing(_: object) -> None:
        return None

    states = asyncio.run(cluster.wait_rollout(namespace, deployments, timeout, nothing, interval=2.0))
    summary = ", ".join(f"{s.name} {s.ready}/{s.desired} {s.state}" for s in states.values())
    return all(s.state == "complete" for s in states.values()) and len(states) == len(deployments), summary


def deployed_services(tags: str) -> list[str]:
    """The services an IMAGE_TAGS value deploys: employee=<tag>,notification=<tag> -> employee, notification."""
    return [p.split("=", 1)[0] for p in tags.split(",") if "=" in p]


def image_pairs(tags: str, environ: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """IMAGE_TAGS as (service, `tag` or `tag@sha256:<digest>`), each checked: a promotion's comes from a pipeline
    variable anyone starting the pipeline can set, and a comma or an odd name would set other chart values."""
    services = chart_services(os.environ if environ is None else environ)
    pairs = []
    for part in (p.strip() for p in tags.split(",") if p.strip()):
        service, _, ref = part.partition("=")
        if service not in services or split_ref(ref) is None:
            raise StepFailed(f"IMAGE_TAGS has {part[:120]!r}: expected <service>=<tag> or <service>=<tag>@sha256:"
                             f"<digest>, with a service of the chart ({', '.join(services)})")
        pairs.append((service, ref))
    return pairs


def deploy(release: str, chart: str, namespace: str, environment: str, tags: str, notifier: Notifier,
           rollout_timeout: float = 600, execution_id: str = "") -> DeployResult:
    pairs = image_pairs(tags, {**os.environ, "CHART": chart})
    if not pairs:
        return DeployResult(True, None, "nothing was built, nothing to deploy")
    before = _history(release, namespace)
    previous = max((int(str(r["revision"])) for r in before if r.get("status") == "deployed"), default=None)
    args = ["upgrade", "--install", release, chart, "-n", namespace, "--create-namespace",
            "-f", f"{chart}/values-{environment}.yaml", "--reuse-values", "--timeout", "10m", "--history-max", "20"]
    for service, ref in pairs:
        args += image_values(service, ref)  # the digest too, or cleared: a promotion's never outlives its tag
    if execution_id:
        args += ["--description", revision_description(execution_id)]  # how the bot finds what it changed
    notifier.post(f":ship: helm upgrade {release} in {namespace}: " + ", ".join(f"{s} `{t[:7]}`" for s, t in pairs))
    out = _helm(*args)
    if out.returncode != 0:
        return DeployResult(False, previous, f"helm upgrade failed: {out.stderr.strip()[-400:]}")
    ok, summary = _rollouts_done(namespace, [f"{s}-service" for s, _ in pairs], rollout_timeout)
    if ok:
        after = _history(release, namespace)
        revision = max((int(str(r["revision"])) for r in after), default=None)
        return DeployResult(True, revision, f"rollout complete: {summary}")
    if previous is not None:  # put back what ran before, explicitly
        back = _helm("rollback", release, str(previous), "-n", namespace, "--timeout", "10m")
        rolled = "rolled back to revision " + str(previous) if back.returncode == 0 else \
            f"and the rollback failed too: {back.stderr.strip()[-200:]}"
        return DeployResult(False, previous, f"rollout did not complete ({summary}); {rolled}")
    return DeployResult(False, None, f"rollout did not complete ({summary}); no earlier revision to roll back to")


def record_deploy(environ: Mapping[str, str], environment: str, commit: str, services: list[str], *,
                  ok: bool = True, images: Mapping[str, str] | None = None) -> None:
    """Per service: its last deploy attempt here (ATTEMPT#, succeeded or not), and, when it succeeded, its last
    deployed commit (SERVICE#, what the next build diffs from). `/erp promote` reads both: it promotes only
    what dev deployed last and well, and only after it has soaked there."""
    table = _state_table(environ)
    if not table:
        return
    execution = environ.get("PIPELINE_EXECUTION_ID", "").strip() or "-"
    now = str(int(time.time()))
    ddb = boto3.client("dynamodb", config=RETRIES)
    for service in services:
        image = (images or {}).get(service, "")
        fields = {"commit": {"S": commit}, "at": {"N": now}, "execution": {"S": execution},
                  **({"image": {"S": image}} if image else {})}
        ddb.put_item(TableName=table, Item={"pk": {"S": f"LASTDEPLOY#{environment}"}, "sk": {"S": f"ATTEMPT#{service}"},
                                            "ok": {"BOOL": ok}, **fields})
        if ok:
            ddb.put_item(TableName=table, Item={"pk": {"S": f"LASTDEPLOY#{environment}"},
                                                "sk": {"S": f"SERVICE#{service}"}, **fields})


def xray_segment(name: str, started: float, ended: float, ok: bool, annotations: dict[str, str]) -> dict[str, object]:
    trace_id = f"1-{int(started):08x}-{secrets.token_hex(12)}"
    segment = {"name": name, "id": secrets.token_hex(8), "trace_id": trace_id, "start_time": started,
               "end_time": ended, "annotations": annotations, **({} if ok else {"error": True})}
    boto3.client("xray", config=RETRIES).put_trace_segments(TraceSegmentDocuments=[json.dumps(segment)])
    return segment
