"""The Logs Insights stand-in runs the queries it is given, as AWS's "CloudWatch Logs Insights query syntax"
documentation describes them (fields, filter with `like` and regular expressions, stats count() by bin(),
sort, limit), over the events in moto's CloudWatch Logs; boto3 talks to it over HTTP."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from botocore.exceptions import ClientError

from bot.delivery.log_query import STATS_QUERY, build_query
from sandbox.logs_insights import InsightsStandIn, QueryError, parse_query
from tests.support import BackgroundLoop, MotoServer, served

# CloudWatch Logs refuses events older than 14 days (moto too): the fixture's hour is a recent one
T0 = (datetime.now(UTC) - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)


def at(seconds: float) -> str:
    """A time after T0 as Insights writes it: 2024-12-27 03:04:05.678"""
    t = T0 + timedelta(seconds=seconds)
    return t.strftime("%Y-%m-%d %H:%M:%S.") + f"{t.microsecond // 1000:03d}"



LINES = [  # (seconds after T0, message)
    (5, "2024-12-27T03:00:05.000Z  INFO 1 --- [main] c.e.Api : GET /employees 200"),
    (65, "2024-12-27T03:01:05.000Z ERROR 1 --- [main] c.e.Api : Exception: timeout talking to MySQL"),
    (70, '2024-12-27T03:01:10.000Z  WARN 1 --- [main] c.e.Api : slow "quoted" request \\ with a backslash'),
    (400, "2024-12-27T03:06:40.000Z ERROR 1 --- [main] c.e.Kafka : consumer lag 12000"),
    (1900.123, "2024-12-27T03:31:40.123Z ERROR 1 --- [main] c.e.Api : Exception again"),
]


@pytest.fixture
def engine(background_loop: BackgroundLoop, moto: MotoServer) -> Iterator[tuple[object, str]]:
    logs = boto3.client("logs")
    group = f"/erp/test/insights-{uuid.uuid4().hex[:6]}"
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName="pod-1")
    logs.put_log_events(logGroupName=group, logStreamName="pod-1", logEvents=[
        {"timestamp": int((T0 + timedelta(seconds=s)).timestamp() * 1000), "message": m} for s, m in LINES])
    with served(background_loop, InsightsStandIn(moto.url)) as stand_in:
        yield boto3.client("logs", endpoint_url=stand_in.url), group


def run(client, group: str, query: str, **extra) -> list[dict[str, str]]:  # type: ignore[no-untyped-def]
    qid = client.start_query(logGroupName=group, queryString=query, startTime=int(T0.timestamp()),
                             endTime=int((T0 + timedelta(hours=1)).timestamp()), **extra)["queryId"]
    for _ in range(50):
        resp = client.get_query_results(queryId=qid)
        if resp["status"] == "Complete":
            return [{c["field"]: c["value"] for c in row} for row in resp["results"]]
        assert resp["status"] in ("Scheduled", "Running")
        time.sleep(0.05)
    raise AssertionError("the query never completed")


def test_fields_sort_limit_as_the_documentation_shows(engine):  # type: ignore[no-untyped-def]
    client, group = engine
    rows = run(client, group, "fields @timestamp, @message | sort @timestamp desc | limit 3")
    assert [r["@timestamp"] for r in rows] == [at(1900.123), at(400), at(70)]
    assert all(set(r) == {"@timestamp", "@message", "@ptr"} for r in rows)


def test_filter_like_a_regular_expression_and_a_string(engine):  # type: ignore[no-untyped-def]
    client, group = engine
    errors = run(client, group, "fields @timestamp, @message | filter @message like /Exception/")
    assert len(errors) == 2 and all("Exception" in r["@message"] for r in errors)
    levels = run(client, group, "fields @message | filter @message like /(ERROR|WARN)/ | sort @timestamp asc")
    assert [r["@message"].split()[1] for r in levels] == ["ERROR", "WARN", "ERROR", "ERROR"]
    text = run(client, group, 'fields @message | filter @message like "consumer lag"')
    assert len(text) == 1 and "12000" in text[0]["@message"]
    case = run(client, group, "fields @message | filter @message like /(?i)exception/")
    assert len(case) == 2


def test_stats_count_by_bin_omits_empty_bins(engine):  # type: ignore[no-untyped-def]
    client, group = engine
    rows = run(client, group, STATS_QUERY)  # the team's own query
    assert rows == [{"bin(5m)": at(0), "count()": "1"}, {"bin(5m)": at(300), "count()": "1"},
                    {"bin(5m)": at(1800), "count()": "1"}]  # :10 to :25 had no errors: no rows, not zeros


def test_the_bots_escaped_filters_match_literally(engine):  # type: ignore[no-untyped-def]
    client, group = engine
    rows = run(client, group, build_query('slow "quoted" request \\ with'))
    assert len(rows) == 1 and "backslash" in rows[0]["@message"]
    assert run(client, group, build_query('x" | stats count() by @logStream | filter "')) == []
    assert run(client, group, build_query("/.*/")) == []  # a filter is text, never a regular expression


@pytest.mark.parametrize(("query", "error"), [
    ("fields @message | sortt @timestamp", "sortt"),
    ("filter @message like /unclosed", "unclosed"),
    ('fields @message | filter @message like "unclosed', "unclosed"),
    ("fields @message | limit lots", "limit"),
])
def test_malformed_queries_are_refused(query: str, error: str):
    with pytest.raises(QueryError, match=error):
        parse_query(query)


def test_the_api_refuses_what_aws_refuses(engine):  # type: ignore[no-untyped-def]
    client, group = engine
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        client.start_query(logGroupName="/erp/nope", queryString="fields @message", startTime=0, endTime=10)
    with pytest.raises(ClientError, match="MalformedQueryException"):
        client.start_query(logGroupName=group, queryString="fields @message | sortt x", startTime=0, endTime=10)
    with pytest.raises(ClientError, match="InvalidParameterException"):
        client.start_query(logGroupName=group, queryString="fields @message", startTime=10, endTime=0)
    qid = client.start_query(logGroupName=group, queryString="fields @message", startTime=0,
                             endTime=int(time.time()))["queryId"]
    assert client.stop_query(queryId=qid)["success"] is True
    assert client.get_query_results(queryId=qid)["status"] == "Cancelled"
