"""buildspec.yml executed for real: a scratch git repository, moto's SSM, Secrets Manager, ECR,
DynamoDB and X-Ray, the local Slack Web API, the real aws CLI and helm against the real API server;
only `docker` is stood in for."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import pytest
import yaml

from bot.aws.clients import AwsClients
from bot.aws.state import StateStore
from bot.delivery.deploy_gate import EnvLock
from sandbox.erp_services import SERVICES
from sandbox.local_kube import LocalKube
from sandbox.seed import SLACK_SECRET_ID, seed_parameters_and_secrets
from sandbox.slack_workspace import SlackWorkspace
from tests.ci.buildspec_runner import BuildResult, BuildspecInvalid, BuildspecRunner, resolve_env, validate
from tests.support import BOT_TOKEN, ROOT, free_port, wait_until

pytestmark = [pytest.mark.usefixtures("erp_images"), pytest.mark.slow]
BUILDSPEC = ROOT / "buildspec.yml"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


def commit(repo: Path, message: str, files: dict[str, str]) -> str:
    for path, text in files.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(text)
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=dev", "-c", "user.email=dev@erp.example", "commit", "-qm", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture(scope="module")
def secrets_seeded(moto) -> None:  # type: ignore[no-untyped-def]
    try:
        seed_parameters_and_secrets(__import__("bot.aws.clients", fromlist=["AwsClients"]).AwsClients(), BOT_TOKEN, "s" * 32)
    except Exception as e:
        if "ResourceExists" not in str(e):
            raise


@pytest.fixture
def repo(tmp_path: Path) -> dict[str, object]:
    """The ERP repository as the pipeline checks it out: services, shared code, the chart, the buildspec."""
    repo = tmp_path / "erp-platform"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    files = {f"services/{s}/Dockerfile": "FROM eclipse-temurin:17-jre\nCOPY build/libs/app.jar /app.jar\n"
             for s in SERVICES}
    files |= {f"services/{s}/src/main/java/App.java": f"class App {{ /* {s} */ }}\n" for s in SERVICES}
    files |= {"services/common/src/Shared.java": "class Shared {}\n", "README.md": "ERP\n"}
    first = commit(repo, "initial", files)
    shutil.copytree(ROOT / "charts" / "erp", repo / "charts" / "erp")
    shutil.copy(BUILDSPEC, repo / "buildspec.yml")
    second = commit(repo, "chart and buildspec", {})
    return {"path": repo, "first": first, "second": second}


# What CodeBuild's stock image (aws/codebuild/standard:7.0) ships that the buildspec uses: a shell and the
# usual tools, git, python3 with pip and venv, the aws CLI. Not erp-chatops, not helm: the buildspec must
# bring those itself. `docker` is the one stand-in.
IMAGE_TOOLS = ("bash", "sh", "env", "cat", "mkdir", "rm", "cp", "mv", "ln", "ls", "tar", "gzip", "sha256sum",
               "date", "basename", "dirname", "head", "tail", "tr", "sed", "grep", "cut", "sort", "uname", "sleep",
               "tee", "touch", "chmod", "install", "mktemp", "id", "git", "flock")


def stock_image_path(bin_dir: Path) -> str:
    """A PATH with only what the stock image has: each tool linked by name into one directory."""
    bin_dir.mkdir(exist_ok=True)
    for name in IMAGE_TOOLS:
        found = shutil.which(name)
        assert found, f"{name} is not on this machine"
        (bin_dir / name).symlink_to(found)
    base = Path(sys.base_prefix) / "bin"  # the interpreter itself, not the test's venv with erp-chatops in it
    (bin_dir / "python3").symlink_to(base / f"python{sys.version_info.major}.{sys.version_info.minor}")
    (bin_dir / "aws").symlink_to(Path(sys.executable).parent / "aws")  # the CLI alone: its own interpreter
    docker = bin_dir / "docker"
    docker.write_text(f"#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} {ROOT / 'tests' / 'ci' / 'docker_stand_in.py'}"
                      ' "$@"\n')
    docker.chmod(0o755)
    return str(bin_dir)


def run_folder(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A folder every parallel worker of this test run shares (xdist gives each its own base folder inside
    the run's), for what is made once per run."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name
    folder.mkdir(exist_ok=True)
    return folder


@contextmanager
def taking_turns(lock: Path) -> Iterator[None]:
    """One worker at a time (an flock, released if the worker dies)."""
    with lock.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def publish_env(moto) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """What scripts/publish-ci-tools.sh runs with here: this worker's moto, and this Python for pip."""
    return {**os.environ, **moto.env(), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "PYTHON": sys.executable}


