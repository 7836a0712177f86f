"""`python -m bot sandbox`: the whole system on one machine, nothing to sign up for.

Starts moto's server (seeded with the ERP resources), the CodePipeline
stand-in, the local Slack workspace with its web page on PORT (default 3000),
and the bot itself wired to them, reading its Slack credentials from the local
Secrets Manager as it would in the cluster. Ctrl-C stops everything.
SANDBOX_FAIL_BUILD=<service>, SANDBOX_CRITICAL_SCAN=<service> or
SANDBOX_FAIL_DEPLOY=1 show the failure paths.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from aiohttp import web

from bot.aws.clients import AwsClients
from sandbox.codepipeline import Faults, PipelineStandIn
from sandbox.erp_cluster import SandboxCluster
from sandbox.local_aws import LocalAws, free_port
from sandbox.local_kube import KubeUnavailable, find_tools
from sandbox.logs_insights import InsightsStandIn
from sandbox.page import add_page_routes
from sandbox.seed import SLACK_SECRET_ID, sandbox_config, seed_all
from sandbox.slack_workspace import SlackWorkspace


async def _main(host: str, port: int) -> int:
    from bot.app import build_bot
    from bot.http_server import serve

    aws_proc = LocalAws()
    cluster: SandboxCluster | None = None
    workdir = Path(tempfile.mkdtemp(prefix="erp-chatops-sandbox-"))
    try:
        os.environ.update(aws_proc.env())  # boto3 finds local AWS through its own endpoint resolution
        bot_token = "xoxb-sandbox-" + secrets.token_hex(8)
        signing_secret = secrets.token_hex(16)
        # seeding local AWS and starting Kubernetes take seconds each and need nothing of each other
        seeding = asyncio.create_task(asyncio.to_thread(seed_all, AwsClients(), bot_token, signing_secret))
        try:
            cluster = await _start_cluster()
        finally:
            seeding.add_done_callback(_report_failed_seeding)  # said even if the cluster's start failed first
        seeded = await seeding
        config_path = workdir / "config.yaml"
        config = sandbox_config(seeded["queue_url"], seeded["table"], seeded["progress_queue_url"])
        if os.environ.get("SANDBOX_FREEZE", "1") == "0":  # no demo freeze (tests that run on any day)
            config["environments"]["prod"].pop("freeze", None)
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))

        faults = Faults(fail_build=_names("SANDBOX_FAIL_BUILD"), critical_scan=_names("SANDBOX_CRITICAL_SCAN"),
                        fail_deploy=os.environ.get("SANDBOX_FAIL_DEPLOY") == "1")
        pipeline = PipelineStandIn(AwsClients(), seeded["queue_url"],
                                   step_seconds=float(os.environ.get("SANDBOX_STEP_SECONDS", "1.5")), faults=faults,
                                   deployer=cluster.deploy if cluster else None)
        pipeline_runner = web.AppRunner(pipeline.web_app(), access_log=None)
        await pipeline_runner.setup()
        pipeline_port = free_port()
        await web.TCPSite(pipeline_runner, "127.0.0.1", pipeline_port).start()
        os.environ["AWS_ENDPOINT_URL_CODEPIPELINE"] = f"http://127.0.0.1:{pipeline_port}"
        insights_runner = web.AppRunner(InsightsStandIn(aws_proc.url).web_app(), access_log=None)
        await insights_runner.setup()
        insights_port = free_port()
        await web.TCPSite(insights_runner, "127.0.0.1", insights_port).start()
        # boto3's name for CloudWatch Logs' own endpoint (its service ID, "CloudWatch Logs")
        os.environ["AWS_ENDPOINT_URL_CLOUDWATCH_LOGS"] = f"http://127.0.0.1:{insights_port}"

        workspace = SlackWorkspace(bot_token=bot_token, signing_secret=signing_secret)
        app = workspace.web_app()
        add_page_routes(app, workspace, pipeline, cluster.kube if cluster else None)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        workspace.base_url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"  # noqa: S104
        # the buildspec's progress lines go to the bot's queue, as in CodeBuild: CI holds no Slack credential
        pipeline.notify_environ = {"PROGRESS_QUEUE_URL": seeded["progress_queue_url"]}
        pipeline.state_table = seeded["table"]  # and its Deploy action checks the lock and the freeze

        bot_port = free_port()
        environ = {"BOT_CONFIG": str(config_path), "SLACK_SECRET_ID": SLACK_SECRET_ID,
                   "SLACK_API_URL": f"{workspace.base_url}/api/"}
        if cluster is not None:
            environ.update(KUBECONFIG=str(cluster.kube.kubeconfig), HELM_BIN=cluster.helm, ROLLOUT_TIMEOUT_SECONDS="60")
        # the bot's own tunables, as a deployment's env sets them (the page tests shorten the drift check)
        environ.update({k: v for k, v in os.environ.items() if k in ("DRIFT_CHECK_SECONDS", "APPROVAL_SWEEP_SECONDS")})
        bot = build_bot(environ=environ)
        workspace.bot_url = f"http://127.0.0.1:{bot_port}/slack/events"
        kube_note = f"Kubernetes {cluster.kube.url}" if cluster else \
            "no Kubernetes (run `make tools` for status and rollback)"
        print(f"\n  erp-chatops sandbox is up: open http://localhost:{port}\n"
              f"  (bot on :{bot_port}, local AWS on {aws_proc.url}, {kube_note}; Ctrl-C stops everything)\n",
              file=sys.stderr, flush=True)
        background: list[Callable[[], Awaitable[None]]] = list(bot.background)  # as in production
        if cluster is not None:
            background.append(cluster.play_controllers)
        await serve(bot.http, bot.runtime, "127.0.0.1", bot_port, background=background, metrics_port=free_port())
        await runner.cleanup()
        await pipeline_runner.cleanup()
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # first: a second Ctrl-C may cut the stops below short
        if cluster is not None:
            cluster.stop()
        aws_proc.stop()


async def _start_cluster() -> SandboxCluster | None:
    """A real API server and helm when they are built and etcd is installed; otherwise none."""
    tools = find_tools()
    if tools is None:
        return None
    # Its start waits for the API server, so off the loop, on a thread of its own: Ctrl-C meanwhile cannot stop
    # the thread, so whatever it finishes starting is stopped when it is done.
    starting = ThreadPoolExecutor(1, thread_name_prefix="kube-start")
    building = starting.submit(SandboxCluster, tools)
    starting.shutdown(wait=False)
    try:
        cluster = await asyncio.wrap_future(building)
    except asyncio.CancelledError:
        building.add_done_callback(lambda f: None if f.cancelled() or f.exception() else f.result().stop())
        raise
    except (KubeUnavailable, RuntimeError) as e:
        print(f"erp-chatops sandbox: no Kubernetes: {e}", file=sys.stderr)
        return None
    try:
        await cluster.install()
        return cluster
    except BaseException as e:
        cluster.stop()  # etcd and the API server are up: never leave them behind
        if not isinstance(e, (KubeUnavailable, RuntimeError)):
            raise
        print(f"erp-chatops sandbox: no Kubernetes: {e}", file=sys.stderr)
        return None


def _report_failed_seeding(task: asyncio.Task[dict[str, str]]) -> None:
    if not task.cancelled() and task.exception() is not None:
        print(f"erp-chatops sandbox: seeding local AWS failed: {task.exception()}", file=sys.stderr)


def _names(variable: str) -> set[str]:
    return {n.strip() for n in os.environ.get(variable, "").split(",") if n.strip()}


def run_sandbox(port: int = 3000, host: str = "127.0.0.1") -> int:
    try:
        return asyncio.run(_main(host, port))
    except OSError as e:
        print(f"erp-chatops sandbox: cannot start: {e}", file=sys.stderr)
        return 2
