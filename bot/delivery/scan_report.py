"""ECR scan findings of one image, summarised for people deciding whether it ships.

Built from every page of `DescribeImageScanFindings` (read by `bot/aws/ecr_scans.py`),
both basic findings and enhanced (Inspector) ones. A severity with no findings is
absent from AWS's counts: it counts as 0 here. The verdict is the buildspec's
gate: any CRITICAL finding blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "INFORMATIONAL", "UNDEFINED")
# ECR's scan statuses (botocore's ECR model, ScanStatus). Enhanced scanning (Inspector) reports ACTIVE,
# never COMPLETE. Every other status means there are no findings to judge by: the gate fails closed.
FINISHED = frozenset({"COMPLETE", "ACTIVE"})
PENDING = frozenset({"IN_PROGRESS", "PENDING"})
# Scan events: ECR's say COMPLETE or FAILED; Inspector's (enhanced) say INITIAL_SCAN_COMPLETE.
EVENT_FINISHED = FINISHED | {"INITIAL_SCAN_COMPLETE"}


def scan_failed(status: str) -> bool:
    """A scan status (from the API or an event) that leaves nothing to judge the image by."""
    return status not in EVENT_FINISHED and status not in PENDING
RANK = {s: i for i, s in enumerate(SEVERITIES)}
TOP = 5


@dataclass(frozen=True)
class Finding:
    id: str
    severity: str
    score: float | None
    package: str | None
    version: str | None
    fixed_in: str | None
    url: str | None
    title: str | None = None


@dataclass
class ScanReport:
    repository: str
    tag: str | None
    digest: str | None
    status: str  # COMPLETE, IN_PROGRESS, FAILED, ...
    counts: dict[str, int] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    completed_at: datetime | None = None
    description: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def pending(self) -> bool:
        return self.status in PENDING

    @property
    def failed(self) -> bool:
        """The scan could not run (FAILED, UNSUPPORTED_IMAGE, ...): nothing says the image is safe."""
        return scan_failed(self.status)

    @property
    def blocking(self) -> bool:
        return self.failed or self.counts.get("CRITICAL", 0) > 0

    def top(self, n: int = TOP) -> list[Finding]:
        return sorted(self.findings, key=lambda f: (RANK.get(f.severity, 9), -(f.score or 0), f.id))[:n]


def _attr(finding: dict[str, Any], key: str) -> str | None:
    for a in finding.get("attributes", []):
        if a.get("key") == key:
            return str(a.get("value"))
    return None


def _basic(f: dict[str, Any]) -> Finding:
    score = _attr(f, "CVSS3_SCORE") or _attr(f, "CVSS2_SCORE")
    return Finding(id=str(f.get("name", "?")), severity=str(f.get("severity", "UNDEFINED")).upper(),
                   score=float(score) if score else None, package=_attr(f, "package_name"),
                   version=_attr(f, "package_version"), fixed_in=None, url=f.get("uri"))


def _enhanced(f: dict[str, Any]) -> Finding:
    details = f.get("packageVulnerabilityDetails") or {}
    packages = details.get("vulnerablePackages") or [{}]
    pkg = packages[0]
    score = f.get("score")
    return Finding(id=str(details.get("vulnerabilityId") or f.get("title") or "?"),
                   severity=str(f.get("severity", "UNDEFINED")).upper(),
                   score=float(score) if score is not None else None, package=pkg.get("name"),
                   version=pkg.get("version"), fixed_in=pkg.get("fixedInVersion") or None,
                   url=details.get("sourceUrl"), title=f.get("title"))


def add_page(report: ScanReport | None, page: dict[str, Any], repository: str,
             image_id: dict[str, str]) -> ScanReport:
    """One page of DescribeImageScanFindings added to the report (the first page makes it)."""
    status = page.get("imageScanStatus", {})
    if report is None:
        ident = page.get("imageId", {})
        report = ScanReport(repository=repository, tag=ident.get("imageTag") or image_id.get("imageTag"),
                            digest=ident.get("imageDigest"), status=str(status.get("status", "UNKNOWN")),
                            description=status.get("description"))
    found = page.get("imageScanFindings") or {}
    if found.get("findingSeverityCounts"):
        report.counts = {str(k).upper(): int(v) for k, v in found["findingSeverityCounts"].items()}
    if found.get("imageScanCompletedAt"):
        report.completed_at = found["imageScanCompletedAt"]
    report.findings += [_basic(f) for f in found.get("findings", [])]
    report.findings += [_enhanced(f) for f in found.get("enhancedFindings", [])]
    return report


def completed(report: ScanReport) -> ScanReport:
    """The report once every page is in: a severity AWS leaves out counts as 0."""
    for severity in SEVERITIES[:4]:
        report.counts.setdefault(severity, 0)
    return report


def severity_counts(counts: dict[str, int]) -> str:
    return " · ".join(f"{counts.get(s, 0)} {s.lower()}" for s in SEVERITIES[:4])


def verdict(report: ScanReport) -> str:
    if report.failed:
        why = f": {report.description}" if report.description else ""
        return f":no_entry: *Scan failed* (`{report.status}`{why}): the gate fails closed, this image is not deployed"
    if report.pending:
        return f":hourglass_flowing_sand: *Scan {report.status.lower().replace('_', ' ')}*: no verdict yet"
    if report.blocking:
        return f":no_entry: *Blocks the deploy*: {report.counts['CRITICAL']} CRITICAL finding(s)"
    return ":white_check_mark: *Passes the gate*: no CRITICAL findings"


def finding_line(f: Finding) -> str:
    name = f"<{f.url}|{f.id}>" if f.url else f.id
    pkg = f" in `{f.package}{' ' + f.version if f.version else ''}`" if f.package else ""
    fix = f", fixed in `{f.fixed_in}`" if f.fixed_in else ""
    score = f" ({f.score:g})" if f.score is not None else ""
    return f"*{f.severity.title()}*{score} {name}{pkg}{fix}"
