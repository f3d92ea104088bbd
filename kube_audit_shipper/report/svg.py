"""Charts as inline SVG, drawn here in Python: no chart library, nothing fetched, readable without script.

Every chart scales to its container (`viewBox`, width 100%), labels are escaped text (`markup.esc`), and each
bar or point carries a `<title>` so hovering shows its exact value. Colours come from one palette, with the
failure colour kept for failures.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from kube_audit_shipper.report.markup import esc, num, when

PALETTE = ("#3b6fb6", "#e08a2c", "#4a9e5c", "#8e5ab5", "#c9a227", "#2aa1a8", "#b5526e", "#7a7a7a")
FAIL = "#c8423b"
_AXIS = "#8a8f98"


def _frame(width: int, height: int, body: str, label: str) -> str:
    return (
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" preserveAspectRatio="xMidYMid meet" '
        f'role="img" aria-label="{esc(label)}" xmlns="http://www.w3.org/2000/svg">{body}</svg>'
    )


def _time_axis(start_s: int, step_s: int, bars: int, left: float, right: float, y: float) -> str:
    if bars == 0:
        return ""
    ticks = [0, bars // 2, bars - 1] if bars > 2 else list(range(bars))
    out = []
    for i, tick in enumerate(ticks):
        x = left + (right - left) * (tick + 0.5) / bars
        anchor = "start" if i == 0 and len(ticks) > 1 else "end" if i == len(ticks) - 1 and len(ticks) > 1 else "middle"
        out.append(f'<text x="{x:.1f}" y="{y}" text-anchor="{anchor}" class="axis">{esc(when(start_s + tick * step_s))}</text>')
    return "".join(out)


def trend(
    series: Sequence[tuple[str, Sequence[int]]],
    start_s: int,
    step_s: int,
    *,
    label: str,
    width: int = 1240,
    height: int = 190,
    failed: Sequence[int] | None = None,
) -> str:
    """Bars over time: the first series as bars (with `failed` drawn over them in red), further series as lines."""
    if not series or not series[0][1]:
        return '<p class="empty">no timed events</p>'
    left, right, top, bottom = 44.0, width - 8.0, 14.0, height - 22.0
    bars = len(series[0][1])
    peak = max(max(values) if values else 0 for _, values in series) or 1
    slot = (right - left) / bars
    gap = 1.0 if slot > 3 else 0.0
    body = [
        f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="{_AXIS}" stroke-width="1"/>',
        f'<text x="{left - 4}" y="{top + 4}" text-anchor="end" class="axis">{esc(num(peak))}</text>',
        f'<text x="{left - 4}" y="{bottom}" text-anchor="end" class="axis">0</text>',
    ]
    name, values = series[0]
    for i, value in enumerate(values):
        if not value:
            continue
        h = (bottom - top) * value / peak
        x = left + i * slot
        tip = f"{when(start_s + i * step_s)}: {num(value)} {name}"
        if failed is not None and i < len(failed) and failed[i]:
            tip += f", {num(failed[i])} failed"
        body.append(
            f'<rect x="{x:.1f}" y="{bottom - h:.1f}" width="{max(slot - gap, 0.5):.1f}" height="{h:.1f}" fill="{PALETTE[0]}"><title>{esc(tip)}</title></rect>'
        )
        if failed is not None and i < len(failed) and failed[i]:
            fh = (bottom - top) * failed[i] / peak
            body.append(f'<rect x="{x:.1f}" y="{bottom - fh:.1f}" width="{max(slot - gap, 0.5):.1f}" height="{fh:.1f}" fill="{FAIL}"/>')
    for index, (line_name, line_values) in enumerate(series[1:], start=1):
        points = " ".join(f"{left + (i + 0.5) * slot:.1f},{bottom - (bottom - top) * v / peak:.1f}" for i, v in enumerate(line_values))
        colour = PALETTE[index % len(PALETTE)]
        body.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.8"><title>{esc(line_name)}</title></polyline>')
    body.append(_time_axis(start_s, step_s, bars, left, right, height - 6))
    return _frame(width, height, "".join(body), label) + legend(
        [(n, PALETTE[i % len(PALETTE)]) for i, (n, _) in enumerate(series)] + ([("failed", FAIL)] if failed else [])
    )


def lines(series: Sequence[tuple[str, Sequence[int]]], start_s: int, step_s: int, *, label: str, width: int = 620, height: int = 170) -> str:
    """Several series over time as lines, one colour each."""
    if not series or not any(values for _, values in series):
        return '<p class="empty">no timed events</p>'
    left, right, top, bottom = 44.0, width - 8.0, 14.0, height - 22.0
    bars = max(len(values) for _, values in series)
    peak = max(max(values) if values else 0 for _, values in series) or 1
    slot = (right - left) / bars
    body = [
        f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="{_AXIS}" stroke-width="1"/>',
        f'<text x="{left - 4}" y="{top + 4}" text-anchor="end" class="axis">{esc(num(peak))}</text>',
        f'<text x="{left - 4}" y="{bottom}" text-anchor="end" class="axis">0</text>',
    ]
    for index, (name, values) in enumerate(series):
        colour = PALETTE[index % len(PALETTE)]
        points = " ".join(f"{left + (i + 0.5) * slot:.1f},{bottom - (bottom - top) * v / peak:.1f}" for i, v in enumerate(values))
        body.append(
            f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.8"><title>{esc(name)}: {esc(num(sum(values)))}</title></polyline>'
        )
    body.append(_time_axis(start_s, step_s, bars, left, right, height - 6))
    return _frame(width, height, "".join(body), label) + legend([(n, PALETTE[i % len(PALETTE)]) for i, (n, _) in enumerate(series)])


def hbars(items: Sequence[tuple[str, int]], *, label: str, width: int = 620, failed: Sequence[int] | None = None, shown: Callable[[int], str] = num) -> str:
    """Horizontal bars, one per item, largest first as given; values (and failures in red) at the right."""
    if not items:
        return '<p class="empty">nothing recorded</p>'
    row_h, label_w, value_w = 20, 190, 90
    height = row_h * len(items) + 4
    peak = max(value for _, value in items) or 1
    span = width - label_w - value_w
    body = []
    for i, (name, value) in enumerate(items):
        y = 2 + i * row_h
        w = span * value / peak
        bad = failed[i] if failed is not None and i < len(failed) else 0
        name_text = esc(name if len(name) <= 30 else name[:29] + "…")
        tip = f"{name}: {shown(value)}" + (f", {num(bad)} failed" if bad else "")
        body.append(f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end" class="lbl">{name_text}<title>{esc(tip)}</title></text>')
        body.append(f'<rect x="{label_w}" y="{y + 3}" width="{max(w, 1):.1f}" height="{row_h - 6}" fill="{PALETTE[0]}"><title>{esc(tip)}</title></rect>')
        if bad:
            body.append(f'<rect x="{label_w}" y="{y + 3}" width="{max(span * bad / peak, 1):.1f}" height="{row_h - 6}" fill="{FAIL}"/>')
        body.append(f'<text x="{label_w + max(w, 1) + 4:.1f}" y="{y + 14}" class="val">{esc(shown(value))}</text>')
    return _frame(width, height, "".join(body), label)


def share(items: Sequence[tuple[str, int]], *, label: str, width: int = 620, height: int = 24) -> str:
    """One bar split by share (100%), with a legend giving each part's count and percentage."""
    total = sum(value for _, value in items)
    if not total:
        return '<p class="empty">nothing recorded</p>'
    x = 0.0
    body = []
    parts = []
    for i, (name, value) in enumerate(items):
        if not value:
            continue
        w = width * value / total
        colour = PALETTE[i % len(PALETTE)]
        tip = f"{name}: {num(value)} ({100 * value / total:.1f}%)"
        body.append(f'<rect x="{x:.1f}" y="0" width="{w:.1f}" height="{height}" fill="{colour}"><title>{esc(tip)}</title></rect>')
        parts.append((f"{name}: {num(value)} ({100 * value / total:.1f}%)", colour))
        x += w
    return _frame(width, height, "".join(body), label) + legend(parts)


def spark(values: Sequence[int], *, label: str, width: int = 120, height: int = 22) -> str:
    """A small trend line for a table cell."""
    if not values or not any(values):
        return ""
    peak = max(values) or 1
    step = width / max(len(values) - 1, 1)
    points = " ".join(f"{i * step:.1f},{height - 1 - (height - 2) * v / peak:.1f}" for i, v in enumerate(values))
    return (
        f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" aria-label="{esc(label)}" '
        f'xmlns="http://www.w3.org/2000/svg"><polyline points="{points}" fill="none" stroke="{PALETTE[0]}" stroke-width="1.5"/></svg>'
    )


def legend(items: Sequence[tuple[str, str]]) -> str:
    """Colour keys under a chart (`items`: text, colour from the palette)."""
    keys = "".join(f'<span><i style="background:{colour}"></i>{esc(name)}</span>' for name, colour in items)
    return f'<div class="legend">{keys}</div>'
