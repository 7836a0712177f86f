"""A scan report as Block Kit, for `/erp scan`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from slack_sdk.models.blocks import ContextBlock, MarkdownTextObject, SectionBlock

from bot.delivery.image_tag import short_tag
from bot.delivery.scan_report import ScanReport, finding_line, severity_counts, verdict


def report_blocks(report: ScanReport, service: str) -> list[dict[str, Any]]:
    image = f"{report.repository}:{short_tag(report.tag or report.digest or '?')}"
    head = f":shield: *Scan of `{image}`* ({service})\n{verdict(report)}\n{severity_counts(report.counts)}"
    blocks: list[Any] = [SectionBlock(text=MarkdownTextObject(text=head))]
    top = report.top()
    if top:
        more = len(report.findings) - len(top)
        lines = "\n".join(finding_line(f) for f in top) + (f"\n_and {more} more_" if more > 0 else "")
        blocks.append(SectionBlock(text=MarkdownTextObject(text=lines[:2900])))
    when = report.completed_at.strftime("%Y-%m-%d %H:%M UTC") if isinstance(report.completed_at, datetime) else None
    blocks.append(ContextBlock(elements=[MarkdownTextObject(
        text=f"scanned {when}" if when else "scan time unknown")]))
    return [b.to_dict() for b in blocks]