@pytest.fixture(scope="session")
def ci_tools(moto, tools: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """erp-chatops and helm published to the pipeline's bucket as production does (scripts/publish-ci-tools.sh):
    the wheelhouse built from this checkout, and a helm release archive made from the helm built here (the
    real one comes from get.helm.sh, which this machine cannot reach). The run's first worker builds the
    wheelhouse and the others publish the same file (WHEELHOUSE), as prod gets dev's: each worker has its own
    moto. One CodeBuild cache for all, as builds on one host share it."""
    shared = run_folder(tmp_path_factory, "ci-tools")
    wheelhouse, archive = shared / "erp-chatops-wheelhouse.tar.gz", shared / "helm-v3.16.2-linux-amd64.tar.gz"
    bucket = "erp-dev-pipeline-artifacts"
    s3 = boto3.client("s3")
    try:
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "ap-northeast-2"})
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    env = publish_env(moto)
    with taking_turns(shared / ".lock"):
        if not archive.exists():
            (shared / "linux-amd64").mkdir(exist_ok=True)
            shutil.copy(tools / "helm", shared / "linux-amd64" / "helm")
            subprocess.run(["tar", "-czf", f"{archive}.partial", "-C", str(shared), "linux-amd64"], check=True)
            os.replace(f"{archive}.partial", archive)
        env["WHEELHOUSE" if wheelhouse.exists() else "KEEP_WHEELHOUSE"] = str(wheelhouse)
        out = subprocess.run(["bash", str(ROOT / "scripts" / "publish-ci-tools.sh"), bucket, "dev", str(archive)],
                             env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    return {"bucket": bucket, "cache": str(shared / "codebuild-cache"), "wheelhouse": str(wheelhouse),
            "helm_archive": str(archive)}


@pytest.fixture
def build(tmp_path: Path, moto, slack: SlackWorkspace, aws_resources: dict[str, str],  # type: ignore[no-untyped-def]
          secrets_seeded: None, ci_tools: dict[str, str], ecr_pages) -> Iterator[dict[str, object]]:
    environ = {**{k: v for k, v in os.environ.items()
                  if not k.startswith(("SLACK_", "KUBECONFIG", "PYTHON", "VIRTUAL_ENV"))},
               **moto.env(), "AWS_ENDPOINT_URL_ECR": ecr_pages.url,  # findings a page at a time, as ECR serves them
               "PATH": stock_image_path(tmp_path / "bin"), "HOME": str(tmp_path / "home"),
               "TOOLS_CACHE": ci_tools["cache"],  # CodeBuild's local cache: the same across builds
               "DOCKER_LOG": str(tmp_path / "docker.log"),
               "PROGRESS_QUEUE_URL": aws_resources["progress_queue_url"], "STATE_TABLE": aws_resources["table"]}
    card = slack.m_chat_postMessage({"channel": "C0PROD", "text": "Deploy employee to prod"})
    yield {"environ": environ, "card_ts": card["ts"], "docker_log": tmp_path / "docker.log",
           "queue": aws_resources["progress_queue_url"]}


def pipeline_vars(repo: dict[str, object], card_ts: str, **extra: str) -> dict[str, str]:
    return {"CODEBUILD_RESOLVED_SOURCE_VERSION": str(repo["second"]), "PIPELINE_EXECUTION_ID": "exec-1",
            "SERVICE": " ", "ENVIRONMENT": "prod", "REQUESTED_BY": "U0DEV1", "SLACK_CHANNEL": "C0PROD",
            "SLACK_THREAD_TS": card_ts, "DEPLOY_PHASE": "build", **extra}


def record_last_deploy(table: str, env: str, sha: str, services: tuple[str, ...] = SERVICES) -> None:
    for service in services:
        boto3.client("dynamodb").put_item(TableName=table, Item={
            "pk": {"S": f"LASTDEPLOY#{env}"}, "sk": {"S": f"SERVICE#{service}"}, "commit": {"S": sha}})


def test_a_change_waits_for_its_own_service_deploy_not_another_services(
        repo: dict[str, object], moto, aws_resources: dict[str, str]):  # type: ignore[no-untyped-def]
    """Issue 17 item 8: one environment-wide "last deployed commit" let a deploy of employee alone mark
    notification's change as deployed, and the next push skipped it: it never reached prod."""
    from bot.ci import build_steps

    path = Path(str(repo["path"]))
    environ = {**moto.env(), "STATE_TABLE": aws_resources["table"], "ENVIRONMENT": "prod", "SERVICE": ""}
    record_last_deploy(aws_resources["table"], "prod", str(repo["second"]))
    both = commit(path, "employee and notification", {
        "services/employee/src/main/java/App.java": "class App { int e; }\n",
        "services/notification/src/main/java/App.java": "class App { int n; }\n"})
    # `/erp deploy employee prod`: only employee goes out at this commit
    build_steps.record_deploy(environ, "prod", both, build_steps.deployed_services(f"employee={both}"))
    commit(path, "docs", {"README.md": "ERP, documented\n"})
    assert build_steps.changed_services(environ, str(path)) == ["notification"]
    # once notification is deployed too, a docs-only push builds nothing
    build_steps.record_deploy(environ, "prod", both, ["notification"])
    assert build_steps.changed_services(environ, str(path)) == []


def docker_calls(build: dict[str, object]) -> list[list[str]]:
    path = Path(str(build["docker_log"]))
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def progress(build: dict[str, object], execution: str = "exec-1") -> list[str]:
    """The progress lines the build handed to the bot (its events queue), in the order they were sent;
    the bot posts them in the deploy's thread (handlers/test_deploy.py)."""
    seen = build.setdefault("progress", [])
    assert isinstance(seen, list)
    sqs = boto3.client("sqs")
    while True:
        got = sqs.receive_message(QueueUrl=str(build["queue"]), MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            return [text for ex, text in seen if ex == execution]
        for message in got:
            event = json.loads(message["Body"])
            if event.get("detail-type") == "ERP Deploy Progress":
                seen.append((event["detail"]["execution-id"], event["detail"]["text"]))
            sqs.delete_message(QueueUrl=str(build["queue"]), ReceiptHandle=message["ReceiptHandle"])


def run(repo: dict[str, object], build: dict[str, object], **variables: str) -> BuildResult:
    runner = BuildspecRunner(Path(str(repo["path"])) / "buildspec.yml", Path(str(repo["path"])),
                             dict(build["environ"]))  # type: ignore[arg-type]
    return runner.run(pipeline_vars(repo, str(build["card_ts"]), **variables))


def test_only_changed_services_are_built_and_progress_reaches_the_thread(
        repo: dict[str, object], build: dict[str, object], slack: SlackWorkspace, aws_resources: dict[str, str]):
    path = Path(str(repo["path"]))
    record_last_deploy(aws_resources["table"], "prod", str(repo["second"]))
    head = commit(path, "fix employee lookup", {"services/employee/src/main/java/App.java": "class App { int x; }\n"})
    result = run(repo, build, CODEBUILD_RESOLVED_SOURCE_VERSION=head)
    assert result.succeeded, result.output
    builds = [c for c in docker_calls(build) if c[0] == "build"]
    assert [c[-1] for c in builds] == ["services/employee"]
    assert [c for c in docker_calls(build) if c[0] == "push"] == [
        ["push", f"806332783810.dkr.ecr.ap-northeast-2.amazonaws.com/erp/employee-service:{head}"]]
    # the image the scan gate passed, by its digest: what is deployed and later promoted is exactly it
    digest = boto3.client("ecr").describe_images(repositoryName="erp/employee-service", imageIds=[
        {"imageTag": head}])["imageDetails"][0]["imageDigest"]
    assert result.exported["IMAGE_TAGS"] == f"employee={head}@{digest}"
    messages = progress(build)
    expected_order = ["Build started for prod", "Building: employee", "Built and pushed employee-service",
                      "Scan of `erp/employee-service", "Build :white_check_mark: succeeded"]
    positions = [next(i for i, m in enumerate(messages) if want in m) for want in expected_order]
    assert positions == sorted(positions), messages


def test_service_override_and_shared_code(repo: dict[str, object], build: dict[str, object],
                                          aws_resources: dict[str, str]):
    path = Path(str(repo["path"]))
    record_last_deploy(aws_resources["table"], "prod", str(repo["second"]))
    result = run(repo, build, SERVICE="notification")
    assert result.succeeded and result.exported["BUILT_SERVICES"] == "notification"
    head = commit(path, "shared fix", {"services/common/src/Shared.java": "class Shared { int y; }\n"})
    result = run(repo, build, CODEBUILD_RESOLVED_SOURCE_VERSION=head)
    assert result.succeeded and result.exported["BUILT_SERVICES"].split() == list(SERVICES)
    docs = commit(path, "docs only", {"README.md": "ERP platform\n"})
    record_last_deploy(aws_resources["table"], "prod", head)
    result = run(repo, build, CODEBUILD_RESOLVED_SOURCE_VERSION=docs)
    assert result.succeeded and result.exported["BUILT_SERVICES"] == "" and result.exported["IMAGE_TAGS"] == ""


@pytest.mark.parametrize(("status", "description"), [
    ("UNSUPPORTED_IMAGE", "UnsupportedImageError: The operating system and/or package manager are not supported."),
    ("FAILED", "The scan failed: an internal error occurred"),
])
def test_a_scan_that_cannot_run_fails_the_gate_at_once_with_the_reason(
        repo: dict[str, object], build: dict[str, object], slack: SlackWorkspace, status: str, description: str):
    build["environ"]["SCAN_STATUSES"] = f"employee={status}"  # type: ignore[index]
    build["environ"]["SCAN_DESCRIPTION"] = description  # type: ignore[index]
    started = time.monotonic()
    result = run(repo, build, SERVICE="employee", SCAN_WAIT_SECONDS="120")
    took = time.monotonic() - started
    assert result.phases["build"] == "FAILED", result.output
    assert f"the scan of erp/employee-service:{str(repo['second'])[:7]} {status}" in result.output
    assert description in result.output
    assert took < 60, f"the gate waited {took:.0f}s for a scan that had already failed"  # fail fast, not at 120 s
    messages = progress(build)
    assert any(m.startswith(":x: scan-gate:") and status in m for m in messages)
    assert not any("passed" in m for m in messages if "Scan of" in m)


def test_enhanced_scanning_reports_active_and_passes_the_gate(repo: dict[str, object], build: dict[str, object],
                                                              slack: SlackWorkspace):
    build["environ"]["SCAN_STATUSES"] = "employee=ACTIVE"  # type: ignore[index]
    result = run(repo, build, SERVICE="employee", SCAN_WAIT_SECONDS="60")
    assert result.succeeded, result.output
    verdict = next(m for m in progress(build) if "Scan of `erp/employee-service" in m)
    assert "passed" in verdict and "2 high" in verdict


def test_critical_finding_stops_the_build_with_the_findings(repo: dict[str, object], build: dict[str, object],
                                                            slack: SlackWorkspace):
    build["environ"]["CRITICAL_SERVICES"] = "approval-request"  # type: ignore[index]
    result = run(repo, build, SERVICE="approval-request")
    assert result.phases["build"] == "FAILED" and result.phases["post_build"] == "SUCCEEDED"
    assert "CRITICAL findings, not deploying: erp/approval-request-service" in result.output
    messages = progress(build)
    verdict = next(m for m in messages if "Scan of `erp/approval-request-service" in m)
    assert "1 critical" in verdict and "BLOCKED" in verdict and "*Critical*" in verdict and "CVE-" in verdict
    assert any(m.startswith(":x: scan-gate: CRITICAL findings") for m in messages)
    assert any("Build :x: failed" in m for m in messages)


def test_a_broken_build_fails_and_says_so(repo: dict[str, object], build: dict[str, object], slack: SlackWorkspace):
    build["environ"]["DOCKER_FAIL_BUILD"] = "employee"  # type: ignore[index]
    result = run(repo, build, SERVICE="employee")
    assert result.phases["build"] == "FAILED"
    assert not [c for c in docker_calls(build) if c[0] == "push"]
    assert any("Build :x: failed" in m for m in progress(build))


def test_an_unreachable_queue_never_fails_the_build(repo: dict[str, object], build: dict[str, object]):
    build["environ"]["PROGRESS_QUEUE_URL"] = f"http://127.0.0.1:{free_port()}/000000000000/gone"  # type: ignore[index]
    started = time.monotonic()
    result = run(repo, build, SERVICE="employee")
    assert result.succeeded, result.output
    assert "notify: cannot queue the progress line" in result.output
    assert time.monotonic() - started < 180


def test_a_build_holds_no_slack_credential_and_reports_by_its_execution(repo: dict[str, object],
                                                                         build: dict[str, object]):
    """Issue 18 item 2: CodeBuild read the bot token (and could read the signing secret). Now its progress
    goes to the bot's queue by execution id, push-triggered or not, and nothing in its environment is Slack's."""
    result = run(repo, build, SERVICE="employee", ENVIRONMENT="dev", SLACK_CHANNEL=" ", SLACK_THREAD_TS=" ",
                 PIPELINE_EXECUTION_ID="push-42")
    assert result.succeeded
    assert any("Built and pushed employee-service" in text for text in progress(build, "push-42"))
    resolved = resolve_env(yaml.safe_load(BUILDSPEC.read_text()))  # what the buildspec brings into the build
    assert not [name for name in resolved if name.startswith("SLACK_")], sorted(resolved)
    main = (ROOT / "infra" / "terraform" / "erp-dev-ChatOps" / "main.tf").read_text()
    assert "SECRETS_MANAGER" not in main.split('resource "aws_codebuild_project" "build"')[1]


def test_the_stock_image_brings_neither_tool_and_a_tampered_download_stops_the_build(
        repo: dict[str, object], build: dict[str, object], slack: SlackWorkspace, tmp_path: Path):
    path = str(build["environ"]["PATH"])  # type: ignore[index]
    assert shutil.which("erp-chatops", path=path) is None and shutil.which("helm", path=path) is None
    ssm = boto3.client("ssm")
    good = ssm.get_parameter(Name="/erp/dev/tools/erp-chatops/sha256")["Parameter"]["Value"]
    ssm.put_parameter(Name="/erp/dev/tools/erp-chatops/sha256", Value="0" * 64, Type="String", Overwrite=True)
    try:
        result = run(repo, build, SERVICE="employee")
    finally:
        ssm.put_parameter(Name="/erp/dev/tools/erp-chatops/sha256", Value=good, Type="String", Overwrite=True)
    assert result.phases["install"] == "FAILED" and result.phases["build"] == "skipped", result.phases
    assert "FAILED" in result.output and "sha256sum" in result.output  # the checksum refused it
    assert docker_calls(build) == [] and progress(build) == []  # nothing ran, nothing posted


def test_two_builds_on_a_cold_shared_cache_install_the_tools_once_and_both_pass(
        repo: dict[str, object], build: dict[str, object], aws_resources: dict[str, str], tmp_path: Path):
    """Builds on one host share CodeBuild's local cache: the second to start, arriving while the first is
    installing, waits for it and uses its tools, rather than delete them mid-install (which failed one)."""
    record_last_deploy(aws_resources["table"], "prod", str(repo["second"]))  # nothing to build: the install counts
    cache = tmp_path / "cold-cache"
    environ = {**build["environ"], "TOOLS_CACHE": str(cache)}  # type: ignore[dict-item]
    other = tmp_path / "erp-platform-2"  # the runner keeps a build's exports beside its checkout
    git(tmp_path, "clone", "-q", str(repo["path"]), str(other))
    first: list[BuildResult] = []
    starter = threading.Thread(target=lambda: first.append(BuildspecRunner(
        Path(str(repo["path"])) / "buildspec.yml", Path(str(repo["path"])), environ).run(
        pipeline_vars(repo, str(build["card_ts"])))))
    starter.start()
    try:  # the first build is inside the install: its venv made, erp-chatops not yet installed in it
        wait_until(lambda: first or (any(cache.glob("*/bin/python3")) and not any(cache.glob("*/bin/erp-chatops"))),
                   120, "the first build to be installing the tools")
        assert not first, "the first build ended before it was seen installing"
    finally:
        second = BuildspecRunner(other / "buildspec.yml", other, environ).run(pipeline_vars(repo, str(build["card_ts"])))
        starter.join(300)
    assert first and first[0].succeeded, first[0].output if first else "the first build never ended"
    assert second.succeeded, second.output
    installed = [p for p in cache.iterdir() if p.is_dir()]
    assert len(installed) == 1 and (installed[0] / ".installed").exists(), installed


def test_one_wheelhouse_is_published_to_dev_and_prod_byte_for_byte(ci_tools: dict[str, str], moto,  # type: ignore[no-untyped-def]
                                                                  tmp_path: Path):
    """WHEELHOUSE: prod gets the very file dev got (built once with KEEP_WHEELHOUSE, its checksum the same),
    and a file that is missing or is not a wheelhouse is refused in one line before anything is published."""
    env = {**publish_env(moto), "WHEELHOUSE": ci_tools["wheelhouse"]}
    script = ["bash", str(ROOT / "scripts" / "publish-ci-tools.sh"), ci_tools["bucket"], "prod", ci_tools["helm_archive"]]
    out = subprocess.run(script, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    ssm = boto3.client("ssm")
    value = {env_: {name: ssm.get_parameter(Name=f"/erp/{env_}/tools/erp-chatops/{name}")["Parameter"]["Value"]
                    for name in ("key", "sha256")} for env_ in ("dev", "prod")}
    file_sha = hashlib.sha256(Path(ci_tools["wheelhouse"]).read_bytes()).hexdigest()
    assert value["prod"] == value["dev"] and value["prod"]["sha256"] == file_sha, value
    body = boto3.client("s3").get_object(Bucket=ci_tools["bucket"], Key=value["prod"]["key"])["Body"].read()
    assert hashlib.sha256(body).hexdigest() == file_sha

    (tmp_path / "notes.txt").write_text("not wheels")
    subprocess.run(["tar", "-czf", str(tmp_path / "other.tar.gz"), "-C", str(tmp_path), "notes.txt"], check=True)
    whole = Path(ci_tools["wheelhouse"]).read_bytes()
    (tmp_path / "cut-short.tar.gz").write_bytes(whole[:len(whole) // 2])  # lists the wheel, ends mid-archive
    (tmp_path / "a-folder").mkdir()
    ssm.delete_parameter(Name="/erp/prod/tools/erp-chatops/sha256")
    for bad in ("other.tar.gz", "notes.txt", "cut-short.tar.gz", "a-folder", "a-typo.tar.gz"):  # never a rebuild
        out = subprocess.run(script, env={**env, "WHEELHOUSE": str(tmp_path / bad)}, capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1, (bad, out.stderr)
        assert "is it this script's?" in out.stderr or "is not a file" in out.stderr, (bad, out.stderr)
    assert not ssm.get_parameters(Names=["/erp/prod/tools/erp-chatops/sha256"])["Parameters"]  # nothing published
    assert list((tmp_path / "a-folder").iterdir()) == []


def test_the_tools_the_buildspec_reads_are_the_ones_published_and_cached():
    spec = yaml.safe_load(BUILDSPEC.read_text())
    tools = {v for v in spec["env"]["parameter-store"].values() if v.startswith("/erp/dev/tools/")}
    script = (ROOT / "scripts" / "publish-ci-tools.sh").read_text()
    published = {f"/erp/dev/tools/{name}" for name in re.findall(r"^put ([\w/-]+) ", script, re.M)}
    assert tools == published == {"/erp/dev/tools/bucket", "/erp/dev/tools/erp-chatops/key",
                                  "/erp/dev/tools/erp-chatops/sha256", "/erp/dev/tools/helm/key",
                                  "/erp/dev/tools/helm/sha256"}
    assert spec["cache"]["paths"] == ["/root/.cache/erp-chatops/**/*"]  # where the install step keeps them
    main = (ROOT / "infra" / "terraform" / "erp-dev-ChatOps" / "main.tf").read_text()
    assert main.count('modes = ["LOCAL_CUSTOM_CACHE"]') == 2  # both projects keep that cache


def test_buildspec_format_and_its_shell(tmp_path: Path):
    spec = yaml.safe_load(BUILDSPEC.read_text())
    validate(spec)
    assert "secrets-manager" not in spec["env"] and SLACK_SECRET_ID not in BUILDSPEC.read_text()
    assert all(v.startswith("/erp/") for v in spec["env"]["parameter-store"].values())
    assert not re.search(r"xox[bp]-|password\s*[:=]", BUILDSPEC.read_text())
    for bad in ({"version": 0.2, "phases": {"compile": {"commands": ["make"]}}},
                {"version": 0.2, "env": {"variables": {"N": 3}}, "phases": {}},
                {"version": 0.2, "phases": {"build": {"on-failure": "RETRY", "commands": ["x"]}}}):
        with pytest.raises(BuildspecInvalid):
            validate(bad)
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    declared = set(spec["env"]["variables"]) | set(spec["env"]["parameter-store"]) | \
        set(spec["env"].get("secrets-manager") or {})
    for phase, body in spec["phases"].items():
        for i, command in enumerate(body.get("commands", []) + body.get("finally", [])):
            script = tmp_path / f"{phase}-{i}.sh"
            script.write_text("#!/bin/bash\n" + "".join(f": \"${{{v}:=}}\"\n" for v in sorted(declared)) + command)
            out = subprocess.run([shellcheck, "-s", "bash", "-e", "SC2154", str(script)], capture_output=True,
                                 text=True)
            assert out.returncode == 0, f"{phase} command {i}:\n{out.stdout}"
    for script in sorted((ROOT / "scripts").glob("*.sh")):  # the project's own scripts, the publisher included
        out = subprocess.run([shellcheck, str(script)], capture_output=True, text=True)
        assert out.returncode == 0, f"{script.name}:\n{out.stdout}"


# --- the deploy action, with the real helm against the real API server ------------------------

class Controller(threading.Thread):
    """Plays the Deployment controller: every changed Deployment rolls out a moment later."""

    def __init__(self, kube: LocalKube, namespace: str) -> None:
        super().__init__(daemon=True)
        self.kube, self.namespace, self.running = kube, namespace, True

    def run(self) -> None:
        while self.running:
            status, body = self.kube.request("GET", f"/apis/apps/v1/namespaces/{self.namespace}/deployments")
            for d in body.get("items", []) if status == 200 else []:
                if d.get("status", {}).get("observedGeneration", 0) < d["metadata"]["generation"]:
                    self.kube.set_rollout(self.namespace, d["metadata"]["name"])
            time.sleep(0.3)


def test_deploy_sets_exactly_the_built_tags_and_records_it(repo: dict[str, object], build: dict[str, object],
                                                           kube: LocalKube, helm: str, slack: SlackWorkspace,
                                                           aws_resources: dict[str, str]):
    build["environ"] = {**build["environ"], "KUBECONFIG": str(kube.kubeconfig)}  # type: ignore[dict-item]
    namespace = "erp-prod"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    controller = Controller(kube, namespace)
    controller.start()
    # the freeze calendar the bot publishes from its config (none for prod here): without it nothing deploys
    state = StateStore(AwsClients(), aws_resources["table"])
    asyncio.run(state.publish_freeze_calendar("prod", None))
    try:
        first = run(repo, build, DEPLOY_PHASE="deploy", IMAGE_TAGS=",".join(f"{s}=v1" for s in SERVICES),
                    CODEBUILD_RESOLVED_SOURCE_VERSION=str(repo["first"]))
        assert first.succeeded, first.output
        sha = str(repo["second"])
        result = run(repo, build, DEPLOY_PHASE="deploy", IMAGE_TAGS=f"employee={sha},notification={sha}")
        assert result.succeeded, result.output
    finally:
        controller.running = False
    values = json.loads(subprocess.run([helm, "get", "values", "erp", "-n", namespace, "-o", "json", "--all",
                                        "--kubeconfig", str(kube.kubeconfig)], capture_output=True, text=True,
                                       check=True).stdout)
    tags = {s: v["image"]["tag"] for s, v in values["services"].items()}
    assert tags == {"employee": sha, "notification": sha, "approval-request": "v1", "approval-processing": "v1"}
    assert values["services"]["employee"]["replicas"] == 5  # prod's values file applied
    recorded = {s: boto3.client("dynamodb").get_item(TableName=aws_resources["table"], Key={
        "pk": {"S": "LASTDEPLOY#prod"}, "sk": {"S": f"SERVICE#{s}"}})["Item"]["commit"]["S"] for s in SERVICES}
    # each service's last deploy, per service: the second deploy took only employee and notification
    assert recorded == {"employee": sha, "notification": sha, "approval-request": str(repo["first"]),
                        "approval-processing": str(repo["first"])}
    now = time.time()
    summaries = boto3.client("xray").get_trace_summaries(StartTime=now - 600, EndTime=now + 60)["TraceSummaries"]
    assert len(summaries) >= 2
    messages = [m for m in progress(build)]
    assert any("helm upgrade erp in erp-prod: employee" in m for m in messages)
    assert any(m.startswith(":white_check_mark: Deployed to prod") and "rollout complete" in m for m in messages)

    # issue 19: while prod is locked, the Deploy action itself refuses before helm runs, and says why
    now = int(time.time())
    lock = EnvLock("prod", "U0APPR1", "INC-42 payments down", now, now + 3600)
    assert asyncio.run(state.take_lock(lock))
    locked = run(repo, build, DEPLOY_PHASE="deploy", IMAGE_TAGS=f"employee={repo['first']}",
                 PIPELINE_EXECUTION_ID="exec-2")
    assert not locked.succeeded
    helm_values = json.loads(subprocess.run([helm, "get", "values", "erp", "-n", namespace, "-o", "json", "--all",
                                             "--kubeconfig", str(kube.kubeconfig)], capture_output=True, text=True,
                                            check=True).stdout)
    assert helm_values["services"]["employee"]["image"]["tag"] == sha  # nothing deployed
    refusal = [m for m in progress(build, "exec-2") if "not deploying" in m]
    assert refusal and "prod is locked by Slack user U0APPR1" in refusal[0] and "INC-42 payments down" in refusal[0]
    # an IMAGE_TAGS that would set other chart values (a promotion's comes from a pipeline variable) is refused
    assert asyncio.run(state.release_lock(lock))
    sneaky = run(repo, build, DEPLOY_PHASE="deploy", PIPELINE_EXECUTION_ID="exec-3",
                 IMAGE_TAGS=f"employee={sha},services.employee.image.repository=evil/image")
    assert not sneaky.succeeded and "IMAGE_TAGS has" in sneaky.output
