"""moto's server, with DynamoDB's requests applied one at a time, as DynamoDB applies them.

Real DynamoDB evaluates a ConditionExpression and writes atomically: of two writers expecting the same
version, one gets ConditionalCheckFailedException (UpdateItem/PutItem reference, "Condition expressions").
moto's server handles requests on parallel threads and checks a condition, then writes, with no lock in
between, so both writers "win" and one update silently vanishes (it lost a card's scan line in the soak).
Every other service is left concurrent (an SQS long poll must not block DynamoDB).

And SQS deletes that cannot race: moto's Queue.delete_message rebuilds the queue's message list and assigns it
back without the queue's lock, so of two deletes at once (two pollers of one queue) one is undone and its
message comes back after its visibility timeout; a send at that moment can be lost. Real SQS's DeleteMessage
removes that one message (SQS API reference, DeleteMessage). It takes the lock moto's own send takes.

And a Query that reads only its partition: DynamoDB's Query finds items by their partition key (Query
reference: "You must provide the name of the partition key attribute and a single value for that attribute"),
while moto's sorts the whole table for every query, which slows a long run (a bench of 10,000 events leaves as
many processed-event markers) to a crawl. The answer is moto's own, computed over that partition only.

And a receive that does not recount the queue for each message it returns: moto checked each message against
the queue's retention period by computing every attribute of the queue (three counts of all its messages among
them), so a receive cost the backlog squared. SQS keeps a message for the queue's MessageRetentionPeriod
(SetQueueAttributes reference); that one attribute is read instead, with moto's own comparison.

And routing worked out once: moto's server listed its own package directory and matched every service's URL
patterns to find each request's backend, and introspected the response class for its methods, on every
request (a quarter of its CPU in the test suite). None of it changes while the server runs; the backend a
request lands on is still the one moto picks. Nor is each request formatted into an access log line nobody
reads (the server's output goes to /dev/null).

Run as `python -m sandbox.moto_atomic -H 127.0.0.1 -p PORT` (the same arguments as `python -m moto.server`).
"""

from __future__ import annotations

import functools
import threading
from typing import Any

from moto import backends
from moto.core import responses
from moto.core.utils import unix_time
from moto.dynamodb.models.table import Table
from moto.dynamodb.responses import DynamoHandler
from moto.moto_server.werkzeug_app import DomainDispatcherApplication
from moto.server import main
from moto.sqs.models import Queue, SQSBackend
from werkzeug.serving import WSGIRequestHandler

_ONE_AT_A_TIME = threading.Lock()


def serialise_dynamodb() -> None:
    original = DynamoHandler.call_action

    @functools.wraps(original)
    def call_action(self: DynamoHandler, *args: Any, **kwargs: Any) -> Any:
        with _ONE_AT_A_TIME:
            return original(self, *args, **kwargs)

    DynamoHandler.call_action = call_action  # type: ignore[method-assign]


def serialise_sqs_deletes() -> None:
    original = Queue.delete_message

    @functools.wraps(original)
    def delete_message(self: Queue, receipt_handle: str) -> Any:
        with self._messages_lock:  # the Condition add_message holds while it appends
            return original(self, receipt_handle)

    Queue.delete_message = delete_message  # type: ignore[method-assign]


def retention_from_the_queue() -> None:
    def is_message_valid_based_on_retention_period(self: SQSBackend, queue_name: str, message: Any) -> bool:
        queue: Any = self.get_queue(queue_name)  # set from its attributes by name (Queue._set_attributes)
        retain_until = queue.message_retention_period + message.sent_timestamp / 1000
        return not retain_until <= unix_time()

    SQSBackend.is_message_valid_based_on_retention_period = (  # type: ignore[method-assign]
        is_message_valid_based_on_retention_period)


_querying = threading.local()  # (table, its partition's items) while that table answers a Query


def partition_only_queries() -> None:
    query, all_items = Table.query, Table.all_items

    @functools.wraps(all_items)
    def items_in_scope(self: Table) -> Any:
        scope = getattr(_querying, "scope", None)
        return list(scope[1]) if scope is not None and scope[0] is self else all_items(self)

    @functools.wraps(query)
    def partition_query(self: Table, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        index_name = args[6] if len(args) > 6 else kwargs.get("index_name")
        if index_name is not None or hash_key is None:  # an index holds every partition: moto's own way
            return query(self, hash_key, *args, **kwargs)
        partition = self.items.get(hash_key)
        items = [] if partition is None else list(partition.values()) if self.range_key_attr else [partition]
        _querying.scope = (self, items)
        try:
            return query(self, hash_key, *args, **kwargs)
        finally:
            _querying.scope = None

    Table.all_items = items_in_scope  # type: ignore[method-assign]
    Table.query = partition_query  # type: ignore[method-assign]


def route_from_memory() -> None:
    listing = tuple(backends.list_of_moto_modules())  # moto's own package, fixed while the server runs
    backends.list_of_moto_modules = lambda: listing  # type: ignore[assignment]
    pick = DomainDispatcherApplication.get_backend_for_host
    picked: dict[str | None, Any] = {}

    @functools.wraps(pick)
    def get_backend_for_host(self: DomainDispatcherApplication, host: str | None) -> Any:
        if host not in picked:  # a function of the host alone (moto's fixed URL patterns); called under its lock
            picked[host] = pick(self, host)
        return picked[host]

    DomainDispatcherApplication.get_backend_for_host = get_backend_for_host  # type: ignore[method-assign]
    responses.method_names_from_class = functools.cache(responses.method_names_from_class)  # type: ignore[assignment]
    WSGIRequestHandler.log_request = lambda *_args, **_kwargs: None  # type: ignore[method-assign]


if __name__ == "__main__":
    serialise_dynamodb()
    serialise_sqs_deletes()
    partition_only_queries()
    retention_from_the_queue()
    route_from_memory()
    main()
