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
