"""Scan verdicts from ECR's statuses (botocore's ECR model, ScanStatus): only a finished scan can pass."""

from __future__ import annotations

import pytest

from bot.delivery.scan_report import ScanReport, add_page, completed, verdict


def report(status: str, counts: dict[str, int] | None = None, description: str = "") -> ScanReport:
    page = {"imageId": {"imageTag": "v1"}, "imageScanStatus": {"status": status, "description": description},
            "imageScanFindings": {"findingSeverityCounts": counts or {}}}
    return completed(add_page(None, page, "erp/employee-service", {"imageTag": "v1"}))


@pytest.mark.parametrize("status", ["COMPLETE", "ACTIVE"])  # ACTIVE: enhanced (Inspector) scanning, which never
def test_a_finished_scan_without_critical_findings_passes(status: str):  # reports COMPLETE
    r = report(status, {"HIGH": 2})
    assert r.finished and not r.pending and not r.failed and not r.blocking
    assert "Passes the gate" in verdict(r)


@pytest.mark.parametrize("status", ["FAILED", "UNSUPPORTED_IMAGE", "SCAN_ELIGIBILITY_EXPIRED", "FINDINGS_UNAVAILABLE",
                                    "LIMIT_EXCEEDED", "IMAGE_ARCHIVED", "IMAGE_SIZE_EXCEEDED"])
def test_a_scan_that_could_not_run_fails_closed(status: str):
    r = report(status, description="UnsupportedImageError: The operating system is not supported")
    assert r.failed and r.blocking and not r.pending
    text = verdict(r)
    assert "Passes" not in text and "scan failed" in text.lower() and status in text
    assert "The operating system is not supported" in text


@pytest.mark.parametrize("status", ["IN_PROGRESS", "PENDING"])
def test_a_running_scan_is_pending_not_passed(status: str):
    r = report(status)
    assert r.pending and not r.finished and not r.failed
    assert "Passes" not in verdict(r)


def test_every_status_ecr_documents_is_classified():
    import botocore.session

    documented = botocore.session.get_session().get_service_model("ecr").shape_for("ScanStatus").enum
    for status in documented:
        r = report(status)
        assert [r.finished, r.pending, r.failed].count(True) == 1, status
