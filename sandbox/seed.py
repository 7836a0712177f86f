"""The ERP resources the sandbox's local AWS starts with, and the bot's config for the sandbox.

The services are the bot's own declared list: the `config` of the bot's chart
(charts/erp-chatops/values.yaml), which is what the bot runs with in the cluster.
"""

from __future__ import annotations

import json
from typing import Any

from bot.aws.clients import AwsClients
from bot.event_consumer import RECEIVES_BEFORE_DEAD_LETTER
from sandbox.ecr_images import create_repositories, publish_image
from sandbox.erp_services import SERVICES, declared_config, repository_of
from sandbox.service_logs import seed_service_logs

STATE_TABLE = "erp-chatops-state"
EVENTS_QUEUE = "erp-chatops-events"
EVENTS_DLQ = "erp-chatops-events-dlq"
PROGRESS_QUEUE = "erp-chatops-progress"
SLACK_SECRET_ID = "erp-chatops/slack"  # noqa: S105 - a secret name, not a value


def sandbox_config(queue_url: str, table: str = STATE_TABLE, progress_queue_url: str | None = None) -> dict[str, Any]:
    """The bot's config for the sandbox workspace's channels, people and groups."""
    declared = declared_config()
    return {
        "pipeline": declared["pipeline"],
        "events_queue_url": queue_url,
        "state_table": table,
        "audit_table": audit_table_of(table),
        "environments": {
            "dev": {"namespace": "erp-dev", "release": "erp", "channel": "C0DEV", "approval": False},
            "prod": {"namespace": "erp-prod", "release": "erp", "channel": "C0PROD", "approval": True,
                     "approvers": ["U0APPR1", "S0ONCALL"], "deployers": ["U0DEV1", "S0APPROVERS"],
                     "lock_after_rollback": "1h",
                     # short, so the sandbox shows a reminder and an escalation within minutes
                     "approval_reminders": {"every": "2m", "escalate_after": "6m", "escalate_to": ["S0DEVS"],
                                            "reject_superseded": False},
                     # the sandbox's demo freeze: a weekend in Seoul and the holidays (README "Freeze windows")
                     "freeze": {"timezone": "Asia/Seoul", "mode": "deny", "windows": [
                         {"name": "weekend", "from": "Sat 00:00", "to": "Mon 07:00"},
                         {"name": "Christmas", "date": "2026-12-25"},
                         {"name": "New Year", "date": "2027-01-01"}]}},
        },
        "promotion": {"from": "dev", "to": "prod", "soak": "2m"},  # short, to show a promotion end to end
        "drift_check": "1m",  # "Patch dev behind Helm" on the page shows up within two minutes (seen twice)
        "services": declared["services"],
        "oncall_channels": ["C0ONCALL"],
        "oncall_readers": ["S0ONCALL"],
        **({"progress_queue_url": progress_queue_url} if progress_queue_url else {}),
    }


def audit_table_of(table: str) -> str:
    return f"{table}-audit"


def create_state_tables(aws: AwsClients, table: str) -> None:
    """The state table and its append-only audit table (`<table>-audit`), as the Terraform module makes them."""
    ddb = aws.client("dynamodb")
    for name in (table, audit_table_of(table)):
        ddb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                         AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                               {"AttributeName": "sk", "AttributeType": "S"}],
                         KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                                    {"AttributeName": "sk", "KeyType": "RANGE"}])
        ddb.update_time_to_live(TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"})


def create_progress_queue(aws: AwsClients, name: str) -> str:
    """The queue the buildspec's progress lines go to (CI may send there, and nowhere else the bot reads)."""
    return str(aws.client("sqs").create_queue(QueueName=name, Attributes={"VisibilityTimeout": "30"})["QueueUrl"])


def create_events_queue(aws: AwsClients, name: str, dlq_name: str,
                        max_receives: int = RECEIVES_BEFORE_DEAD_LETTER) -> tuple[str, str]:
    """The queue the EventBridge rule feeds, with its dead-letter queue; returns (queue URL, DLQ URL)."""
    sqs = aws.client("sqs")
    dlq = sqs.create_queue(QueueName=dlq_name, Attributes={"MessageRetentionPeriod": "1209600"})["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue = sqs.create_queue(QueueName=name, Attributes={
        "VisibilityTimeout": "30",
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receives)}),
    })["QueueUrl"]
    return queue, dlq


def seed_parameters_and_secrets(aws: AwsClients, bot_token: str, signing_secret: str) -> None:
    ssm = aws.client("ssm")
    for env in ("dev", "prod"):
        for name, value in (("ecr/repository", "806332783810.dkr.ecr.ap-northeast-2.amazonaws.com/erp"),
                            ("eks/cluster-name", f"erp-{env}"), ("helm/version", "3.16.2")):
            ssm.put_parameter(Name=f"/erp/{env}/{name}", Value=value, Type="String", Overwrite=True)
    sm = aws.client("secretsmanager")
    sm.create_secret(Name=SLACK_SECRET_ID, SecretString=json.dumps(
        {"SLACK_BOT_TOKEN": bot_token, "SLACK_SIGNING_SECRET": signing_secret}))
    for name in ("prod/rds/password", "dev/rds/password", "prod/mongodb/uri", "dev/mongodb/uri"):
        sm.create_secret(Name=name, SecretString="sandbox-only-not-a-real-secret")


def seed_images(aws: AwsClients) -> None:
    """Each service's repository with a few earlier builds, scanned; one old image has a CRITICAL finding."""
    create_repositories(aws, list(SERVICES))
    for service in SERVICES:
        for i, tag in enumerate(("release-2024.12.20", "release-2024.12.23", "release-2024.12.26")):
            critical = 1 if (service == "notification" and i == 0) else 0
            publish_image(aws, repository_of(service), tag, critical=critical)


def seed_all(aws: AwsClients, bot_token: str, signing_secret: str) -> dict[str, str]:
    create_state_tables(aws, STATE_TABLE)
    queue, dlq = create_events_queue(aws, EVENTS_QUEUE, EVENTS_DLQ)
    progress = create_progress_queue(aws, PROGRESS_QUEUE)
    seed_parameters_and_secrets(aws, bot_token, signing_secret)
    seed_images(aws)
    seed_service_logs(aws, list(SERVICES), ["dev", "prod"])
    return {"queue_url": queue, "dlq_url": dlq, "table": STATE_TABLE, "progress_queue_url": progress}
