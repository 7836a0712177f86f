"""A CloudWatch Logs Insights stand-in: StartQuery, GetQueryResults and StopQuery, really executing the query.

moto accepts a Logs Insights query but ignores `filter` and `stats`, so `/erp logs` would list INFO lines as
"errors and warnings". boto3 reaches this instead through `AWS_ENDPOINT_URL_CLOUDWATCH_LOGS` (the bot calls
no other Logs operation); the events are read from moto's CloudWatch Logs. It runs the part of the query
language the bot sends, as AWS's "CloudWatch Logs Insights query syntax" documents it:

    fields f1, f2            @timestamp, @message, @logStream, @log (and @ptr on every row, as AWS adds)
    filter F like /regex/    a regular expression, `(?i)` for case-insensitive; `not like` too
    filter F like "text"     a substring; `\\"` and `\\\\` are escapes inside the literal
    stats count() by bin(N)  N in s, m, h; empty bins are left out
    sort F asc|desc, limit N
Anything else is a MalformedQueryException, as AWS answers a query it cannot parse. Timestamps come back as
AWS gives them: `2024-12-27 03:04:05.678` (UTC). A query is Running at its first GetQueryResults, then Complete.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import boto3

from sandbox.json_api import ApiError, JsonApi

FIELDS = ("@timestamp", "@message", "@logStream", "@log")
BIN = re.compile(r"^bin\((\d+)([smh])\)$")


class QueryError(Exception):
    """The query does not parse (AWS: MalformedQueryException)."""


@dataclass(frozen=True)
class Record:
    timestamp_ms: int
    message: str
    log_stream: str
    log_group: str

    def value(self, name: str) -> str:
        if name == "@timestamp":
            return insights_time(self.timestamp_ms)
        return {"@message": self.message, "@logStream": self.log_stream,
                "@log": self.log_group}.get(name, "")


def insights_time(ms: int) -> str:
    t = datetime.fromtimestamp(ms / 1000, UTC)
    return t.strftime("%Y-%m-%d %H:%M:%S.") + f"{ms % 1000:03d}"


# --- parsing -------------------------------------------------------------------------------------

@dataclass
class Query:
    fields: list[str] = field(default_factory=list)
    filters: list[tuple[str, bool, re.Pattern[str] | str]] = field(default_factory=list)  # field, negated, test
    stats_bin: int | None = None  # seconds, for `stats count() by bin(N)`
    sort: tuple[str, bool] | None = None  # field, descending
    limit: int | None = None


def _split_commands(text: str) -> list[str]:
    """The query's commands, split at `|` outside string and regex literals."""
    parts, current, quote, i = [], [], "", 0
    while i < len(text):
        ch = text[i]
        if quote:
            current.append(ch)
            if ch == "\\" and i + 1 < len(text):
                current.append(text[i + 1])
                i += 2
                continue
            if ch == quote:
                quote = ""
        elif ch in "\"'" or (ch == "/" and re.search(r"\blike\s*$", "".join(current))):
            quote = ch
            current.append(ch)
        elif ch == "|":
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
        i += 1
    if quote:
        raise QueryError(f"unclosed literal: {''.join(current).strip()[:60]}")
    parts.append("".join(current).strip())
    return [p for p in parts if p]


def _literal(text: str) -> str:
    """A quoted string literal's value: `\\"` is a quote, `\\\\` a backslash."""
    body = text[1:-1]
    return re.sub(r"\\(.)", r"\1", body)


def _filter(args: str) -> tuple[str, bool, re.Pattern[str] | str]:
    m = re.fullmatch(r"(@?\w+)\s+(not\s+)?like\s+(/(?:\\.|[^/\\])*/|\"(?:\\.|[^\"\\])*\"|'(?:\\.|[^'\\])*')", args)
    if not m:
        raise QueryError(f"filter: expected `FIELD like /regex/` or `FIELD like \"text\"`, got {args[:60]!r}")
    name, negated, literal = m.group(1), bool(m.group(2)), m.group(3)
    if literal.startswith("/"):
        source = literal[1:-1].replace("\\/", "/")
        try:
            return name, negated, re.compile(source)
        except re.error as e:
            raise QueryError(f"filter: bad regular expression {source[:60]!r}: {e}") from None
    return name, negated, _literal(literal)


def parse_query(text: str) -> Query:
    query = Query()
    for command in _split_commands(text):
        verb, _, args = command.partition(" ")
        args = args.strip()
        if verb == "fields":
            query.fields += [f.strip() for f in args.split(",") if f.strip()]
            unknown = [f for f in query.fields if f not in FIELDS]
            if unknown:
                raise QueryError(f"fields: unknown field {unknown[0]!r}")
        elif verb == "filter":
            query.filters.append(_filter(args))
        elif verb == "stats":
            m = re.fullmatch(r"count\(\*?\)\s+by\s+(bin\(\d+[smh]\))", args)
            if not m:
                raise QueryError(f"stats: only `count() by bin(N)` is supported here, got {args[:60]!r}")
            n, unit = BIN.match(m.group(1)).groups()  # type: ignore[union-attr]
            query.stats_bin = int(n) * {"s": 1, "m": 60, "h": 3600}[unit]
        elif verb == "sort":
            m = re.fullmatch(r"(@?\w+)(?:\s+(asc|desc))?", args)
            if not m:
                raise QueryError(f"sort: expected `FIELD [asc|desc]`, got {args[:60]!r}")
            query.sort = (m.group(1), m.group(2) != "asc")
        elif verb == "limit":
            if not args.isdigit() or not 1 <= int(args) <= 10000:
                raise QueryError(f"limit: expected a number from 1 to 10000, got {args[:20]!r}")
            query.limit = int(args)
        else:
            raise QueryError(f"unexpected symbol {verb[:40]!r}")
    return query


