from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.aws.clients import AwsClients
from bot.cluster.helm import HELM_DRIVER
from sandbox.aws_fault_proxy import AwsFaultProxy
from sandbox.codepipeline import PipelineStandIn
from sandbox.ecr_images import create_repositories
from sandbox.ecr_pages import EcrPager
from sandbox.erp_services import SERVICES
from sandbox.local_kube import KubeUnavailable, LocalKube
from sandbox.logs_insights import InsightsStandIn
from sandbox.seed import create_events_queue, create_progress_queue, create_state_tables
from sandbox.service_logs import seed_service_logs
from sandbox.slack_workspace import SlackWorkspace
from tests.support import (
    BOT_TOKEN,
    SIGNING_SECRET,
    BackgroundLoop,
    BotProcess,
    MotoServer,
    base_config,
    served,
    stop_the_rest,
    tools_bin,
    write_config,
)

# helm run by the tests themselves (installing the releases the bot then reads) keeps its records where the
# bot's helm and the buildspec's look for them
os.environ["HELM_DRIVER"] = HELM_DRIVER


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long end-to-end tests (marked slow) first on every worker: the longest must not start last.
    xdist's worksteal hands each worker one contiguous block of the collection to begin with (then moves
    work from the longest queue to idle workers), so each block starts with its share of the slow tests; all
    of them at the front had given the first worker every one of them, one after another."""
    workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    slow = interleaved_by_module([item for item in items if item.get_closest_marker("slow") is not None])
    rest = [item for item in items if item.get_closest_marker("slow") is None]
    total, items[:] = len(items), []
    for n in range(workers):  # the block sizes worksteal sends: what is left divided by the workers left
        size = (total - len(items)) // (workers - n)
        block = slow[n::workers]
        items += block + rest[:max(0, size - len(block))]
        del rest[:max(0, size - len(block))]
    items += rest


def interleaved_by_module(items: list[pytest.Item]) -> list[pytest.Item]:
    """One test of each module in turn, the modules with fewest first: a module's only slow test is one long
    run (the soak, the image build) and starts first; and no two workers begin with the same module, whose
    shared setup (the buildspec's wheelhouse, built once per run) one would build while the others waited."""
    modules: dict[str, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::")[0], []).append(item)
    queues = sorted(modules.values(), key=len)
    return [queue[i] for i in range(max(map(len, queues), default=0)) for queue in queues if i < len(queue)]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    """Under CI=true a test that would skip (a missing tool) fails instead."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") == "true" and report.skipped and call.when in ("setup", "call"):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, which counts as a failure: {report.longrepr}"


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    server = MotoServer()
    saved = {k: os.environ.get(k) for k in server.env()}
    os.environ.update(server.env())
    yield server
    try:
        stop_the_rest()  # the bots told to stop soon (every bot needs this server), ended before it goes
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


@pytest.fixture(scope="session")
def aws(moto: MotoServer) -> AwsClients:
    """The test process's own clients of the local AWS, made once: a new AwsClients reads botocore's endpoint
    and service models again (a third of a second of CPU), and nearly every test made one or two."""
    return AwsClients()


@pytest.fixture
def aws_resources(aws: AwsClients) -> dict[str, str]:
    """A fresh state table and events queue (with its DLQ) per test, so tests never share state."""
    suffix = uuid.uuid4().hex[:8]
    table = f"erp-chatops-state-{suffix}"
    create_state_tables(aws, table)
    queue, dlq = create_events_queue(aws, f"erp-chatops-events-{suffix}", f"erp-chatops-events-dlq-{suffix}")
    progress = create_progress_queue(aws, f"erp-chatops-progress-{suffix}")
    return {"table": table, "queue_url": queue, "dlq_url": dlq, "progress_queue_url": progress}


@pytest.fixture(scope="session")
def background_loop() -> Iterator[BackgroundLoop]:
    loop = BackgroundLoop()
    yield loop
    loop.stop()


@pytest.fixture
def slack(background_loop: BackgroundLoop) -> Iterator[SlackWorkspace]:
    workspace = SlackWorkspace(bot_token=BOT_TOKEN, signing_secret=SIGNING_SECRET)
    runner, port = background_loop.serve(workspace.web_app())
    workspace.base_url = f"http://127.0.0.1:{port}"
    yield workspace
    background_loop.run(runner.cleanup())


@pytest.fixture
def pipeline(background_loop: BackgroundLoop, aws: AwsClients, aws_resources: dict[str, str]
             ) -> Iterator[PipelineStandIn]:
    """The CodePipeline stand-in, fast: each step takes a few hundredths of a second."""
    with served(background_loop, PipelineStandIn(aws, aws_resources["queue_url"],
                                                 step_seconds=0.05)) as stand_in:
        yield stand_in
        for execution in stand_in.executions.values():
            if execution.task is not None:
                background_loop.loop.call_soon_threadsafe(execution.task.cancel)


@pytest.fixture
def insights(background_loop: BackgroundLoop, moto: MotoServer) -> Iterator[InsightsStandIn]:
    """CloudWatch Logs Insights, really running the queries (moto ignores filter and stats)."""
    with served(background_loop, InsightsStandIn(moto.url)) as stand_in:
        yield stand_in


@pytest.fixture
def ecr_pages(background_loop: BackgroundLoop, moto: MotoServer) -> Iterator[EcrPager]:
    """ECR's scan findings a page at a time, as AWS serves them (moto answers with all of them at once)."""
    with served(background_loop, EcrPager(upstream=moto.url)) as pager:
        yield pager


@pytest.fixture
def aws_faults(background_loop: BackgroundLoop, moto: MotoServer) -> Iterator[AwsFaultProxy]:
    """A fault-injecting proxy in front of moto; point a service at it with AWS_ENDPOINT_URL_<SERVICE>."""
    with served(background_loop, AwsFaultProxy(upstream=moto.url)) as proxy:
        yield proxy


@pytest.fixture
def config_file(tmp_path: Path, aws_resources: dict[str, str]) -> Path:
    return write_config(tmp_path / "config.yaml", base_config(aws_resources["queue_url"], aws_resources["table"],
                                                             aws_resources["progress_queue_url"]))


@pytest.fixture
def bot_env(moto: MotoServer, slack: SlackWorkspace, config_file: Path, pipeline: PipelineStandIn,
            insights: InsightsStandIn, ecr_pages: EcrPager) -> dict[str, str]:
    return {**moto.env(), "AWS_ENDPOINT_URL_CODEPIPELINE": pipeline.url, "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS": insights.url,
            "AWS_ENDPOINT_URL_ECR": ecr_pages.url,
            "BOT_CONFIG": str(config_file), "SLACK_API_URL": f"{slack.base_url}/api/",
            "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET, "LOG_LEVEL": "DEBUG",
            "QUEUE_WAIT_SECONDS": "1"}


@pytest.fixture
def bot(bot_env: dict[str, str], slack: SlackWorkspace, tmp_path: Path) -> Iterator[BotProcess]:
    process = BotProcess(bot_env, tmp_path / "bot.log")
    slack.bot_url = f"{process.url}/slack/events"
    yield process
    process.stop_soon()


@pytest.fixture(scope="session")
def erp_images(aws: AwsClients) -> None:
    """The ERP repositories in moto's ECR (tests push their own uniquely tagged images)."""
    try:
        create_repositories(aws, list(SERVICES))
    except Exception as e:  # a second session on the same server
        if "RepositoryAlreadyExists" not in str(e):
            raise


@pytest.fixture(scope="session")
def erp_logs(aws: AwsClients) -> int:
    """Three hours of Spring Boot logs in the prod log groups; dev has none."""
    return seed_service_logs(aws, list(SERVICES), ["prod"])


@pytest.fixture(scope="session")
def tools() -> Path:
    found = tools_bin()
    if found is None:
        pytest.skip("kube-apiserver and helm are not built (make tools)")
    return found


@pytest.fixture(scope="session")
def helm(tools: Path) -> str:
    return str(tools / "helm")


@pytest.fixture(scope="session")
def kube(tools: Path) -> Iterator[LocalKube]:
    """A real kube-apiserver + etcd for the session (each test uses its own namespaces)."""
    try:
        cluster = LocalKube(tools)
    except KubeUnavailable as e:
        pytest.skip(str(e))
    cluster.install_external_secrets_crds()
    yield cluster
    cluster.stop()
