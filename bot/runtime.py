"""Everything a handler may use, built once at start-up and passed to `register`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from slack_sdk.web.async_client import AsyncWebClient

from bot.aws.clients import AwsClients
from bot.aws.state import StateStore
from bot.card_publisher import CardPublisher
from bot.card_store import CardStore
from bot.cluster.helm import Helm
from bot.cluster.kube import Cluster
from bot.config import Config
from bot.delivery.access_policy import AccessPolicy
from bot.delivery.command_parser import CommandParser
from bot.inflight import InFlight
from bot.metrics import Metrics
from bot.slack.channel_membership import ChannelMembership
from bot.slack.user_groups import UserGroups


@dataclass
class Runtime:
    config: Config
    slack: AsyncWebClient
    aws: AwsClients
    metrics: Metrics
    state: StateStore
    policy: AccessPolicy
    parser: CommandParser
    cards: CardStore
    publisher: CardPublisher
    membership: ChannelMembership
    work: InFlight = field(default_factory=InFlight)
    draining: bool = False
    # background work that keeps failing, by name -> since when (time.monotonic()): makes /readyz unready
    # after `unready_after` seconds, and the process exit after `exit_after`, so Kubernetes replaces it
    failing_since: dict[str, float] = field(default_factory=dict)
    unready_after: float = 60.0
    exit_after: float = 600.0
    exit_code: int = 0
    sweep_seconds: float = 30.0  # how often cards left waiting (a replica died, bot not invited) are retried
    auto_rollback_beat_seconds: float = 15.0  # how often an automatic rollback renews its lease (alarm_rollback)
    lock_sweep_seconds: float = 30.0  # how often locks are looked at (reminders, expiry; handlers/locks.py)
    drift_check_seconds: float | None = None  # the config's drift_check, or DRIFT_CHECK_SECONDS (handlers/drift)
    approval_sweep_seconds: float = 60.0  # how often waiting approvals are looked at (handlers/approval_reminders)
    log_query_budget: float = 25.0  # seconds before a Logs Insights query is stopped
    helm: Helm | None = None  # None: no cluster configured for this bot
    cluster: Cluster | None = None
    erp_chart: str = str(Path(__file__).resolve().parents[1] / "charts" / "erp")
    rollout_timeout: float = 300.0
    # signs what the bot stores and later acts on (rollback plans), so a planted or edited item is refused:
    # derived from the signing secret, which only the bot's role can read
    state_key: bytes = b""
    # per person, in a window shared by every replica: commands that change something, and log queries
    user_limits: dict[str, int] = field(default_factory=lambda: {"changes": 6, "log queries": 10})
    user_limit_window: int = 60

    @classmethod
    def build(cls, config: Config, slack: AsyncWebClient, aws: AwsClients, metrics: Metrics) -> Runtime:
        state = StateStore(aws, config.state_table, config.audit_table)
        cards = CardStore(state, slack)
        return cls(
            config=config, slack=slack, aws=aws, metrics=metrics, state=state,
            policy=AccessPolicy(config, UserGroups(slack).members),
            parser=CommandParser(config),
            cards=cards, publisher=CardPublisher(cards, state),
            membership=ChannelMembership(slack, metrics,
                                         {name: env.channel for name, env in config.environments.items()}),
        )
