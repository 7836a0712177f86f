"""All state the replicas share, in one DynamoDB table (pk + sk, TTL in `ttl`).

Items:
  EXEC#<execution id> / CARD       the deploy card of a pipeline execution (expires after 180 days)
  EVENT#<event id>    / SEEN       an event already handled (expires after a week)
  PENDING#, IMAGE#, REQ#, ROLLBACK#, SCANWATCH#, LASTDEPLOY#  small markers (see their users)
  WAITING             / <execution id>  a card the bot could not post or edit (not in its channel)
  AUDIT#<env>         / <time>#<id> who did what, where, when, with what outcome
  LOCK#<env> / CURRENT, RULES#<env> / FREEZE, GRANT#<env> / EXEC#<id>   locks, the published freeze calendar,
                      what the bot let one execution through (bot/delivery/deploy_gate.py; the pipeline reads them)

Writes that decide something are conditional, so two replicas racing on the
same execution or event get one winner and one clear "already done".
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import re
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from bot.aws.clients import AwsClients, ClientError
from bot.delivery.deploy_gate import DeployGrant, EnvLock, grant_key, lock_key, rules_key
from bot.delivery.freeze_calendar import FreezeCalendar

_ser = TypeSerializer()
_de = TypeDeserializer()

EVENT_TTL_SECONDS = 7 * 86400
CARD_TTL_SECONDS = 180 * 86400
WAITING_CARDS = "WAITING"  # marker partition: cards to publish again once their channel takes them
WAITING_TTL_SECONDS = 7 * 86400  # a card is looked at for days; history lives in the audit trail
AUDIT_TTL_SECONDS = 400 * 86400  # a year and a bit: long enough for any review
PENDING_TTL_SECONDS = 8 * 86400  # an approval expires after 7 days
LOCK_KEPT_SECONDS = 86400  # an expired lock stays a day, so the holder is told it expired
GRANT_TTL_SECONDS = 8 * 86400  # as long as an execution can wait for its approval


def _to_item(values: dict[str, Any]) -> dict[str, Any]:
    return {k: _ser.serialize(v) for k, v in values.items() if v is not None}


def _plain(value: Any) -> Any:
    # DynamoDB numbers come back as Decimal; ours are all whole numbers.
    return int(value) if isinstance(value, Decimal) else value


def _from_item(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _plain(_de.deserialize(v)) for k, v in item.items()}


UNPROCESSED_ATTEMPTS = 8


class Unprocessed(Exception):
    """DynamoDB kept handing a batch back; the caller's message is retried later."""


async def _back_off(attempt: int) -> None:
    """DynamoDB's advice for unprocessed keys and items: retry with exponential backoff (BatchGetItem /
    BatchWriteItem docs); jittered, so replicas do not retry in step. 0.05 s doubling, at most 2 s."""
    await asyncio.sleep(random.uniform(0.5, 1.0) * min(2.0, 0.05 * 2 ** attempt))  # noqa: S311


def _is_conditional_failure(e: ClientError) -> bool:
    return e.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


BOT_ACTOR = "erp-chatops"  # the actor of what the bot does by itself (a superseded approval, an alarm's rollback)


@dataclass(frozen=True)
class AuditRecord:
    actor: str  # Slack user ID, BOT_ACTOR, or "pipeline" for what the pipeline did by itself
    action: str  # deploy, approve, reject, rollback, ...
    environment: str
    outcome: str  # ok, refused, failed, started
    service: str | None = None
    detail: str | None = None
    execution_id: str | None = None
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    altered: bool = False  # read back with a seal that does not match: written or changed by someone else

    def sealed_fields(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if k != "altered"}, sort_keys=True)

    @property
    def who(self) -> str:
        """The actor as Slack shows it: a person mentioned, the bot or the pipeline by name."""
        return f"<@{self.actor}>" if re.fullmatch(r"[UW][A-Z0-9]{2,}", self.actor) else self.actor


