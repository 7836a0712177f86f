"""The scan gate against moto's ECR, through a proxy that counts what reaches ECR."""

from __future__ import annotations

import pytest

from bot.aws.clients import AwsClients
from bot.ci import build_steps
from bot.ci.notify import Notifier
from sandbox.aws_fault_proxy import AwsFaultProxy
from sandbox.aws_fault_proxy import Fault as AwsFault
from sandbox.ecr_images import publish_image
from sandbox.erp_services import repository_of
from tests.support import ROOT


def test_an_image_scanned_on_push_is_not_asked_for_a_scan_again_and_again(
        aws_resources: dict[str, str], aws_faults: AwsFaultProxy, monkeypatch: pytest.MonkeyPatch,
        erp_images: None):
    """ECR scans an image once a day: StartImageScan on an image scan-on-push already scanned answers
    LimitExceededException (botocore's ECR model), which botocore's standard retry mode takes for throttling
    and retried with back-off, about 12 s per image before the gate even looked at the scan. The gate starts
    a scan only for an image that has no recent one, and asks once."""
    tag = "b" * 40
    publish_image(AwsClients(), repository_of("employee"), tag)  # pushed, scanned on push
    aws_faults.faults.append(AwsFault("ecr", "slow", times=10**6, operation="StartImageScan"))  # counts them
    monkeypatch.setenv("AWS_ENDPOINT_URL_ECR", aws_faults.url)
    build_steps.scan_gate(["employee"], tag, Notifier({}), wait_seconds=30,
                          environ={"CHART": str(ROOT / "charts" / "erp")})
    assert [op for _, op, _ in aws_faults.injected if op == "StartImageScan"] == []


def test_a_failed_or_day_old_scan_is_started_again(aws_resources: dict[str, str], erp_images: None):
    """Review finding: counting any scan as done let a rebuilt commit pass on findings a day old or more
    (CVEs published since were missed), and a failed scan failed every retry of that commit for good."""
    import time

    import boto3

    ecr = boto3.client("ecr")
    fresh, failed = "d" * 40, "e" * 40
    publish_image(AwsClients(), repository_of("employee"), fresh)
    publish_image(AwsClients(), repository_of("notification"), failed, status="FAILED")
    assert build_steps._has_scan(ecr, repository_of("employee"), fresh)
    assert not build_steps._has_scan(ecr, repository_of("employee"), fresh, now=time.time() + 2 * 86400)
    assert not build_steps._has_scan(ecr, repository_of("notification"), failed)
