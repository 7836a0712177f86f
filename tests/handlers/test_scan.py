"""`/erp scan` and scan events, against moto's ECR seeded with findings."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid

import boto3
import pytest

from bot.aws.clients import AwsClients
from handlers.scan import NOTIFY_ACTION
from sandbox.codepipeline import PipelineStandIn
from sandbox.ecr_images import publish_image
from sandbox.ecr_pages import EcrPager
from sandbox.local_aws import ACCOUNT
from sandbox.slack_workspace import SlackWorkspace
from tests.support import BackgroundLoop, BotProcess, wait_until

pytestmark = pytest.mark.usefixtures("erp_images")


def ask(loop: BackgroundLoop, slack: SlackWorkspace, text: str, user: str = "U0ONCALL") -> str:
    assert loop.run(slack.send_command(user, "C0ONCALL", text))[0] == 200
    message = wait_until(lambda: [m for m in slack.ephemerals(user)], what="answer")[-1]
    return message.text + json.dumps(message.blocks)


def new_tag() -> str:
    return uuid.uuid4().hex[:12]


def test_scan_summary_counts_absent_levels_as_zero_and_sorts_findings(bot: BotProcess, slack: SlackWorkspace,
                                                                      background_loop: BackgroundLoop):
    tag = new_tag()
    counts, _ = publish_image(AwsClients(), "erp/employee-service", tag)
    assert "CRITICAL" not in counts  # AWS leaves the level out when there is nothing
    shown = ask(background_loop, slack, f"scan employee {tag}")
    assert "0 critical \\u00b7 2 high \\u00b7 5 medium \\u00b7 3 low" in shown
    assert "Passes the gate" in shown
    # highest severity first, then highest CVSS score
    by_score = ("CVE-2023-25194", "CVE-2022-1471", "CVE-2023-4911", "CVE-2022-42003", "CVE-2023-44487",
                "CVE-2023-6378")  # 8.8, 8.3, 7.8, then the 7.5s by id
    highs = [shown.index(cve) for cve in by_score if cve in shown]
    assert highs == sorted(highs) and len(highs) == 2
    assert "https://nvd.nist.gov/vuln/detail/" in shown and "and 5 more" in shown


def test_critical_finding_blocks(bot: BotProcess, slack: SlackWorkspace, background_loop: BackgroundLoop):
    tag = new_tag()
    publish_image(AwsClients(), "erp/notification-service", tag, critical=2)
    shown = ask(background_loop, slack, f"scan notification {tag}")
    assert "Blocks the deploy" in shown and "2 critical" in shown
    assert shown.index("*Critical*") < shown.index("*High*")


def test_latest_is_the_newest_push(bot: BotProcess, slack: SlackWorkspace, background_loop: BackgroundLoop):
    older, newer = new_tag(), new_tag()
    publish_image(AwsClients(), "erp/approval-request-service", older)
    time.sleep(1.1)  # ECR's push time has second resolution
    publish_image(AwsClients(), "erp/approval-request-service", newer, critical=1)
    shown = ask(background_loop, slack, "scan approval-request latest")
    assert f"erp/approval-request-service:{newer}" in shown


def test_unknown_tag_lists_recent_ones(bot: BotProcess, slack: SlackWorkspace, background_loop: BackgroundLoop):
    tag = new_tag()
    publish_image(AwsClients(), "erp/approval-processing-service", tag)
    shown = ask(background_loop, slack, "scan approval-processing nope123")
    assert "No image `nope123` in `erp/approval-processing-service`" in shown and tag in shown


def configure_findings(repository: str, tag: str, result: dict) -> None:
    ecr = boto3.client("ecr")
    body = json.dumps({"results": [{"repositoryName": repository, "imageId": {"imageTag": tag}, **result}],
                       "region": ecr.meta.region_name, "account_id": ACCOUNT}).encode()
    req = urllib.request.Request(f"{ecr.meta.endpoint_url}/moto-api/static/ecr/scan-finding-results", data=body,
                                 method="POST", headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req).close()


def push_only(repository: str, tag: str) -> None:
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                           "config": {"digest": "sha256:" + uuid.uuid4().hex * 2},
                           "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 1,
                                       "digest": "sha256:" + uuid.uuid4().hex * 2}]})
    boto3.client("ecr").put_image(repositoryName=repository, imageManifest=manifest, imageTag=tag)
    boto3.client("ecr").start_image_scan(repositoryName=repository, imageId={"imageTag": tag})


def test_enhanced_findings_show_fixed_versions(bot: BotProcess, slack: SlackWorkspace,
                                               background_loop: BackgroundLoop):
    tag = new_tag()
    push_only("erp/employee-service", tag)
    configure_findings("erp/employee-service", tag, {
        "imageScanStatus": {"status": "ACTIVE", "description": "Continuous scan is selected"},
        "imageScanFindings": {"findingSeverityCounts": {"HIGH": 1, "MEDIUM": 1}, "enhancedFindings": [
            {"awsAccountId": "806332783810", "severity": "MEDIUM", "score": 5.3, "status": "ACTIVE",
             "title": "CVE-2023-34055 - spring-boot", "type": "PACKAGE_VULNERABILITY",
             "packageVulnerabilityDetails": {"vulnerabilityId": "CVE-2023-34055", "source": "NVD",
                                             "sourceUrl": "https://nvd.nist.gov/vuln/detail/CVE-2023-34055",
                                             "vulnerablePackages": [{"name": "spring-boot", "version": "2.7.16",
                                                                     "fixedInVersion": "2.7.18"}]}},
            {"awsAccountId": "806332783810", "severity": "HIGH", "score": 7.5, "status": "ACTIVE",
             "title": "CVE-2023-44487 - netty-codec-http2", "type": "PACKAGE_VULNERABILITY",
             "packageVulnerabilityDetails": {"vulnerabilityId": "CVE-2023-44487", "source": "NVD",
                                             "sourceUrl": "https://nvd.nist.gov/vuln/detail/CVE-2023-44487",
                                             "vulnerablePackages": [{"name": "netty-codec-http2",
                                                                     "version": "4.1.97.Final",
                                                                     "fixedInVersion": "4.1.100.Final"}]}},
        ]}})
    shown = ask(background_loop, slack, f"scan employee {tag}")
    assert "0 critical \\u00b7 1 high \\u00b7 1 medium \\u00b7 0 low" in shown
    assert "fixed in `4.1.100.Final`" in shown and "fixed in `2.7.18`" in shown
    assert shown.index("CVE-2023-44487") < shown.index("CVE-2023-34055")


@pytest.mark.parametrize(("status", "description"), [
    ("FAILED", "The scan failed: an internal error occurred"),
    ("UNSUPPORTED_IMAGE", "UnsupportedImageError: The operating system and/or package manager are not supported."),
])
def test_a_scan_that_could_not_run_never_passes(bot: BotProcess, slack: SlackWorkspace,
                                                background_loop: BackgroundLoop, status: str, description: str):
    tag = new_tag()
    push_only("erp/employee-service", tag)
    configure_findings("erp/employee-service", tag, {"imageScanStatus": {"status": status, "description": description}})
    shown = ask(background_loop, slack, f"scan employee {tag}")
    assert "Scan failed" in shown and status in shown and description.split(":")[0] in shown
    assert "Passes" not in shown and "passes" not in shown and "still" not in shown


def test_enhanced_findings_on_more_than_one_page_are_all_read(bot: BotProcess, slack: SlackWorkspace,
                                                              background_loop: BackgroundLoop, ecr_pages: EcrPager):
    """ECR serves 100 findings a page (botocore's ECR docs); the one CRITICAL finding is on the second."""
    tag = new_tag()
    push_only("erp/notification-service", tag)
    mediums = [{"awsAccountId": ACCOUNT, "severity": "MEDIUM", "score": 5.0, "status": "ACTIVE",
                "title": f"CVE-2024-{1000 + i} - lib{i}", "type": "PACKAGE_VULNERABILITY",
                "packageVulnerabilityDetails": {"vulnerabilityId": f"CVE-2024-{1000 + i}", "source": "NVD",
                                                "vulnerablePackages": [{"name": f"lib{i}", "version": "1.0"}]}}
               for i in range(140)]
    critical = {"awsAccountId": ACCOUNT, "severity": "CRITICAL", "score": 9.8, "status": "ACTIVE",
                "title": "CVE-2021-44228 - log4j-core", "type": "PACKAGE_VULNERABILITY",
                "packageVulnerabilityDetails": {"vulnerabilityId": "CVE-2021-44228", "source": "NVD",
                                                "vulnerablePackages": [{"name": "log4j-core", "version": "2.14.1",
                                                                        "fixedInVersion": "2.17.1"}]}}
    configure_findings("erp/notification-service", tag, {
        "imageScanStatus": {"status": "ACTIVE", "description": "Continuous scan is selected"},
        "imageScanFindings": {"findingSeverityCounts": {"MEDIUM": 140, "CRITICAL": 1},
                              "enhancedFindings": [*mediums, critical]}})
    served = ecr_pages.pages_served
    shown = ask(background_loop, slack, f"scan notification {tag}")
    assert ecr_pages.pages_served - served >= 2  # the bot asked for the second page
    assert "CVE-2021-44228" in shown and "fixed in `2.17.1`" in shown and "Blocks the deploy" in shown
    assert shown.index("CVE-2021-44228") < shown.index("CVE-2024-1000")


def test_scan_in_progress_offers_to_post_the_result(bot: BotProcess, slack: SlackWorkspace,
                                                   background_loop: BackgroundLoop, pipeline: PipelineStandIn,
                                                   aws_resources: dict[str, str]):
    tag = new_tag()
    push_only("erp/employee-service", tag)
    configure_findings("erp/employee-service", tag, {
        "imageScanStatus": {"status": "IN_PROGRESS", "description": "Scan in progress"}})
    shown = ask(background_loop, slack, f"scan employee {tag}")
    assert "is still in progress" in shown
    offer = slack.ephemerals("U0ONCALL")[-1]
    background_loop.run(slack.click("U0ONCALL", offer, NOTIFY_ACTION))
    wait_until(lambda: "when it is done" in slack.ephemerals("U0ONCALL")[-1].text, what="the promise")
    # the scan finishes: ECR's event reaches the queue, and the result reaches the person who asked
    boto3.client("sqs").send_message(QueueUrl=aws_resources["queue_url"], MessageBody=json.dumps({
        "version": "0", "id": str(uuid.uuid4()), "detail-type": "ECR Image Scan", "source": "aws.ecr",
        "account": "806332783810", "time": "2026-11-26T03:00:00Z", "region": "ap-northeast-2",
        "resources": ["arn:aws:ecr:ap-northeast-2:806332783810:repository/erp/employee-service"],
        "detail": {"scan-status": "COMPLETE", "repository-name": "erp/employee-service",
                   "finding-severity-counts": {"HIGH": 3}, "image-digest": "sha256:" + "0" * 64,
                   "image-tags": [tag]}}))
    result = wait_until(lambda: [m.text for m in slack.ephemerals("U0ONCALL") if "Scan of" in m.text], what="result")
    assert f"erp/employee-service:{tag}" in result[-1]


def test_blocking_scan_without_a_deploy_is_said_once_in_dev(bot: BotProcess, slack: SlackWorkspace,
                                                           background_loop: BackgroundLoop,
                                                           aws_resources: dict[str, str]):
    sqs = boto3.client("sqs")
    for tag, critical in ((new_tag(), 0), (new_tag(), 1)):
        counts, digest = publish_image(AwsClients(), "erp/notification-service", tag, critical=critical)
        sqs.send_message(QueueUrl=aws_resources["queue_url"], MessageBody=json.dumps({
            "version": "0", "id": str(uuid.uuid4()), "detail-type": "ECR Image Scan", "source": "aws.ecr",
            "account": "806332783810", "time": "2026-11-26T03:00:00Z", "region": "ap-northeast-2", "resources": [],
            "detail": {"scan-status": "COMPLETE", "repository-name": "erp/notification-service",
                       "finding-severity-counts": counts, "image-digest": digest, "image-tags": [tag]}}))
    message = wait_until(lambda: slack.channel_messages("C0DEV"), what="the warning")[0]
    assert "Blocks the deploy" in message.text and tag in message.text and "scan gate" in message.text
    assert len(slack.channel_messages("C0DEV")) == 1 and slack.channel_messages("C0PROD") == []


def test_deploy_thread_gets_the_top_findings(bot: BotProcess, slack: SlackWorkspace, background_loop: BackgroundLoop,
                                             pipeline: PipelineStandIn):
    assert background_loop.run(slack.send_command("U0DEV1", "C0DEV", "deploy employee dev"))[0] == 200
    card = wait_until(lambda: [m for m in slack.channel_messages("C0DEV") if "Succeeded" in json.dumps(m.blocks)],
                      what="the deploy")[0]
    note = wait_until(lambda: [m.text for m in slack.thread("C0DEV", card.ts) if "Scan of" in m.text],
                      what="the scan note")[0]
    assert "Passes the gate" in note and "CVE-" in note and "*High*" in note
