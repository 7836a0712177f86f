"""Wiring: config + credentials + clients -> Runtime, Bolt app, HTTP app."""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import os
import shutil
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from slack_bolt.async_app import AsyncApp

import handlers
from bot.aws.clients import AwsClients
from bot.cluster.helm import Helm
from bot.cluster.kube import Cluster
from bot.config import Config, load_config
from bot.delivery.pipeline_events import EventScope
from bot.event_consumer import EventConsumer
from bot.http_server import build_http_app
from bot.jsonlog import redactor
from bot.metrics import Metrics
from bot.replay_guard import ReplayGuard
from bot.runtime import Runtime
from bot.slack.respond import PooledRespondMiddleware
from bot.slack.response_url_policy import ResponseUrlPolicy
from bot.slack.web_client import make_web_client
from bot.slack_credentials import load_slack_credentials


class StartupError(Exception):
    """Something the operator must fix before the bot can start; one line."""


@dataclass
class Bot:
    runtime: Runtime
    bolt: AsyncApp
    http: web.Application
    consumers: list[EventConsumer[Any]]  # competing pollers of the one queue: events of many executions at once

    @property
    def background(self) -> list[Callable[[], Awaitable[None]]]:
        """What runs beside the HTTP server, each supervised (see bot.http_server.serve)."""
        return [*(c.run for c in self.consumers), self.runtime.publisher.run, self.runtime.membership.run,
                functools.partial(handlers.CARD_SWEEPER, self.runtime),
                functools.partial(handlers.LOCK_SWEEPER, self.runtime),
                functools.partial(handlers.APPROVAL_SWEEPER, self.runtime),
                # the drift check only where it is asked for and there is a cluster to compare with
                *([functools.partial(handlers.DRIFT_CHECK, self.runtime)]
                  if self.runtime.drift_check_seconds and self.runtime.helm and self.runtime.cluster else []),
                # and automatic rollbacks left by a replica that died, where an environment asks for them
                *([functools.partial(handlers.AUTO_ROLLBACK_SWEEPER, self.runtime)]
                  if any(e.rollback_on_alarm for e in self.runtime.config.environments.values())
                  and self.runtime.helm and self.runtime.cluster else [])]


def _attach_cluster(runtime: Runtime, environ: Mapping[str, str]) -> None:
    """Kubernetes and helm, when this bot has a cluster (kubeconfig or in-cluster) and a helm binary."""
    cluster = Cluster.from_environment(environ.get("KUBECONFIG"))
    helm_bin = shutil.which(environ.get("HELM_BIN", "helm"))
    if cluster is None or helm_bin is None:
        logging.getLogger(__name__).info("no cluster configured: status and rollback will say so")
        return
    runtime.cluster = cluster
    runtime.helm = Helm(helm_bin, kubeconfig=environ.get("KUBECONFIG"))
    runtime.erp_chart = environ.get("ERP_CHART", runtime.erp_chart)
    runtime.rollout_timeout = float(environ.get("ROLLOUT_TIMEOUT_SECONDS", "300"))


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
    client = make_web_client(creds.bot_token, environ.get("SLACK_API_URL"), metrics,
                             rate_scale=float(environ.get("SLACK_RATE_SCALE", "1")))
    bolt = AsyncApp(
        name="erp-chatops",  # given, or Bolt reads it off the call stack (inspect.stack: 80 ms of start-up)
        client=client,
        signing_secret=creds.signing_secret,  # Bolt verifies every request's signature and age
        logger=logging.getLogger("slack_bolt"),
    )
    runtime = Runtime.build(config, client, aws, metrics)
    runtime.state_key = hmac.new(creds.signing_secret.encode(), b"erp-chatops stored state", hashlib.sha256).digest()
    runtime.state.seal_key = runtime.state_key  # audit records are sealed with it too
    bolt.use(ReplayGuard(runtime.state).middleware)  # after Bolt's own signature check: a replay is refused
    bolt.use(ResponseUrlPolicy(environ.get("SLACK_API_URL")).middleware)  # answers go only to Slack
    bolt.use(PooledRespondMiddleware(client).middleware)  # answers through the one session, retried
    runtime.log_query_budget = float(environ.get("LOG_QUERY_BUDGET_SECONDS", "25"))
    runtime.unready_after = float(environ.get("UNREADY_AFTER_FAILING_SECONDS", "60"))
    runtime.exit_after = float(environ.get("EXIT_AFTER_FAILING_SECONDS", "600"))
    runtime.sweep_seconds = float(environ.get("SWEEP_SECONDS", "30"))
    runtime.lock_sweep_seconds = float(environ.get("LOCK_SWEEP_SECONDS", "30"))
    runtime.auto_rollback_beat_seconds = float(environ.get("AUTO_ROLLBACK_BEAT_SECONDS", "15"))
    runtime.approval_sweep_seconds = float(environ.get("APPROVAL_SWEEP_SECONDS", "60"))
    drift_check = environ.get("DRIFT_CHECK_SECONDS") or config.drift_check_seconds
    runtime.drift_check_seconds = float(drift_check) if drift_check else None
    runtime.user_limits = {"changes": int(environ.get("USER_CHANGES_PER_WINDOW", "6")),
                           "log queries": int(environ.get("USER_LOG_QUERIES_PER_WINDOW", "10"))}
    runtime.user_limit_window = int(environ.get("USER_LIMIT_WINDOW_SECONDS", "60"))
    _attach_cluster(runtime, environ)
    handlers.register(bolt, runtime)
    return Bot(runtime=runtime, bolt=bolt, http=build_http_app(runtime, bolt),
               consumers=[EventConsumer(runtime, handlers.EVENT_HANDLER, handlers.EVENT_PUBLISHER,
                                        wait_seconds=int(environ.get("QUEUE_WAIT_SECONDS", "5")),
                                        name=f"event consumer {n + 1}")
                          for n in range(int(environ.get("QUEUE_POLLERS", "2")))]
               + ([EventConsumer(runtime, handlers.EVENT_HANDLER, handlers.EVENT_PUBLISHER,  # the build's lines
                                 wait_seconds=int(environ.get("QUEUE_WAIT_SECONDS", "5")),
                                 queue_url=config.progress_queue_url, scope=EventScope.progress_of(config),
                                 name="progress consumer")]
                  if config.progress_queue_url else []))
