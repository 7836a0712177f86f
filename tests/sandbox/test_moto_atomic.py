"""The local DynamoDB applies a conditional write atomically, as DynamoDB does: of writers that expect the
same version exactly one wins, so no acknowledged update is ever lost (the card store relies on it)."""

from __future__ import annotations

import threading

import boto3
from botocore.exceptions import ClientError

from sandbox.local_aws import LocalAws


def test_concurrent_conditional_updates_never_lose_an_acknowledged_write(moto: LocalAws, aws_resources):  # type: ignore[no-untyped-def]
    ddb = boto3.client("dynamodb")
    table = aws_resources["table"]
    key = {"pk": {"S": "EXEC#race"}, "sk": {"S": "CARD"}}
    ddb.put_item(TableName=table, Item={**key, "version": {"N": "0"}, "body": {"L": []}})
    won = [0]

    def writer(n: int) -> None:
        client = boto3.client("dynamodb")
        for i in range(40):
            while True:
                item = client.get_item(TableName=table, Key=key, ConsistentRead=True)["Item"]
                version = int(item["version"]["N"])
                try:
                    client.update_item(TableName=table, Key=key,
                                       UpdateExpression="SET #v = :next, body = list_append(body, :mine)",
                                       ConditionExpression="#v = :expected",
                                       ExpressionAttributeNames={"#v": "version"},
                                       ExpressionAttributeValues={":next": {"N": str(version + 1)},
                                                                  ":expected": {"N": str(version)},
                                                                  ":mine": {"L": [{"S": f"{n}-{i}"}]}})
                    won[0] += 1
                    break
                except ClientError as e:
                    assert e.response["Error"]["Code"] == "ConditionalCheckFailedException"

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = ddb.get_item(TableName=table, Key=key, ConsistentRead=True)["Item"]
    assert won[0] == 160
    assert int(final["version"]["N"]) == 160 and len(final["body"]["L"]) == 160  # every acknowledged write


def test_concurrent_deletes_and_sends_lose_nothing(moto: LocalAws, aws_resources):  # type: ignore[no-untyped-def]
    """SQS's DeleteMessage removes that message, whatever else happens at once (pollers of one queue): moto
    rebuilt the queue's list outside its lock, so of two deletes at once one was undone and its message came
    back. (A standard queue may deliver a message twice, so what is asserted is that every message is
    received and none is left.)"""
    queue = aws_resources["queue_url"]
    sqs = boto3.client("sqs")
    for batch in range(20):
        sqs.send_message_batch(QueueUrl=queue, Entries=[{"Id": str(i), "MessageBody": f"{batch}-{i}"}
                                                        for i in range(10)])
    seen: set[str] = set()
    lock = threading.Lock()

    def poller() -> None:
        client = boto3.client("sqs")
        while True:
            got = client.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, VisibilityTimeout=60,
                                         WaitTimeSeconds=0).get("Messages", [])
            if not got:
                return
            for m in got:  # one request each: deletes interleave with the other poller's
                client.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
                with lock:
                    seen.add(m["Body"])

    threads = [threading.Thread(target=poller) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 200
    left = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages",
                                                                    "ApproximateNumberOfMessagesNotVisible"])
    assert left["Attributes"] == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}
