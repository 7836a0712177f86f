"""The local DynamoDB applies a conditional write atomically, as DynamoDB does: of writers that expect the
same version exactly one wins, so no acknowledged update is ever lost (the card store relies on it)."""

from __future__ import annotations

import threading
import time

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


def test_a_query_reads_its_own_partition_only_and_answers_as_before(monkeypatch):  # type: ignore[no-untyped-def]
    """DynamoDB's Query finds a partition by its key (Query reference: "You must provide the name of the
    partition key attribute and a single value for that attribute"); moto's sorted the whole table for each
    one, so a long run (a bench of 10,000 events leaves 10,000 processed-event markers) slowed to a crawl.
    The answer (order, range conditions, filters, pages) must not change, only what is read to find it."""
    from moto.dynamodb.models.table import Table
    from moto.server import ThreadedMotoServer

    from sandbox import moto_atomic
    from sandbox.local_aws import free_port

    for name in ("query", "all_items"):  # undone after the test: this process's moto, not the server's
        monkeypatch.setattr(Table, name, getattr(Table, name))
    moto_atomic.partition_only_queries()
    read: list[int] = []
    all_items = Table.all_items

    def counted(self: Table) -> list[object]:
        items = all_items(self)
        read.append(len(items))
        return items

    monkeypatch.setattr(Table, "all_items", counted)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    table = f"t-{port}"  # this process's moto keeps its tables: a name of its own, should it run again
    try:
        ddb = boto3.client("dynamodb", endpoint_url=f"http://127.0.0.1:{port}", region_name="eu-west-1",
                           aws_access_key_id="k", aws_secret_access_key="s")
        ddb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                         KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                                    {"AttributeName": "sk", "KeyType": "RANGE"}],
                         AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                               {"AttributeName": "sk", "AttributeType": "S"}])
        for p in range(60):
            for s in range(6):
                ddb.put_item(TableName=table, Item={"pk": {"S": f"P{p}"}, "sk": {"S": f"{'ab'[s % 2]}{s}"},
                                                   "n": {"N": str(s)}})
        read.clear()

        def pages(**params: object) -> list[list[str]]:
            out, start = [], None
            while True:
                resp = ddb.query(TableName=table, **params, **({"ExclusiveStartKey": start} if start else {}))
                out.append([i["sk"]["S"] for i in resp["Items"]])
                start = resp.get("LastEvaluatedKey")
                if not start:
                    return out

        assert pages(KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "P7"}}) == [
            ["a0", "a2", "a4", "b1", "b3", "b5"]]
        assert pages(KeyConditionExpression="pk = :p AND begins_with(sk, :b)", ScanIndexForward=False, Limit=2,
                     ExpressionAttributeValues={":p": {"S": "P7"}, ":b": {"S": "b"}}) == [["b5", "b3"], ["b1"]]
        assert pages(KeyConditionExpression="pk = :p", FilterExpression="n > :two",
                     ExpressionAttributeValues={":p": {"S": "P7"}, ":two": {"N": "2"}}) == [["a4", "b3", "b5"]]
        assert pages(KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "nobody"}}) == [[]]
        assert read and max(read) <= 6, f"a query read {max(read)} items of a 360-item table to answer 6"
    finally:
        server.stop()


