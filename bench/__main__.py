"""`make bench`: figures measured in one run on the real parts, printed and saved as JSON.

Runs the bot as its own process against moto's server and the local Slack Web
API, exactly as the tests do, and reports numbers and ratios, never pass/fail.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import yaml

from bot.aws import AwsClients
from bot.sandbox.local_aws import LocalAws
from bot.sandbox.seed import create_events_queue, create_state_table, sandbox_config
from bot.sandbox.slack_signing import signed_headers, slash_command_body
from bot.sandbox.slack_workspace import SlackWorkspace
from tests.support import BotProcess

SLACK_ACK_LIMIT_MS = 3000.0
RESULTS = Path(__file__).parent / "results"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def ack_latency(bot_url: str, secret: str, concurrency: int = 50, rounds: int = 10) -> dict[str, float]:
    """Wall time from sending a signed /erp command to the bot's acknowledgement, many at once."""
    texts = ["help", "help deploy", "deploy employe prod", "logs notification prod 15x"]
    samples: list[float] = []
    async with aiohttp.ClientSession() as session:
        async def one(i: int) -> None:
            body = slash_command_body(text=texts[i % len(texts)], user_id="U0DEV1", user_name="dana",
                                      channel_id="C0DEV", channel_name="erp-dev",
                                      response_url="http://127.0.0.1:9/r", trigger_id=f"t{i}")
            started = time.perf_counter()
            async with session.post(bot_url, data=body.encode(), headers=signed_headers(secret, body)) as resp:
                await resp.read()
                assert resp.status == 200, resp.status
            samples.append((time.perf_counter() - started) * 1000)

        await asyncio.gather(*(one(i) for i in range(concurrency)))  # warm-up round, not counted
        samples.clear()
        for _ in range(rounds):
            await asyncio.gather(*(one(i) for i in range(concurrency)))
    return {"requests": len(samples), "concurrency": concurrency, "p50_ms": statistics.median(samples),
            "p99_ms": percentile(samples, 99), "max_ms": max(samples)}


def main() -> int:
    aws_proc = LocalAws()
    os.environ.update(aws_proc.env())
    tmp = Path(tempfile.mkdtemp(prefix="erp-bench-"))
    loop = asyncio.new_event_loop()
    try:
        suffix = uuid.uuid4().hex[:6]
        aws = AwsClients()
        table = f"bench-state-{suffix}"
        create_state_table(aws, table)
        queue, _ = create_events_queue(aws, f"bench-events-{suffix}", f"bench-dlq-{suffix}")
        config = tmp / "config.yaml"
        config.write_text(yaml.safe_dump(sandbox_config(queue, table), sort_keys=False))
        token, secret = "xoxb-bench-token", "bench-signing-secret-0123456789"
        workspace = SlackWorkspace(bot_token=token, signing_secret=secret)

        async def start_slack() -> int:
            from aiohttp import web
            runner = web.AppRunner(workspace.web_app(), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            return int(runner.addresses[0][1])

        slack_port = loop.run_until_complete(start_slack())
        started = time.perf_counter()
        bot = BotProcess({**aws_proc.env(), "BOT_CONFIG": str(config), "SLACK_BOT_TOKEN": token,
                          "SLACK_SIGNING_SECRET": secret, "SLACK_API_URL": f"http://127.0.0.1:{slack_port}/api/",
                          "LOG_LEVEL": "WARNING"}, tmp / "bot.log")
        startup_ms = (time.perf_counter() - started) * 1000
        try:
            ack = loop.run_until_complete(ack_latency(f"{bot.url}/slack/events", secret))
        finally:
            bot.stop()
    finally:
        loop.close()
        aws_proc.stop()

    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "ack_latency": {**ack, "ratio_p99_to_slack_limit": ack["p99_ms"] / SLACK_ACK_LIMIT_MS},
        "startup_to_healthz_ms": startup_ms,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"bench-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(result, indent=2))

    a = result["ack_latency"]
    print(f"\nerp-chatops benchmarks ({result['machine']}, {result['date']})\n")
    print(f"{'measure':<44}{'value':>12}  aim / note")
    print(f"{'ack latency p50 (50 concurrent /erp)':<44}{a['p50_ms']:>10.1f}ms")
    print(f"{'ack latency p99':<44}{a['p99_ms']:>10.1f}ms  aim < 100 ms")
    print(f"{'ack latency max':<44}{a['max_ms']:>10.1f}ms")
    print(f"{'p99 / Slack 3000 ms limit':<44}{a['ratio_p99_to_slack_limit']:>11.3f}x")
    print(f"{'start-up to /healthz':<44}{startup_ms:>10.0f}ms  (process start, imports, config)")
    print(f"\nsaved {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
