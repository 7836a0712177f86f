"""Move dead-lettered events back to the events queue, after an outage longer than the consumer's backoff.

Safe to run at any time: an event already applied is skipped by its id, and a body that is not an event
comes back to the dead-letter queue on its own. Each message is sent to the queue before it is deleted
from the dead-letter queue, so a crash half-way duplicates at most one message, never loses one.
SQS's own `start-message-move-task` does the same (see README); this one needs only the queue's URL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from bot.aws.clients import AwsClients


@dataclass
class Redriven:
    moved: int
    dead_letter_queue: str


def dead_letter_queue_of(aws: AwsClients, queue_url: str) -> str:
    sqs = aws.client("sqs")
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["RedrivePolicy"])["Attributes"]
    if "RedrivePolicy" not in attributes:
        raise LookupError(f"{queue_url} has no dead-letter queue (no RedrivePolicy)")
    arn = json.loads(attributes["RedrivePolicy"])["deadLetterTargetArn"]
    account, name = arn.split(":")[4], arn.split(":")[5]
    return str(sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"])


def redrive(aws: AwsClients, queue_url: str, limit: int = 10_000) -> Redriven:
    sqs = aws.client("sqs")
    dlq = dead_letter_queue_of(aws, queue_url)
    moved = 0
    while moved < limit:
        messages = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                       VisibilityTimeout=60).get("Messages", [])
        if not messages:
            break
        for message in messages:
            sqs.send_message(QueueUrl=queue_url, MessageBody=message["Body"])
            sqs.delete_message(QueueUrl=dlq, ReceiptHandle=message["ReceiptHandle"])
            moved += 1
    return Redriven(moved, dlq)
