"""ECR scan findings of one image: every page of `DescribeImageScanFindings` (botocore's paginator).

The same reader serves the bot (through `AwsClients`, off the event loop) and the buildspec's
scan gate (a plain boto3 client).
"""

from __future__ import annotations

import asyncio
from typing import Any

from bot.aws.clients import AwsClients
from bot.delivery.scan_report import ScanReport, add_page, completed


def read_findings(ecr: Any, repository: str, image_id: dict[str, str]) -> ScanReport:
    """Every page of DescribeImageScanFindings for one image, through an ECR client."""
    paginator = ecr.get_paginator("describe_image_scan_findings")
    report: ScanReport | None = None
    for page in paginator.paginate(repositoryName=repository, imageId=image_id):
        report = add_page(report, page, repository, image_id)
    assert report is not None
    return completed(report)


async def fetch_scan_report(aws: AwsClients, repository: str, image_id: dict[str, str]) -> ScanReport:
    # the client too is made (or waited for) on the worker thread, never on the event loop
    return await asyncio.to_thread(lambda: read_findings(aws.client("ecr"), repository, image_id))
