"""The bot's HTTP side: Slack's requests, health, readiness and metrics.

  POST /slack/events  slash commands and interactivity, verified by Bolt
  GET  /healthz       the process is alive
  GET  /readyz        it can do its job (see readiness.py)
and on a port of its own (METRICS_PORT), so the network policy can open the Slack port alone to the world:
  GET  /metrics       Prometheus text
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp

from bot.aws.clients import AWS_THREADS, error_code
from bot.jsonlog import request_id
from bot.readiness import Readiness
from bot.runtime import Runtime
from bot.slack.request_shape import request_problem

log = logging.getLogger(__name__)

SHUTDOWN_BUDGET = 18.0  # seconds: Kubernetes' default grace period is 30, ours promises 20
MAX_BODY = 256 * 1024  # Slack's payloads are far smaller; refuse anything bigger


def build_http_app(runtime: Runtime, bolt: AsyncApp) -> web.Application:
    readiness = Readiness(runtime)
    metrics = runtime.metrics

    @web.middleware
    async def observe(request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        request_id.set(request.headers.get("X-Request-Id") or uuid.uuid4().hex[:12])
        try:
            response = await handler(request)
        except web.HTTPException as e:
            metrics.http_requests.labels(route, str(e.status)).inc()
            raise
        except Exception:
            log.exception("unhandled error on %s", route)
            metrics.http_requests.labels(route, "500").inc()
            return web.json_response({"error": "internal error"}, status=500)
        metrics.http_requests.labels(route, str(response.status)).inc()
        return response

    async def slack_events(request: web.Request) -> web.StreamResponse:
        # Anything may arrive here before Bolt checks the signature: whatever it is, a 4xx and one log line
        # (aiohttp refuses a body over MAX_BODY with 413 before this runs).
        problem = request_problem(await request.read(), request.content_type,
                                  request.headers.get("X-Slack-Request-Timestamp"))
        bolt_request = None
        if problem is None:
            try:
                bolt_request = await to_bolt_request(request)  # Bolt parses the body here
            except (ValueError, RecursionError, UnicodeDecodeError) as e:
                problem = f"Bolt could not read it ({type(e).__name__})"
        if bolt_request is None:
            log.warning("refused a request that is not a Slack payload: %s", problem)
            return web.json_response({"error": "invalid payload"}, status=400)
        with runtime.work.acks.acking():
            bolt_response = await bolt.async_dispatch(bolt_request)
        return await to_aiohttp_response(bolt_response)

    async def healthz(_: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "alive"})

    async def readyz(_: web.Request) -> web.StreamResponse:
        ready, details = await readiness.check()
        return web.json_response(details, status=200 if ready else 503)

    app = web.Application(middlewares=[observe], client_max_size=MAX_BODY)

    async def check_readiness_early(_: web.Application) -> None:
        readiness.start()  # under way while the port opens: the first probe is answered sooner

    async def stop_readiness(_: web.Application) -> None:
        await readiness.stop()
    app.on_startup.append(check_readiness_early)
    app.on_cleanup.append(stop_readiness)
    app.router.add_post("/slack/events", slack_events)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


def build_metrics_app(runtime: Runtime) -> web.Application:
    async def metrics_page(_: web.Request) -> web.StreamResponse:
        return web.Response(body=runtime.metrics.render(), headers={"Content-Type": runtime.metrics.content_type})

    app = web.Application(client_max_size=1024)
    app.router.add_get("/metrics", metrics_page)
    return app


HEALTHY_AFTER = 60.0  # a restarted background job that runs this long is no longer failing


async def _supervised(job: Callable[[], Awaitable[None]], runtime: Runtime) -> None:
    """Run a background job for the life of the process: if it ever ends or raises (it should not), log it,
    mark it failing (see Readiness) and start it again, backing off."""
    name = getattr(getattr(job, "func", job), "__qualname__", repr(job))
    failures = 0
    while not runtime.draining:
        healthy: asyncio.TimerHandle | None = None
        if name in runtime.failing_since:  # restarted: healthy again once it has run a while
            healthy = asyncio.get_running_loop().call_later(HEALTHY_AFTER, runtime.failing_since.pop, name, None)
        try:
            await job()
            problem = "returned"
        except asyncio.CancelledError:
            raise
        except Exception as e:
            problem = f"failed: {error_code(e)}"
            log.exception("background job %s failed", name)
        finally:
            if healthy is not None:
                healthy.cancel()
        if runtime.draining:
            return
        failures += 1
        runtime.failing_since.setdefault(name, time.monotonic())
        delay = min(60.0, 2.0 ** failures)
        log.error("background job %s %s; starting it again in %.0fs", name, problem, delay)
        await asyncio.sleep(delay)


async def _watchdog(runtime: Runtime, stop: asyncio.Event) -> None:
    """Background work failing for longer than `exit_after`: exit (non-zero) so Kubernetes starts a new pod."""
    while True:
        await asyncio.sleep(min(5.0, runtime.exit_after / 4))
        now = time.monotonic()
        stuck = [name for name, since in runtime.failing_since.items() if now - since >= runtime.exit_after]
        if stuck:
            log.error("%s failing for over %.0fs: exiting so this pod is replaced", ", ".join(stuck),
                      runtime.exit_after)
            runtime.exit_code = 1
            stop.set()
            return


async def serve(app: web.Application, runtime: Runtime, host: str, port: int,
                background: Sequence[Callable[[], Awaitable[None]]] = (), metrics_port: int | None = None) -> None:
    """Serve until SIGTERM/SIGINT, then drain: no new work, finish what is in flight, exit."""
    # boto3 calls run in the default executor: room for a burst of commands and the consumer at once
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=AWS_THREADS,
                                                                       thread_name_prefix="aws"))
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=3.0)
    await runner.setup()
    metrics_runner = web.AppRunner(build_metrics_app(runtime), access_log=None, handle_signals=False)
    await metrics_runner.setup()
    metrics_port = port + 1 if metrics_port is None else metrics_port
    try:
        site = await _listen(runner, host, port)
        await _listen(metrics_runner, host, metrics_port)
    except ListenError:
        await runner.cleanup()
        await metrics_runner.cleanup()
        await _close_slack(runtime)
        raise
    log.info("listening on %s:%d (metrics on :%d)", host, port, metrics_port)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.ensure_future(_supervised(job, runtime)) for job in background]
    tasks.append(asyncio.ensure_future(_watchdog(runtime, stop)))
    await stop.wait()

    log.info("shutting down: no new work, finishing %d in flight", runtime.work.count)
    runtime.draining = True
    for task in tasks:
        task.cancel()  # consumers stop taking messages; unfinished ones return to the queue
    await asyncio.gather(*tasks, return_exceptions=True)
    await runtime.work.drain(SHUTDOWN_BUDGET - 4.0)
    await site.stop()
    await runner.cleanup()
    await metrics_runner.cleanup()
    await _close_slack(runtime)
    log.info("stopped")


class ListenError(Exception):
    """The bot cannot listen where it was told to (another process holds the port, say)."""


async def _listen(runner: web.AppRunner, host: str, port: int) -> web.TCPSite:
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as e:
        reason = os.strerror(e.errno).lower() if e.errno else str(e)
        raise ListenError(f"cannot listen on {host}:{port}: {reason}") from None
    return site


async def _close_slack(runtime: Runtime) -> None:
    close_slack = getattr(runtime.slack, "close", None)  # its one HTTP session
    if close_slack is not None:
        await close_slack()
