"""The error count per 5 minutes (`/erp logs <service> stats`) as a small PNG bar chart."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime

from bot.delivery.log_lines import parse_time

WIDTH, HEIGHT = 720, 260
MARGIN_LEFT, MARGIN_BOTTOM, MARGIN_TOP = 48, 34, 30


@dataclass(frozen=True)
class Bucket:
    start: datetime
    count: int


def buckets_from_rows(rows: list[dict[str, str]]) -> list[Bucket]:
    """Rows of `stats count() by bin(5m)`: fields `bin(5m)` and `count()`."""
    out = []
    for row in rows:
        when, count = row.get("bin(5m)"), row.get("count()")
        if when is None or count is None:
            continue
        try:
            out.append(Bucket(parse_time(when), int(float(count))))
        except ValueError:
            continue
    return sorted(out, key=lambda b: b.start)


def render_chart(buckets: list[Bucket], title: str) -> bytes:
    from PIL import Image, ImageDraw, ImageFont  # on first use: a replica that never draws a chart skips Pillow

    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    draw.text((MARGIN_LEFT, 8), title, fill="#1d1c1d", font=font)
    plot_w, plot_h = WIDTH - MARGIN_LEFT - 12, HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    top = max((b.count for b in buckets), default=0) or 1
    draw.line((MARGIN_LEFT, MARGIN_TOP, MARGIN_LEFT, MARGIN_TOP + plot_h), fill="#888")
    draw.line((MARGIN_LEFT, MARGIN_TOP + plot_h, MARGIN_LEFT + plot_w, MARGIN_TOP + plot_h), fill="#888")
    draw.text((6, MARGIN_TOP - 4), str(top), fill="#555", font=font)
    draw.text((6, MARGIN_TOP + plot_h - 10), "0", fill="#555", font=font)
    if buckets:
        step = plot_w / len(buckets)
        for i, b in enumerate(buckets):
            h = plot_h * b.count / top
            x0 = MARGIN_LEFT + i * step + 1
            draw.rectangle((x0, MARGIN_TOP + plot_h - h, x0 + max(step - 2, 1), MARGIN_TOP + plot_h),
                           fill="#e01e5a" if b.count == top else "#2c7be5")
        labels = max(1, len(buckets) // 6)
        for i in range(0, len(buckets), labels):
            draw.text((MARGIN_LEFT + i * step, MARGIN_TOP + plot_h + 6), f"{buckets[i].start:%H:%M}",
                      fill="#555", font=font)
    else:
        draw.text((MARGIN_LEFT + 20, MARGIN_TOP + plot_h // 2), "no errors in this window", fill="#555", font=font)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def summary(buckets: list[Bucket]) -> str:
    total = sum(b.count for b in buckets)
    if not total:
        return "no errors"
    peak = max(buckets, key=lambda b: b.count)
    return f"{total} errors, peak {peak.count} in the 5 minutes from {peak.start:%H:%M} UTC"