class StateStore:
    def __init__(self, aws: AwsClients, table: str, audit_table: str | None = None, seal_key: bytes = b"") -> None:
        self.aws = aws
        self.table = table
        # The audit trail is append-only: a table of its own where no role may update or delete (the
        # Terraform module denies it), each record written only if new, and sealed with an HMAC only the
        # bot can make, so a record put by anyone else, or over another, reads as altered.
        self.audit_table = audit_table or table
        self.seal_key = seal_key

    def _seal(self, record: AuditRecord) -> str:
        return hmac.new(self.seal_key, record.sealed_fields().encode(), hashlib.sha256).hexdigest()

    async def _conditional(self, operation: str, **params: Any) -> bool:
        """One conditional write: True if it applied, False if its condition did not hold."""
        try:
            await self.aws.call("dynamodb", operation, **params)
            return True
        except ClientError as e:
            if _is_conditional_failure(e):
                return False
            raise

    async def ping(self) -> None:
        """Raises unless the table is reachable with our credentials (for /readyz)."""
        await self.aws.call("dynamodb", "describe_table", TableName=self.table)

    # --- deploy cards -----------------------------------------------------------

    async def claim_card(self, execution_id: str, **attrs: Any) -> bool:
        """True for the one caller that may post this execution's card; False if another already did."""
        now = int(time.time())
        item = {"pk": f"EXEC#{execution_id}", "sk": "CARD", "execution_id": execution_id,
                "created": now, "ttl": now + CARD_TTL_SECONDS, "version": 0, **attrs}
        try:
            await self.aws.call("dynamodb", "put_item", TableName=self.table, Item=_to_item(item),
                                ConditionExpression="attribute_not_exists(pk)")
            return True
        except ClientError as e:
            if _is_conditional_failure(e):
                return False
            raise

    async def get_card(self, execution_id: str) -> dict[str, Any] | None:
        resp = await self.aws.call("dynamodb", "get_item", TableName=self.table, ConsistentRead=True,
                                   Key=_to_item({"pk": f"EXEC#{execution_id}", "sk": "CARD"}))
        item = resp.get("Item")
        return _from_item(item) if item else None

    async def update_card(self, execution_id: str, expected_version: int, **attrs: Any) -> bool:
        """Optimistic update: applies only if nobody changed the card since `expected_version` was read."""
        names = {f"#a{i}": k for i, k in enumerate(attrs)}
        values = {f":v{i}": v for i, v in enumerate(attrs.values())}
        sets = [f"#a{i} = :v{i}" for i in range(len(attrs))] + ["#version = :next"]
        names["#version"] = "version"
        values.update({":expected": expected_version, ":next": expected_version + 1})
        try:
            await self.aws.call(
                "dynamodb", "update_item", TableName=self.table,
                Key=_to_item({"pk": f"EXEC#{execution_id}", "sk": "CARD"}),
                UpdateExpression="SET " + ", ".join(sets),
                ConditionExpression="#version = :expected",
                ExpressionAttributeNames=names, ExpressionAttributeValues=_to_item(values))
            return True
        except ClientError as e:
            if _is_conditional_failure(e):
                return False
            raise

    # --- small markers: deploy requests, pending approvals, image -> execution ------

    async def put_marker(self, pk: str, sk: str, ttl_seconds: int, *, only_if_absent: bool = True,
                         **attrs: Any) -> bool:
        """False if `only_if_absent` and the marker exists (and has not expired)."""
        now = int(time.time())
        item = {"pk": pk, "sk": sk, "ttl": now + ttl_seconds, **attrs}
        params: dict[str, Any] = {"TableName": self.table, "Item": _to_item(item)}
        if only_if_absent:
            # DynamoDB deletes expired items lazily, so an expired marker counts as absent
            params["ConditionExpression"] = "attribute_not_exists(pk) OR #ttl < :now"
            params["ExpressionAttributeNames"] = {"#ttl": "ttl"}
            params["ExpressionAttributeValues"] = _to_item({":now": now})
        try:
            await self.aws.call("dynamodb", "put_item", **params)
            return True
        except ClientError as e:
            if _is_conditional_failure(e):
                return False
            raise

    async def count_use(self, key: str, limit: int, window_seconds: int) -> int | None:
        """Count one use of `key` in the current window (shared by every replica): None if it is within
        `limit`; else the seconds until the window ends. Windows are fixed, and expire with the table's TTL."""
        now = int(time.time())
        start = now - now % window_seconds
        try:
            await self.aws.call("dynamodb", "update_item", TableName=self.table,
                                Key=_to_item({"pk": f"QUOTA#{key}", "sk": str(start)}),
                                UpdateExpression="ADD #n :one SET #ttl = :ttl",
                                ConditionExpression="attribute_not_exists(#n) OR #n < :limit",
                                ExpressionAttributeNames={"#n": "uses", "#ttl": "ttl"},
                                ExpressionAttributeValues=_to_item({":one": 1, ":limit": limit,
                                                                    ":ttl": start + 2 * window_seconds}))
            return None
        except ClientError as e:
            if _is_conditional_failure(e):
                return max(1, start + window_seconds - now)
            raise

    async def get_marker(self, pk: str, sk: str) -> dict[str, Any] | None:
        resp = await self.aws.call("dynamodb", "get_item", TableName=self.table, ConsistentRead=True,
                                   Key=_to_item({"pk": pk, "sk": sk}))
        item = _from_item(resp["Item"]) if resp.get("Item") else None
        if item is None or int(item.get("ttl", 0)) < time.time():
            return None
        return item

    async def transition(self, pk: str, sk: str, from_status: str, to_status: str, **attrs: Any) -> bool:
        """Move a marker's `status` from one value to another; False if it was not in `from_status`."""
        sets = {"status": to_status, **attrs}
        names = {f"#a{i}": k for i, k in enumerate(sets)}
        values = {f":v{i}": v for i, v in enumerate(sets.values())} | {":from": from_status}
        try:
            await self.aws.call(
                "dynamodb", "update_item", TableName=self.table, Key=_to_item({"pk": pk, "sk": sk}),
                UpdateExpression="SET " + ", ".join(f"#a{i} = :v{i}" for i in range(len(sets))),
                ConditionExpression="#a0 = :from", ExpressionAttributeNames=names,
                ExpressionAttributeValues=_to_item(values))
            return True
        except ClientError as e:
            if _is_conditional_failure(e):
                return False
            raise

    async def update_marker_if(self, pk: str, sk: str, expected: dict[str, Any], **attrs: Any) -> bool:
        """Set `attrs` on a marker only if each `expected` field still has that value (a lease taken over,
        renewed, or given up by its holder only); False otherwise."""
        names = {f"#s{i}": k for i, k in enumerate(attrs)} | {f"#e{i}": k for i, k in enumerate(expected)}
        values = {f":s{i}": v for i, v in enumerate(attrs.values())} | \
            {f":e{i}": v for i, v in enumerate(expected.values())}
        return await self._conditional(
            "update_item", TableName=self.table, Key=_to_item({"pk": pk, "sk": sk}),
            UpdateExpression="SET " + ", ".join(f"#s{i} = :s{i}" for i in range(len(attrs))),
            ConditionExpression=" AND ".join(f"#e{i} = :e{i}" for i in range(len(expected))),
            ExpressionAttributeNames=names, ExpressionAttributeValues=_to_item(values))

    # --- cards waiting for a person (the bot not invited to their channel): the sweeper publishes them again

    async def mark_cards_waiting(self, execution_ids: list[str]) -> None:
        """Remember cards whose message is not yet up to date (25 per request): if this replica dies before
        it published them, another one's sweep does."""
        now_ms, ttl = int(time.time() * 1000), int(time.time()) + WAITING_TTL_SECONDS
        await self._put_all([{"pk": WAITING_CARDS, "sk": e, "ttl": ttl, "since": now_ms, "stamp": uuid.uuid4().hex}
                             for e in dict.fromkeys(execution_ids)])

    async def mark_card_waiting(self, execution_id: str) -> None:
        await self.mark_cards_waiting([execution_id])

    async def waiting_cards(self, older_than: float = 0.0, limit: int = 200) -> list[str]:
        """Up to `limit` cards marked waiting at least `older_than` seconds ago (younger ones are still being
        published), reading every page: marks that cannot clear yet must not hide the others."""
        params: dict[str, Any] = {"TableName": self.table, "KeyConditionExpression": "pk = :pk",
                                  "ProjectionExpression": "sk, #ttl, since",
                                  "ExpressionAttributeNames": {"#ttl": "ttl"},
                                  "ExpressionAttributeValues": _to_item({":pk": WAITING_CARDS})}
        now, found = time.time(), list[str]()
        while len(found) < limit:
            resp = await self.aws.call("dynamodb", "query", **params)
            found += [str(item["sk"]) for item in map(_from_item, resp.get("Items", []))
                      if int(item.get("ttl", 0)) > now and int(item.get("since", 0)) <= (now - older_than) * 1000]
            if "LastEvaluatedKey" not in resp:
                break
            params["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        return found[:limit]

    async def waiting_stamp(self, execution_id: str) -> str | None:
        """The mark's stamp, read before publishing: the mark is cleared afterwards only if nobody marked the
        card again meanwhile (no clocks compared across replicas)."""
        marker = await self.get_marker(WAITING_CARDS, execution_id)
        return str(marker["stamp"]) if marker and "stamp" in marker else None

    async def clear_card_waiting(self, execution_id: str, seen_stamp: str | None = None) -> None:
        """Forget a waiting card; with `seen_stamp`, only if its mark is still the one read before publishing."""
        params: dict[str, Any] = {"TableName": self.table, "Key": _to_item({"pk": WAITING_CARDS, "sk": execution_id})}
        if seen_stamp is not None:
            params["ConditionExpression"] = "stamp = :seen"
            params["ExpressionAttributeValues"] = _to_item({":seen": seen_stamp})
        try:
            await self.aws.call("dynamodb", "delete_item", **params)
        except ClientError as e:
            if not _is_conditional_failure(e):
                raise

    async def delete_marker_if(self, pk: str, sk: str, field: str, value: Any) -> bool:
        """Delete the marker only if `field` still holds `value` (nobody took it over meanwhile)."""
        return await self._conditional("delete_item", TableName=self.table, Key=_to_item({"pk": pk, "sk": sk}),
                                       ConditionExpression="#f = :v", ExpressionAttributeNames={"#f": field},
                                       ExpressionAttributeValues=_to_item({":v": value}))

    async def delete_marker(self, pk: str, sk: str) -> None:
        await self.aws.call("dynamodb", "delete_item", TableName=self.table, Key=_to_item({"pk": pk, "sk": sk}))

    # --- pending approvals: one prod deploy of a service waits for approval at a time -----

    async def pending_approval(self, environment: str, service: str) -> dict[str, Any] | None:
        """The execution waiting for approval for this service (or "all") in this environment, if any."""
        return await self.get_marker(f"PENDING#{environment}", service)

    async def swap_pending_approval(self, environment: str, service: str, execution_id: str, *, channel: str,
                                    ts: str) -> dict[str, Any] | None:
        """Record this execution as the one waiting, in one write, and return the marker it replaced (so two
        replicas recording two executions at once each see the other's)."""
        now = int(time.time())
        resp = await self.aws.call("dynamodb", "put_item", TableName=self.table, ReturnValues="ALL_OLD",
                                   Item=_to_item({"pk": f"PENDING#{environment}", "sk": service,
                                                  "ttl": now + PENDING_TTL_SECONDS, "execution_id": execution_id,
                                                  "channel": channel, "ts": ts}))
        old = _from_item(resp["Attributes"]) if resp.get("Attributes") else None
        return old if old is not None and int(old.get("ttl", 0)) > now else None

    async def pending_approvals(self, environment: str) -> list[dict[str, Any]]:
        """Every execution waiting for approval in this environment (one per service, or "all")."""
        return await self.markers(f"PENDING#{environment}")

    async def markers(self, pk: str) -> list[dict[str, Any]]:
        """The unexpired markers of one partition (a few: a page is enough)."""
        resp = await self.aws.call("dynamodb", "query", TableName=self.table, ConsistentRead=True,
                                   KeyConditionExpression="pk = :pk", ExpressionAttributeValues=_to_item({":pk": pk}))
        now = time.time()
        return [item for item in map(_from_item, resp.get("Items", [])) if int(item.get("ttl", 0)) > now]

    async def clear_pending_approval(self, environment: str, service: str, execution_id: str) -> None:
        """Clears the marker only if it is this execution's (a newer one may have replaced it)."""
        marker = await self.pending_approval(environment, service)
        if marker and marker.get("execution_id") == execution_id:
            await self.delete_marker(f"PENDING#{environment}", service)

    # --- environment locks, the published freeze calendar, grants ------------------

    async def get_lock(self, env: str) -> EnvLock | None:
        """The environment's lock record, expired or not (the caller asks `active`)."""
        resp = await self.aws.call("dynamodb", "get_item", TableName=self.table, ConsistentRead=True,
                                   Key=_to_item(lock_key(env)))
        return EnvLock.from_item(env, _from_item(resp["Item"])) if resp.get("Item") else None

    async def take_lock(self, lock: EnvLock, replacing: EnvLock | None = None) -> bool:
        """Take the environment's lock: only if it is free or expired, or (a take-over, or the holder's
        extension) only if it is still exactly `replacing`. False: someone else moved first."""
        item = {**lock_key(lock.environment), **lock.to_item(), "ttl": lock.until + LOCK_KEPT_SECONDS}
        params: dict[str, Any] = {"TableName": self.table, "Item": _to_item(item),
                                  "ExpressionAttributeNames": {"#until": "until"}}
        if replacing is None:
            params["ConditionExpression"] = "attribute_not_exists(pk) OR #until <= :now"
            params["ExpressionAttributeValues"] = _to_item({":now": int(time.time())})
        else:
            params["ConditionExpression"] = "lock_id = :id AND #until = :until"
            params["ExpressionAttributeValues"] = _to_item({":id": replacing.id, ":until": replacing.until})
        return await self._conditional("put_item", **params)

    async def release_lock(self, lock: EnvLock) -> bool:
        """Remove this lock (not one taken or extended since); False if it is no longer this one."""
        # its end too: the holder may have extended it (same id) a moment after the caller read it
        return await self._conditional("delete_item", TableName=self.table, Key=_to_item(lock_key(lock.environment)),
                                       ConditionExpression="lock_id = :id AND #until = :until",
                                       ExpressionAttributeNames={"#until": "until"},
                                       ExpressionAttributeValues=_to_item({":id": lock.id, ":until": lock.until}))

    async def mark_lock_reminded(self, lock: EnvLock) -> bool:
        """True for the one replica that sends this lock's reminder."""
        return await self._conditional("update_item", TableName=self.table, Key=_to_item(lock_key(lock.environment)),
                                       UpdateExpression="SET reminded = :yes",
                                       ConditionExpression="lock_id = :id AND #until = :until AND reminded = :no",
                                       ExpressionAttributeNames={"#until": "until"},
                                       ExpressionAttributeValues=_to_item({":yes": True, ":no": False,
                                                                           ":id": lock.id, ":until": lock.until}))

    async def publish_freeze_calendar(self, env: str, calendar: FreezeCalendar | None,
                                      promotion_source: str | None = None) -> None:
        """What the pipeline's Deploy and Promote actions check: the config's calendar (or none, said
        explicitly), and where promotions to this environment come from (none: it takes none)."""
        rules = json.dumps(calendar.to_dict() if calendar is not None else None, sort_keys=True)
        await self.aws.call("dynamodb", "put_item", TableName=self.table, Item=_to_item({
            **rules_key(env), "freeze": rules, "published": int(time.time()), "promotion_source": promotion_source}))

    async def get_grant(self, env: str, execution_id: str) -> DeployGrant | None:
        item = await self.get_marker(**grant_key(env, execution_id))
        return DeployGrant.from_item(execution_id, item) if item is not None else None

    async def put_grant(self, env: str, grant: DeployGrant) -> None:
        await self.aws.call("dynamodb", "put_item", TableName=self.table, Item=_to_item({
            **grant_key(env, grant.execution_id), **grant.to_item(), "ttl": int(time.time()) + GRANT_TTL_SECONDS}))

    # --- what the pipeline deployed (written by `erp-chatops ci deploy`, bot/ci/build_steps.record_deploy) ----

    async def deploy_records(self, env: str) -> dict[str, dict[str, dict[str, Any]]]:
        """Per service: {"deployed": its last successful deploy, "attempt": its last attempt, "rolled_back": the
        bot's last rollback of it}, as recorded."""
        params: dict[str, Any] = {"TableName": self.table, "KeyConditionExpression": "pk = :pk",
                                  "ConsistentRead": True,
                                  "ExpressionAttributeValues": _to_item({":pk": f"LASTDEPLOY#{env}"})}
        records: dict[str, dict[str, dict[str, Any]]] = {}
        while True:
            resp = await self.aws.call("dynamodb", "query", **params)
            for item in map(_from_item, resp.get("Items", [])):
                kind, _, service = str(item["sk"]).partition("#")
                key = {"SERVICE": "deployed", "ATTEMPT": "attempt", "ROLLEDBACK": "rolled_back"}.get(kind)
                if key:
                    records.setdefault(service, {})[key] = item
            if "LastEvaluatedKey" not in resp:
                return records
            params["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    async def record_rollback(self, env: str, images: dict[str, str], detail: str, at: int | None = None) -> None:
        """A rollback is the latest change of these services: `/erp promote` must not take the image the
        pipeline deployed before it (the same records as `erp-chatops ci deploy`, attempt not ok)."""
        now = at or int(time.time())  # when helm ran: a deploy landing during the rollout is newer
        for service, image in images.items():
            await self._conditional(  # never over a newer attempt (a deploy that landed during the rollout)
                "put_item", TableName=self.table, Item=_to_item({
                    "pk": f"LASTDEPLOY#{env}", "sk": f"ATTEMPT#{service}", "ok": False, "rolled_back": detail,
                    "image": image, "at": now, "execution": "-"}),
                ConditionExpression="attribute_not_exists(pk) OR #at <= :at",
                ExpressionAttributeNames={"#at": "at"}, ExpressionAttributeValues=_to_item({":at": now}))
            # kept apart too: the next attempt overwrites ATTEMPT#, and a failed one must not make the
            # rolled-back version (still SERVICE#, the last good deploy) look re-deployable
            await self.aws.call("dynamodb", "put_item", TableName=self.table, Item=_to_item({
                "pk": f"LASTDEPLOY#{env}", "sk": f"ROLLEDBACK#{service}", "rolled_back": detail, "image": image,
                "at": now}))

    # --- events -----------------------------------------------------------------

    async def processed_among(self, event_ids: list[str]) -> set[str]:
        """Which of these events were already handled (one request per 100 ids)."""
        seen: set[str] = set()
        unique = list(dict.fromkeys(event_ids))
        for i in range(0, len(unique), 100):
            keys = [_to_item({"pk": f"EVENT#{e}", "sk": "SEEN"}) for e in unique[i:i + 100]]
            for attempt in range(UNPROCESSED_ATTEMPTS):
                resp = await self.aws.call("dynamodb", "batch_get_item", RequestItems={
                    self.table: {"Keys": keys, "ConsistentRead": True, "ProjectionExpression": "pk"}})
                seen |= {_from_item(item)["pk"].removeprefix("EVENT#")
                         for item in resp.get("Responses", {}).get(self.table, [])}
                keys = resp.get("UnprocessedKeys", {}).get(self.table, {}).get("Keys", [])
                if not keys:
                    break
                await _back_off(attempt)
            else:
                raise Unprocessed(f"DynamoDB left {len(keys)} key(s) unread after {UNPROCESSED_ATTEMPTS} tries")
        return seen

    async def mark_events_processed(self, event_ids: list[str]) -> None:
        """Many at once (25 per request); a repeat only refreshes the expiry, so no condition is needed."""
        ttl = int(time.time()) + EVENT_TTL_SECONDS
        await self._put_all([{"pk": f"EVENT#{e}", "sk": "SEEN", "ttl": ttl} for e in dict.fromkeys(event_ids)])

    async def _put_all(self, items: list[dict[str, Any]]) -> None:
        """BatchWriteItem, 25 at a time; what DynamoDB hands back is retried with backoff, then given up on."""
        for i in range(0, len(items), 25):
            requests = [{"PutRequest": {"Item": _to_item(item)}} for item in items[i:i + 25]]
            for attempt in range(UNPROCESSED_ATTEMPTS):
                resp = await self.aws.call("dynamodb", "batch_write_item", RequestItems={self.table: requests})
                requests = resp.get("UnprocessedItems", {}).get(self.table, [])
                if not requests:
                    break
                await _back_off(attempt)
            else:
                raise Unprocessed(f"DynamoDB left {len(requests)} item(s) unwritten after {UNPROCESSED_ATTEMPTS} tries")

    # --- audit trail ------------------------------------------------------------

    async def record_audit(self, record: AuditRecord) -> None:
        fields = {k: v for k, v in asdict(record).items() if k != "altered"}
        item = {"pk": f"AUDIT#{record.environment}", "sk": f"{record.at}#{uuid.uuid4().hex[:12]}",
                "ttl": int(time.time()) + AUDIT_TTL_SECONDS, "seal": self._seal(record), **fields}
        await self.aws.call("dynamodb", "put_item", TableName=self.audit_table, Item=_to_item(item),
                            ConditionExpression="attribute_not_exists(pk)")  # never over another record

    async def list_audit(self, environments: list[str], service: str | None = None,
                         limit: int = 10, since: str | None = None) -> list[AuditRecord]:
        """Newest first, across the given environments (from `since`, an ISO time, if given)."""
        records: list[AuditRecord] = []
        for env in environments:
            values: dict[str, Any] = {":pk": f"AUDIT#{env}"}
            key = "pk = :pk"
            if since:
                key, values[":since"] = "pk = :pk AND sk >= :since", since
            params: dict[str, Any] = {"TableName": self.audit_table, "ScanIndexForward": False,
                                      "Limit": min(limit, 1000), "KeyConditionExpression": key}
            if service:
                params["FilterExpression"] = "service = :svc"
                values[":svc"] = service
            params["ExpressionAttributeValues"] = _to_item(values)
            found = 0
            while found < limit:
                resp = await self.aws.call("dynamodb", "query", **params)
                for raw in resp.get("Items", []):
                    item = _from_item(raw)
                    fields = {k: item[k] for k in AuditRecord.__dataclass_fields__ if k in item and k != "altered"}
                    record = AuditRecord(**fields)
                    sealed = hmac.compare_digest(str(item.get("seal", "")).encode(), self._seal(record).encode())
                    records.append(record if sealed else replace(record, altered=True))
                    found += 1
                if "LastEvaluatedKey" not in resp:
                    break
                params["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        records.sort(key=lambda r: r.at, reverse=True)
        return records[:limit]