def test_a_receive_does_not_recount_the_queue_for_each_message(monkeypatch):  # type: ignore[no-untyped-def]
    """moto checked each received message against the queue's retention period by computing every attribute
    of the queue, three counts of all its messages among them, three times per message: a receive cost the
    backlog squared, and the soak and the bench measured moto's SQS instead of the bot. SQS keeps a message
    for MessageRetentionPeriod (SetQueueAttributes reference); that one attribute is all the check needs."""
    from moto.server import ThreadedMotoServer
    from moto.sqs.models import Queue, SQSBackend

    from sandbox import moto_atomic
    from sandbox.local_aws import free_port

    monkeypatch.setattr(SQSBackend, "is_message_valid_based_on_retention_period",
                        SQSBackend.is_message_valid_based_on_retention_period)  # undone after the test
    moto_atomic.retention_from_the_queue()
    counted = [0]
    attributes = Queue.attributes

    def counting(self: Queue) -> object:
        counted[0] += 1
        return attributes.fget(self)  # type: ignore[attr-defined]

    monkeypatch.setattr(Queue, "attributes", property(counting))
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        sqs = boto3.client("sqs", endpoint_url=f"http://127.0.0.1:{port}", region_name="eu-west-1",
                           aws_access_key_id="k", aws_secret_access_key="s")
        url = sqs.create_queue(QueueName=f"q-{port}", Attributes={"MessageRetentionPeriod": "60"})["QueueUrl"]
        for batch in range(5):
            sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": f"{batch}-{i}"}
                                                          for i in range(10)])
        counted[0] = 0
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)["Messages"]
        assert len(got) == 10
        assert counted[0] <= 2, f"one receive of 10 computed the queue's attributes {counted[0]} times"
        # and the rule itself: a minute and a second after they were sent, past the 60 s retention, the
        # other forty are gone (SQS deletes a message older than MessageRetentionPeriod)
        monkeypatch.setattr(moto_atomic, "unix_time", lambda: time.time() + 61)
        assert sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages") is None
    finally:
        server.stop()


def test_a_request_is_routed_without_walking_motos_package_each_time(monkeypatch):  # type: ignore[no-untyped-def]
    """moto's server found each request's backend by listing its own package directory (a stat per entry)
    and matching every service's URL patterns, under one lock, and listed each response class's methods by
    introspection, on every request: a quarter of the CPU of the suite's moto. Nothing of it changes while
    the server runs, so it is worked out once; the backend a request lands on is the one moto picks."""
    from moto import backends
    from moto.core import responses
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from moto.server import ThreadedMotoServer
    from werkzeug.serving import WSGIRequestHandler

    from sandbox import moto_atomic
    from sandbox.local_aws import free_port

    hosts = [None, "moto_api", "sqs", "sqs.ap-northeast-2.amazonaws.com", "dynamodb.ap-northeast-2.amazonaws.com",
             "codepipeline.ap-northeast-2.amazonaws.com", "api.ecr.ap-northeast-2.amazonaws.com",
             "logs.ap-northeast-2.amazonaws.com", "nothing.example"]
    moto_picks = {h: DomainDispatcherApplication(create_backend_app).get_backend_for_host(h) for h in hosts}
    walks, introspections = [0], [0]
    listing, method_names = backends.list_of_moto_modules, responses.method_names_from_class

    def counted_listing() -> object:
        walks[0] += 1
        return listing()

    def counted_names(clazz: object) -> list[str]:
        introspections[0] += 1
        return method_names(clazz)

    # undone after the test: this process's moto, not the server's
    monkeypatch.setattr(backends, "list_of_moto_modules", counted_listing)
    monkeypatch.setattr(responses, "method_names_from_class", counted_names)
    monkeypatch.setattr(DomainDispatcherApplication, "get_backend_for_host",
                        DomainDispatcherApplication.get_backend_for_host)
    monkeypatch.setattr(WSGIRequestHandler, "log_request", WSGIRequestHandler.log_request)
    moto_atomic.route_from_memory()
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        assert {h: DomainDispatcherApplication(create_backend_app).get_backend_for_host(h)
                for h in hosts} == moto_picks
        options = dict(endpoint_url=f"http://127.0.0.1:{port}", region_name="ap-northeast-2",
                       aws_access_key_id="k", aws_secret_access_key="s")
        sqs, ddb = boto3.client("sqs", **options), boto3.client("dynamodb", **options)  # type: ignore[call-overload]
        url = sqs.create_queue(QueueName=f"q-{port}")["QueueUrl"]
        walks[0] = introspections[0] = 0
        for i in range(20):
            sqs.send_message(QueueUrl=url, MessageBody=str(i))
            ddb.list_tables()
        assert sorted(int(m["Body"]) for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"])
        assert walks[0] <= 1 and introspections[0] <= 2, (
            f"40 requests listed moto's package {walks[0]} times and introspected {introspections[0]} classes")
    finally:
        server.stop()
