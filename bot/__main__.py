"""`python -m bot serve | sandbox | notify | ci` (also the console script `erp-chatops`)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys

from bot.jsonlog import setup_logging


def started_up() -> None:
    """The collector back on, over a heap it need not walk again: what start-up made (modules, Bolt's
    listeners, the runtime) lives as long as the process, so it is frozen out of every later collection.
    _serve turned the collector off while that was made: imports and set-up allocate hundreds of thousands
    of objects and little garbage, and collecting over them cost about a tenth of the start to /readyz. The
    little cyclic garbage they did leave (about 0.4 MB) is frozen with the rest: a collection first would
    cost half of what this saves."""
    gc.freeze()
    gc.enable()


def _serve(args: argparse.Namespace) -> int:
    gc.disable()  # until started_up()
    from bot.app import StartupError, build_bot
    from bot.config import ConfigError
    from bot.http_server import ListenError, serve
    from bot.slack_credentials import CredentialsError

    try:
        bot = build_bot()
        started_up()
        port = int(os.environ.get("PORT", "3000"))
        metrics_port = int(os.environ.get("METRICS_PORT", "9102"))
        asyncio.run(serve(bot.http, bot.runtime, args.host, port, background=bot.background,
                          metrics_port=metrics_port))
    except (StartupError, ConfigError, CredentialsError, ListenError) as e:
        print(f"erp-chatops: cannot start: {e}", file=sys.stderr)
        logging.getLogger("bot").error("cannot start: %s", e)
        return 2
    return bot.runtime.exit_code


def _checkout() -> str | None:
    """The repository checkout this is run from (the folder holding sandbox/run.py and bot/), if any."""
    from pathlib import Path

    for folder in (Path.cwd(), *Path.cwd().parents):
        if (folder / "sandbox" / "run.py").is_file() and (folder / "bot").is_dir():
            return str(folder)
    return None


def _sandbox(args: argparse.Namespace) -> int:
    # The sandbox lives beside the bot in a checkout (sandbox/), never in the wheel or the image: found from
    # the working folder (or one above it), whichever way the command was started
    checkout = _checkout()
    if checkout is not None and sys.path[:1] != [checkout]:
        sys.path.insert(0, checkout)
    try:
        from sandbox.run import run_sandbox
    except ModuleNotFoundError as e:
        if e.name not in ("sandbox", "sandbox.run"):
            raise
        print("erp-chatops: the sandbox runs from a checkout of the repository: cd into it and run"
              " `make sandbox` (or `python -m bot sandbox`)", file=sys.stderr)
        return 2
    return run_sandbox(port=int(os.environ.get("PORT", "3000")), host=args.host)


def _notify(args: argparse.Namespace) -> int:
    from bot.ci.notify import Notifier

    text = sys.stdin.read() if args.text == "-" else args.text
    Notifier().post(text)
    return 0  # a progress message never fails the build


def _redrive(args: argparse.Namespace) -> int:
    from bot.aws.clients import AwsClients
    from bot.config import ConfigError, load_config
    from bot.ops.redrive import redrive

    try:
        queue_url = load_config(args.config or os.environ.get("BOT_CONFIG", "")).events_queue_url
    except ConfigError as e:
        print(f"erp-chatops redrive: {e}", file=sys.stderr)
        return 2
    done = redrive(AwsClients(), queue_url, limit=args.limit)
    print(f"moved {done.moved} message(s) from {done.dead_letter_queue} back to {queue_url}")
    return 0


def _ci(args: argparse.Namespace) -> int:
    import time

    from bot.ci import build_steps as steps
    from bot.ci.notify import Notifier

    notifier = Notifier()
    try:
        if args.step == "changed-services":
            print(" ".join(steps.changed_services(os.environ)))
        elif args.step == "image-tags":
            print(steps.image_tags(args.services, args.tag))
        elif args.step == "image-ref":
            print(steps.image_ref(args.service, args.tag, os.environ))
        elif args.step == "scan-gate":
            steps.scan_gate(args.services, args.tag, notifier, wait_seconds=args.wait)
        elif args.step == "deploy":
            promoting = os.environ.get("DEPLOY_PHASE") == "promote"
            if promoting:  # the image must be what the source environment last deployed well
                steps.promotion_gate(os.environ, args.environment,
                                     steps.image_pairs(args.image_tags, {**os.environ, "CHART": args.chart}))
            if args.image_tags.strip():  # something to deploy: the lock and the freeze first, before helm
                steps.deploy_gate(os.environ, args.environment)
            started = time.time()
            try:
                result = steps.deploy(args.release, args.chart, args.namespace, args.environment, args.image_tags,
                                      notifier, rollout_timeout=args.rollout_timeout,
                                      execution_id=os.environ.get("PIPELINE_EXECUTION_ID", "").strip())
            except Exception as e:  # helm may have run: whatever stopped it, this attempt did not go well
                detail = str(e) if isinstance(e, steps.StepFailed) else f"{type(e).__name__}: {e}"
                result = steps.DeployResult(False, None, f"the deploy stopped: {detail[-300:]}")
            ended = time.time()
            try:
                steps.xray_segment("erp-deploy", started, ended, result.ok, {
                    "environment": args.environment, "images": args.image_tags or "none",
                    "result": "succeeded" if result.ok else "failed"})
            except Exception as e:  # the trace is a record, not a reason to fail a deploy
                print(f"ci deploy: could not record the X-Ray segment: {type(e).__name__}", file=sys.stderr)
            took = f"{ended - started:.0f}s"
            if args.commit:
                # a promoted image (tag@digest) went out at the commit it was built from, not the source's
                for service, ref in steps.image_pairs(args.image_tags, {**os.environ, "CHART": args.chart}):
                    tag, _, digest = ref.partition("@")
                    try:
                        steps.record_deploy(os.environ, args.environment, tag if digest else args.commit, [service],
                                            ok=result.ok, images={service: ref})
                    except Exception as e:
                        if result.ok:  # deployed, but the next build and /erp promote would not know it
                            raise steps.StepFailed(f"deployed, but could not record {service}'s deploy"
                                                   f" ({type(e).__name__}); deploy it again") from None
                        print(f"ci deploy: could not record the failed attempt: {type(e).__name__}", file=sys.stderr)
            if not result.ok:
                raise steps.StepFailed(f"{result.message} (after {took})")
            notifier.post(f":white_check_mark: Deployed to {args.environment} in {took}: {result.message}")
    except steps.StepFailed as e:
        print(f"ci {args.step}: {e}", file=sys.stderr)
        notifier.post(f":x: {args.step}: {e}")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="erp-chatops", description="The ERP platform's ChatOps Slack bot")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_p = sub.add_parser("serve", help="run the bot (production)")
    serve_p.add_argument("--host", default="0.0.0.0")  # noqa: S104 - a container listens on all interfaces
    sandbox_p = sub.add_parser("sandbox", help="run the bot with a local Slack workspace and local AWS")
    sandbox_p.add_argument("--host", default="127.0.0.1")
    notify_p = sub.add_parser("notify", help="post a line into the deploy's Slack thread (for the buildspec)")
    notify_p.add_argument("--text", required=True, help="the message, or - to read it from standard input")
    redrive_p = sub.add_parser("redrive", help="move dead-lettered events back to the events queue")
    redrive_p.add_argument("--config", help="the bot's YAML config (default: BOT_CONFIG)")
    redrive_p.add_argument("--limit", type=int, default=10_000, help="move at most this many")
    ci = sub.add_parser("ci", help="the buildspec's steps")
    steps = ci.add_subparsers(dest="step", required=True)
    steps.add_parser("changed-services", help="services to build: SERVICE, or the diff since the last deploy")
    for name in ("image-tags", "scan-gate"):
        step = steps.add_parser(name)
        step.add_argument("--tag", required=True)
        step.add_argument("services", nargs="*")
        step.add_argument("--wait", type=int, default=900, help="seconds to wait for each scan")
    ref = steps.add_parser("image-ref", help="registry/repository:tag of a service's image, from the chart")
    ref.add_argument("--tag", required=True)
    ref.add_argument("service")
    deploy = steps.add_parser("deploy", help="helm upgrade with the built tags, wait, roll back on failure")
    for flag in ("--release", "--chart", "--namespace", "--environment"):
        deploy.add_argument(flag, required=True)
    deploy.add_argument("--image-tags", default="")
    deploy.add_argument("--commit", default="")
    deploy.add_argument("--rollout-timeout", type=float, default=600)
    args = parser.parse_args(argv)
    if args.command in ("serve", "sandbox"):
        setup_logging(os.environ.get("LOG_LEVEL", "INFO"))
    return {"serve": _serve, "sandbox": _sandbox, "notify": _notify, "ci": _ci,
            "redrive": _redrive}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