# --- running --------------------------------------------------------------------------------------

def _matches(record: Record, test: tuple[str, bool, re.Pattern[str] | str]) -> bool:
    name, negated, pattern = test
    value = record.value(name)
    hit = bool(pattern.search(value)) if isinstance(pattern, re.Pattern) else pattern in value
    return hit != negated


def execute(query: Query, records: list[Record], limit: int = 10000) -> tuple[list[list[dict[str, str]]], int]:
    """The result rows, each a list of {field, value} as GetQueryResults returns them, and how many records
    matched the filters."""
    kept = [r for r in records if all(_matches(r, f) for f in query.filters)]
    return _rows(query, kept, limit), len(kept)


def _rows(query: Query, kept: list[Record], limit: int) -> list[list[dict[str, str]]]:
    if query.stats_bin is not None:
        size = query.stats_bin
        counts: dict[int, int] = {}
        for r in kept:
            start = r.timestamp_ms // 1000 // size * size
            counts[start] = counts.get(start, 0) + 1  # only bins with events: empty ones are left out
        label = f"bin({size // 60}m)" if size % 60 == 0 and size < 3600 else \
            f"bin({size // 3600}h)" if size % 3600 == 0 else f"bin({size}s)"
        rows = [[{"field": label, "value": insights_time(start * 1000)}, {"field": "count()", "value": str(n)}]
                for start, n in sorted(counts.items())]
        return rows[: query.limit or limit]
    if query.sort is not None:
        name, descending = query.sort
        key = (lambda r: r.timestamp_ms) if name == "@timestamp" else (lambda r: r.value(name))
        kept.sort(key=key, reverse=descending)
    names = query.fields or ["@timestamp", "@message"]
    return [[*({"field": n, "value": r.value(n)} for n in names), {"field": "@ptr", "value": uuid.uuid4().hex}]
            for r in kept[: min(query.limit or limit, limit)]]


@dataclass
class _Run:
    text: str  # the query as sent
    query: Query
    groups: list[str]
    start: int  # epoch seconds, inclusive
    end: int
    limit: int
    ready_at: float = 0.0  # monotonic time from which it can complete
    status: str = "Scheduled"
    results: list[list[dict[str, str]]] = field(default_factory=list)
    matched: int = 0


class InsightsStandIn(JsonApi):
    def __init__(self, events_endpoint: str) -> None:
        # the events live in moto's CloudWatch Logs: named explicitly, since this process may point boto3's
        # own CloudWatch Logs endpoint at the stand-in itself
        self._logs = boto3.client("logs", endpoint_url=events_endpoint)
        self.runs: dict[str, _Run] = {}
        self.url = ""
        self.running_for = 0.0  # seconds a query stays Running (a busy account's queries take a while)

    async def op_StartQuery(self, body: dict[str, Any]) -> dict[str, Any]:
        groups = list(body.get("logGroupNames") or []) or ([body["logGroupName"]] if body.get("logGroupName") else [])
        if not groups:
            raise ApiError("InvalidParameterException", "logGroupName or logGroupNames is required")
        start, end = int(body.get("startTime", 0)), int(body.get("endTime", 0))
        if start > end:
            raise ApiError("InvalidParameterException", "endTime must be greater than or equal to startTime")
        try:
            query = parse_query(str(body.get("queryString", "")))
        except QueryError as e:
            raise ApiError("MalformedQueryException", str(e)) from None
        logs = self._logs
        for group in groups:
            found = await asyncio.to_thread(logs.describe_log_groups, logGroupNamePrefix=group)
            if not any(g["logGroupName"] == group for g in found.get("logGroups", [])):
                raise ApiError("ResourceNotFoundException", f"Log group '{group}' does not exist")
        query_id = str(uuid.uuid4())
        self.runs[query_id] = _Run(str(body.get("queryString", "")), query, groups, start, end,
                                   int(body.get("limit", 10000)), ready_at=time.monotonic() + self.running_for)
        return {"queryId": query_id}

    async def op_GetQueryResults(self, body: dict[str, Any]) -> dict[str, Any]:
        run = self._run(body)
        if run.status == "Scheduled":
            run.status = "Running"  # the first look finds it running, as a real query would be
        elif run.status == "Running" and time.monotonic() >= run.ready_at:
            records = await asyncio.to_thread(self._records, run)
            run.results, run.matched = execute(run.query, records, run.limit)
            run.status = "Complete"
        return {"status": run.status, "results": run.results if run.status == "Complete" else [],
                "statistics": {"recordsMatched": float(run.matched), "recordsScanned": float(run.matched),
                               "bytesScanned": 0.0}}

    async def op_StopQuery(self, body: dict[str, Any]) -> dict[str, Any]:
        run = self._run(body)
        if run.status in ("Scheduled", "Running"):
            run.status = "Cancelled"
            return {"success": True}
        return {"success": False}

    def last_query(self, group: str) -> str:
        """The text of the newest query over this log group (what the bot sent)."""
        return [r.text for r in self.runs.values() if group in r.groups][-1]

    def _run(self, body: dict[str, Any]) -> _Run:
        run = self.runs.get(str(body.get("queryId")))
        if run is None:
            raise ApiError("ResourceNotFoundException", "Query does not exist")
        return run

    def _records(self, run: _Run) -> list[Record]:
        logs = self._logs
        records: list[Record] = []
        for group in run.groups:
            pages = logs.get_paginator("filter_log_events").paginate(
                logGroupName=group, startTime=run.start * 1000, endTime=run.end * 1000 + 999)
            for page in pages:
                records += [Record(e["timestamp"], e["message"], e.get("logStreamName", ""), group)
                            for e in page.get("events", [])]
        return records
