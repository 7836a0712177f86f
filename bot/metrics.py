"""Prometheus metrics served on GET /metrics.

Each bot instance owns its registry, so several instances (tests, the sandbox)
can live in one process. Labels carry only bounded, non-secret values: route
templates, verbs, API method names, event types.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "erp_chatops_http_requests", "HTTP requests by route and status",
            ["route", "status"], registry=self.registry)
        self.command_latency = Histogram(
            "erp_chatops_command_seconds", "Time from a /erp command's arrival to its acknowledgement",
            ["verb"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.events_processed = Counter(
            "erp_chatops_events_processed", "Queue events handled", ["type"], registry=self.registry)
        self.events_failed = Counter(
            "erp_chatops_events_failed", "Queue events that could not be handled", ["type"], registry=self.registry)
        self.slack_errors = Counter(
            "erp_chatops_slack_api_errors", "Slack Web API calls that failed", ["method", "error"],
            registry=self.registry)
        self.aws_errors = Counter(
            "erp_chatops_aws_api_errors", "AWS API calls that failed", ["service", "operation", "code"],
            registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
