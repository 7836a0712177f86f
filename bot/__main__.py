"""`python -m bot serve | sandbox` (also the console script `erp-chatops`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from bot.jsonlog import setup_logging


def _serve(args: argparse.Namespace) -> int:
    from bot.app import StartupError, build_bot
    from bot.config import ConfigError
    from bot.http_server import serve
    from bot.slack_credentials import CredentialsError

    try:
        bot = build_bot()
    except (StartupError, ConfigError, CredentialsError) as e:
        print(f"erp-chatops: cannot start: {e}", file=sys.stderr)
        logging.getLogger("bot").error("cannot start: %s", e)
        return 2
    port = int(os.environ.get("PORT", "3000"))
    asyncio.run(serve(bot.http, bot.runtime, args.host, port, background=[bot.consumer.run]))
    return 0


def _sandbox(args: argparse.Namespace) -> int:
    from bot.sandbox.run import run_sandbox

    return run_sandbox(port=int(os.environ.get("PORT", "3000")), host=args.host)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="erp-chatops", description="The ERP platform's ChatOps Slack bot")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_p = sub.add_parser("serve", help="run the bot (production)")
    serve_p.add_argument("--host", default="0.0.0.0")  # noqa: S104 - a container listens on all interfaces
    sandbox_p = sub.add_parser("sandbox", help="run the bot with a local Slack workspace and local AWS")
    sandbox_p.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    setup_logging(os.environ.get("LOG_LEVEL", "INFO"))
    return {"serve": _serve, "sandbox": _sandbox}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
