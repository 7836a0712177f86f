"""`make bench`: figures measured in one run on the real parts, printed and saved as JSON.

The bot runs as its own process against moto's server, the local Slack Web API
and the CodePipeline stand-in, exactly as in the tests. Numbers and ratios, no
pass/fail: where an aim is missed the table says by how much.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
import tracemalloc
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bot.aws.clients import AwsClients
from bot.delivery.log_lines import as_file, fit_for_message, to_lines
from bot.slack.web_client import make_web_client
from sandbox.codepipeline import PipelineStandIn
from sandbox.local_aws import LocalAws
from sandbox.seed import create_events_queue, create_state_tables, sandbox_config
from sandbox.slack_rate_limits import RateLimits
from sandbox.slack_signing import signed_headers, slash_command_body
from sandbox.slack_workspace import SlackWorkspace
from tests.busy_hour import run_busy_hour
from tests.support import BackgroundLoop, BotProcess, http

SLACK_ACK_LIMIT_MS = 3000.0
THROUGHPUT_RATE_SCALE = 1000
RESULTS = Path(__file__).parent / "results"
TOKEN, SECRET = "xoxb-bench-token", "bench-signing-secret-0123456789"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def ack_latency(bot_url: str, concurrency: int = 50, rounds: int = 10) -> dict[str, float]:
    texts = ["help", "help deploy", "deploy employe prod", "logs notification prod 15x"]
    samples: list[float] = []
    async with aiohttp.ClientSession() as session:
        async def one(i: int) -> None:  # each request its own trigger_id, as Slack sends them (no replays)
            body = slash_command_body(text=texts[i % len(texts)], user_id="U0DEV1", user_name="dana",
                                      channel_id="C0DEV", channel_name="erp-dev",
                                      response_url="http://127.0.0.1:9/r", trigger_id=f"t{i}.{uuid.uuid4().hex}")
            started = time.perf_counter()
            async with session.post(bot_url, data=body.encode(), headers=signed_headers(SECRET, body)) as resp:
                await resp.read()
            assert resp.status == 200, f"the bench's request was refused: {resp.status}"
            samples.append((time.perf_counter() - started) * 1000)

        await asyncio.gather(*(one(i) for i in range(concurrency)))  # warm-up round
        samples.clear()
        for _ in range(rounds):
            await asyncio.gather(*(one(i) for i in range(concurrency)))
    return {"requests": len(samples), "p50_ms": statistics.median(samples), "p99_ms": percentile(samples, 99),
            "max_ms": max(samples)}


def queue_depth(aws: AwsClients, queue: str) -> int:
    attrs = aws.client("sqs").get_queue_attributes(
        QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])
    return sum(int(v) for v in attrs["Attributes"].values())


async def baseline_loop(aws: AwsClients, queue: str, slack_url: str, n: int) -> float:
    """The bare minimum on the same parts: receive, one chat.update, delete. Returns events per second."""
    client = make_web_client(TOKEN, slack_url, rate_scale=THROUGHPUT_RATE_SCALE)
    posted = await client.chat_postMessage(channel="C0DEV", text="baseline")
    done = 0
    started = time.perf_counter()
    while done < n:
        resp = await aws.call("sqs", "receive_message", QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for m in resp.get("Messages", []):
            await client.chat_update(channel="C0DEV", ts=posted["ts"], text=f"event {done}")
            await aws.call("sqs", "delete_message", QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
            done += 1
    took = time.perf_counter() - started
    await client.close()
    return n / took


def log_formatting(rows: int = 10_000) -> dict[str, float]:
    base = 1_795_000_000_000
    data = [{"@timestamp": str(base + i * 250),
             "@message": f"2026-11-26T03:00:00.000Z ERROR 1 --- [exec-{i % 9}] c.e.erp.Service : failure {i}"
                         + ("\n\tat a.B.c(B.java:10)" * (i % 12))} for i in range(rows)]
    tracemalloc.start()
    started = time.perf_counter()
    lines = to_lines(data)
    message, shown = fit_for_message(lines)
    file_text = as_file(lines)
    took = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"rows": rows, "seconds": took, "peak_mb": peak / 2**20, "shown_in_message": shown,
            "message_chars": len(message), "file_kb": len(file_text) / 1024}


def main() -> int:
    aws_proc = LocalAws()
    os.environ.update(aws_proc.env())
    tmp = Path(tempfile.mkdtemp(prefix="erp-bench-"))
    servers = BackgroundLoop()  # the local Slack and the stand-in answer while the bench blocks
    result: dict[str, Any] = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
                              "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                                         f"Python {platform.python_version()}"}
    try:
        aws = AwsClients()
        suffix = uuid.uuid4().hex[:6]
        table = f"bench-state-{suffix}"
        create_state_tables(aws, table)
        queue, _ = create_events_queue(aws, f"bench-events-{suffix}", f"bench-dlq-{suffix}")
        config = tmp / "config.yaml"
        config.write_text(yaml.safe_dump(sandbox_config(queue, table), sort_keys=False))
        workspace = SlackWorkspace(bot_token=TOKEN, signing_secret=SECRET)
        pipeline = PipelineStandIn(aws, queue, step_seconds=0.0)

        _, slack_port = servers.serve(workspace.web_app())
        workspace.base_url = f"http://127.0.0.1:{slack_port}"
        _, pipeline_port = servers.serve(pipeline.web_app())
        env = {**aws_proc.env(), "AWS_ENDPOINT_URL_CODEPIPELINE": f"http://127.0.0.1:{pipeline_port}",
               "BOT_CONFIG": str(config), "SLACK_BOT_TOKEN": TOKEN, "SLACK_SIGNING_SECRET": SECRET,
               "SLACK_API_URL": f"{workspace.base_url}/api/", "LOG_LEVEL": "WARNING", "QUEUE_WAIT_SECONDS": "1"}

        # 1. start-up, idle footprint, acknowledgement latency
        started = time.perf_counter()
        bot = BotProcess(env, tmp / "bot.log")
        while http("GET", f"{bot.url}/readyz")[0] != 200:
            time.sleep(0.02)
        result["startup_to_readyz_ms"] = (time.perf_counter() - started) * 1000
        result["rss_idle_mb"] = rss_mb(bot.proc.pid)
        result["ack_latency"] = asyncio.run(ack_latency(f"{bot.url}/slack/events"))

        # 2. noise of one full prod deploy (every CodePipeline, CodeBuild and scan event)
        workspace.bot_url = f"{bot.url}/slack/events"
        calls_before = len(workspace.calls)
        servers.run(workspace.send_command("U0DEV1", "C0PROD", "deploy employee prod"))

        def card() -> str:
            return json.dumps([m.blocks for m in workspace.channel_messages("C0PROD")])

        deadline = time.time() + 60
        while "Waiting for approval" not in card() and time.time() < deadline:
            time.sleep(0.1)
        message = workspace.channel_messages("C0PROD")[0]
        servers.run(workspace.click("U0APPR1", message, "deploy_approve"))
        while "Succeeded" not in card() and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(2)  # late thread notes count too
        events = len(pipeline.emitted)
        result["noise_prod_deploy"] = {
            "events": events, "channel_messages": len(workspace.channel_messages("C0PROD")),
            "slack_calls": len(workspace.calls) - calls_before,
            "slack_calls_by_method": dict(Counter(c.method for c in workspace.calls[calls_before:])),
            "thread_messages": len(workspace.thread("C0PROD", message.ts)),
            "relay_messages_for_comparison": events}

        # 3. a busy hour under Slack's rate limits
        result["busy_hour"] = run_busy_hour(servers, workspace, pipeline).summary(workspace, "C0DEV")
        print(f"busy hour: {result['busy_hour']}", flush=True)
        pipeline.step = 0.0

        # 4. throughput through one replica: a backlog of push-triggered executions, then drain it. This
        # measures the bot's own cost per event against the bare loop's, so Slack's limits are raised alike
        # for the local Slack and the bot's pacing (as in the soak); the busy hour above measured them.
        bot.stop()
        workspace.rate_limits = RateLimits(scale=THROUGHPUT_RATE_SCALE)
        env = {**env, "SLACK_RATE_SCALE": str(THROUGHPUT_RATE_SCALE)}
        before = len(pipeline.emitted)

        async def backlog(n: int) -> None:
            runs = [pipeline.start_from_push("dev") for _ in range(n)]
            await asyncio.gather(*(r.task for r in runs if r.task is not None))
        servers.run(backlog(40), timeout=300)
        backlog_events = len(pipeline.emitted) - before
        bot = BotProcess(env, tmp / "bot2.log")
        started = time.perf_counter()
        while queue_depth(aws, queue) > 0:
            time.sleep(0.2)
        drain = time.perf_counter() - started
        bot_eps = backlog_events / drain
        result["rss_after_mb"] = rss_mb(bot.proc.pid)
        bot.stop()
        for _ in range(backlog_events):
            aws.client("sqs").send_message(QueueUrl=queue, MessageBody="{}")
        base_eps = asyncio.run(baseline_loop(aws, queue, f"{workspace.base_url}/api/", backlog_events))
        result["throughput"] = {"events": backlog_events, "bot_events_per_s": bot_eps,
                                "baseline_events_per_s": base_eps, "overhead_ratio": base_eps / bot_eps}
        result["log_formatting"] = log_formatting()
    finally:
        servers.stop()
        aws_proc.stop()

    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"bench-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(result, indent=2))
    a, n, t, f = result["ack_latency"], result["noise_prod_deploy"], result["throughput"], result["log_formatting"]

    def row(name: str, value: str, aim: str = "") -> None:
        print(f"{name:<48}{value:>14}  {aim}")

    print(f"\nerp-chatops benchmarks ({result['machine']}, {result['date']})\n")
    row("measure", "value", "aim / note")
    row("ack latency p50 (50 concurrent /erp)", f"{a['p50_ms']:.1f} ms")
    ratio = a["p99_ms"] / SLACK_ACK_LIMIT_MS
    row("ack latency p99", f"{a['p99_ms']:.1f} ms", f"aim < 100 ms; {ratio:.3f}x of Slack's 3000 ms limit")
    row("ack latency max", f"{a['max_ms']:.1f} ms")
    row("events/s through one replica", f"{t['bot_events_per_s']:.1f}",
        f"{t['events']} events of 40 executions, cards and state included")
    row("bare loop on the same parts (events/s)", f"{t['baseline_events_per_s']:.1f}", "receive, chat.update, delete")
    row("overhead ratio (bare / bot)", f"{t['overhead_ratio']:.2f}x", "aim <= 1.5x"
        + ("" if t["overhead_ratio"] <= 1.5 else f": missed by {t['overhead_ratio'] / 1.5:.2f}x (see README)"))
    row("prod deploy: channel messages", str(n["channel_messages"]), f"aim 1; a relay posts {n['events']}")
    row("prod deploy: Slack API calls", str(n["slack_calls"]), "aim <= 15"
        + ("" if n["slack_calls"] <= 15 else f": {n['slack_calls'] - 15} over (see README)"))
    row("prod deploy: thread replies", str(n["thread_messages"]))
    b = result["busy_hour"]
    row("busy hour: cards final after the last end", f"{b['convergence_s']:.1f} s",
        f"aim <= {b['goal_s']:.0f} s ({b['convergence_s'] / b['goal_s']:.2f}x of it); 8 executions, one channel, "
        f"{b['slack_calls']} Slack calls, {b['rate_limited_429']} answered 429")
    row("busy hour: all thread notes posted after", f"{b['notes_s']:.1f} s",
        f"{b['thread_notes']} notes at Slack's ~1 post/s per channel; none lost")
    row("RSS idle", f"{result['rss_idle_mb']:.0f} MB", "aim < 120 MB")
    row("RSS after the backlog", f"{result['rss_after_mb']:.0f} MB")
    row("start-up to /readyz", f"{result['startup_to_readyz_ms']:.0f} ms", "aim < 2000 ms")
    row("10,000 log rows -> message + file", f"{f['seconds'] * 1000:.0f} ms", f"peak {f['peak_mb']:.1f} MB, "
        f"{f['shown_in_message']} lines shown, file {f['file_kb']:.0f} KB")
    print(f"\nsaved {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
