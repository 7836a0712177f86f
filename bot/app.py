"""Wiring: config + credentials + clients -> Runtime, Bolt app, HTTP app."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from slack_bolt.async_app import AsyncApp

import handlers
from bot.aws import AwsClients
from bot.config import Config, load_config
from bot.event_consumer import EventConsumer
from bot.http_server import build_http_app
from bot.jsonlog import redactor
from bot.metrics import Metrics
from bot.runtime import Runtime
from bot.slack_client import make_web_client
from bot.slack_credentials import load_slack_credentials


class StartupError(Exception):
    """Something the operator must fix before the bot can start; one line."""


@dataclass
class Bot:
    runtime: Runtime
    bolt: AsyncApp
    http: web.Application
    consumer: EventConsumer[Any]


def build_bot(environ: Mapping[str, str] | None = None, config: Config | None = None) -> Bot:
    environ = os.environ if environ is None else environ
    if config is None:
        path = environ.get("BOT_CONFIG")
        if not path:
            raise StartupError("BOT_CONFIG is not set: point it at the bot's YAML config (see README)")
        config = load_config(path)
    metrics = Metrics()
    aws = AwsClients(metrics)
    creds = load_slack_credentials(environ, aws)
    redactor.add(creds.bot_token, creds.signing_secret)
    client = make_web_client(creds.bot_token, environ.get("SLACK_API_URL"), metrics)
    bolt = AsyncApp(
        client=client,
        signing_secret=creds.signing_secret,  # Bolt verifies every request's signature and age
        logger=logging.getLogger("slack_bolt"),
    )
    runtime = Runtime.build(config, client, aws, metrics)
    runtime.log_query_budget = float(environ.get("LOG_QUERY_BUDGET_SECONDS", "25"))
    handlers.register(bolt, runtime)
    return Bot(runtime=runtime, bolt=bolt, http=build_http_app(runtime, bolt),
               consumer=EventConsumer(runtime, handlers.EVENT_HANDLER, handlers.EVENT_PUBLISHER,
                                      wait_seconds=int(environ.get("QUEUE_WAIT_SECONDS", "5"))))
