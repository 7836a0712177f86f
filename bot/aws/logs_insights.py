"""Runs a CloudWatch Logs Insights query: StartQuery, then GetQueryResults with backoff until done.

A query that runs past its budget is stopped (StopQuery) and reported as such.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.aws.clients import AwsClients, ClientError, error_code
from bot.delivery.log_query import RESULT_LIMIT

log = logging.getLogger(__name__)

DONE = ("Complete", "Failed", "Cancelled", "Timeout", "Unknown")


@dataclass
class QueryOutcome:
    status: str
    rows: list[dict[str, str]]
    query: str
    seconds: float
    stopped: bool = False
    error: str | None = None


def _rows(results: list[list[dict[str, Any]]]) -> list[dict[str, str]]:
    return [{cell.get("field", ""): str(cell.get("value", "")) for cell in row} for row in results]


async def run_query(aws: AwsClients, log_group: str, start: datetime, end: datetime, query: str,
                    budget: float = 20.0) -> QueryOutcome:
    """StartQuery, then GetQueryResults with backoff until done; StopQuery past `budget` seconds."""
    began = time.monotonic()
    try:
        started = await aws.call("logs", "start_query", logGroupName=log_group, queryString=query,
                                 startTime=int(start.timestamp()), endTime=int(end.timestamp()),
                                 limit=RESULT_LIMIT)
    except ClientError as e:
        return QueryOutcome(status="NotStarted", rows=[], query=query, seconds=0.0, error=error_code(e))
    query_id = started["queryId"]
    delay = 0.2
    while True:
        if time.monotonic() - began >= budget:
            try:
                await aws.call("logs", "stop_query", queryId=query_id)
            except Exception as e:  # the query ends by itself after 60 minutes anyway
                log.warning("could not stop log query %s: %s", query_id, error_code(e))
            return QueryOutcome(status="Timeout", rows=[], query=query, seconds=time.monotonic() - began,
                                stopped=True)
        resp = await aws.call("logs", "get_query_results", queryId=query_id)
        if resp.get("status") in DONE:
            return QueryOutcome(status=str(resp["status"]), rows=_rows(resp.get("results", [])), query=query,
                                seconds=time.monotonic() - began)
        await asyncio.sleep(delay)
        delay = min(delay * 1.6, 2.0)
