"""A service's error alarm, fired and cleared by hand: moto's CloudWatch holds the alarm and its state, and
the "CloudWatch Alarm State Change" event goes on the events queue in the shape AWS documents (CloudWatch's
"Alarm events and EventBridge" reference: detail.alarmName, state and previousState with value, reason,
reasonData and timestamp, configuration.metrics), as the Terraform module's EventBridge rule delivers it.
moto does not emit EventBridge events, so this sends what the rule would."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from bot.aws.clients import AwsClients
from bot.delivery.pipeline_events import ALARM, alarm_name

ACCOUNT, REGION = "806332783810", "ap-northeast-2"
THRESHOLD = 5.0  # the module's error_alarm_threshold default


def _stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}+0000"


def set_alarm(aws: AwsClients, queue_url: str, environment: str, service: str, firing: bool,
              errors: float = 12.0) -> dict[str, Any]:
    """Put the alarm in ALARM (with `errors` a minute) or back to OK, in moto and as the event; returns it."""
    name = alarm_name(environment, service)
    cloudwatch = aws.client("cloudwatch")
    cloudwatch.put_metric_alarm(  # as infra/terraform makes it (idempotent)
        AlarmName=name, Namespace=f"ERP/{environment}", MetricName=f"{service}-errors", Statistic="Sum", Period=60,
        EvaluationPeriods=1, Threshold=THRESHOLD, ComparisonOperator="GreaterThanOrEqualToThreshold",
        TreatMissingData="notBreaching")
    before = cloudwatch.describe_alarms(AlarmNames=[name])["MetricAlarms"][0]
    now = datetime.now(UTC)
    value = errors if firing else 0.0
    verb = "was" if firing else "was not"
    reason = (f"Threshold Crossed: 1 out of the last 1 datapoints [{value} ({now:%d/%m/%y %H:%M:%S})] {verb}"
              f" greater than or equal to the threshold ({THRESHOLD}) (minimum 1 datapoint for OK -> ALARM"
              " transition).")
    reason_data = json.dumps({"version": "1.0", "queryDate": _stamp(now), "startDate": _stamp(now),
                              "statistic": "Sum", "period": 60, "recentDatapoints": [value],
                              "threshold": THRESHOLD, "evaluatedDatapoints": [
                                  {"timestamp": _stamp(now), "sampleCount": 1.0, "value": value}]})
    state = "ALARM" if firing else "OK"
    cloudwatch.set_alarm_state(AlarmName=name, StateValue=state, StateReason=reason, StateReasonData=reason_data)
    event = {
        "version": "0", "id": str(uuid.uuid4()), "detail-type": ALARM, "source": "aws.cloudwatch",
        "account": ACCOUNT, "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "region": REGION,
        "resources": [f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{name}"],
        "detail": {
            "alarmName": name,
            "state": {"value": state, "reason": reason, "reasonData": reason_data, "timestamp": _stamp(now)},
            "previousState": {"value": before.get("StateValue", "INSUFFICIENT_DATA"),
                              "reason": before.get("StateReason", ""), "timestamp": _stamp(now)},
            "configuration": {"description": f"ERROR lines of {service} in {environment}", "metrics": [{
                "id": "m1", "returnData": True, "metricStat": {
                    "metric": {"namespace": f"ERP/{environment}", "name": f"{service}-errors", "dimensions": {}},
                    "period": 60, "stat": "Sum"}}]},
        },
    }
    aws.client("sqs").send_message(QueueUrl=queue_url, MessageBody=json.dumps(event))
    return event
