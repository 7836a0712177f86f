"""CloudWatch alarm state changes, read as AWS documents them, and only our services' alarms."""

from __future__ import annotations

import json

import pytest

from bot.config import parse_config
from bot.delivery.pipeline_events import EventScope, MalformedEvent, NotOurs, parse_event
from tests.support import base_config


def alarm_event(name: str, state: object = None) -> str:
    return json.dumps({"version": "0", "id": "e-1", "detail-type": "CloudWatch Alarm State Change",
                       "source": "aws.cloudwatch", "account": "806332783810", "time": "2026-12-02T03:00:00Z",
                       "detail": {"alarmName": name, "state": state if state is not None else
                                  {"value": "ALARM", "reason": "Threshold Crossed", "timestamp": "x"}}})


def test_our_alarms_are_read_and_others_are_not_ours():
    config = parse_config(base_config("https://sqs.ap-northeast-2.amazonaws.com/806332783810/q", "t"), "test")
    scope = EventScope.of(config)
    event = parse_event(alarm_event("erp-prod-employee-errors"), scope)
    assert event is not None and event.kind == "alarm" and event.state == "ALARM"
    with pytest.raises(NotOurs):
        parse_event(alarm_event("billing-cpu-high"), scope)
    with pytest.raises(MalformedEvent, match=r"state\.value"):
        parse_event(alarm_event("erp-prod-employee-errors", {"reason": "no value"}), scope)
    # the progress queue carries no alarms
    with pytest.raises(NotOurs):
        parse_event(alarm_event("erp-prod-employee-errors"), EventScope.progress_of(config))
