"""HTML building blocks for the report: escaping, numbers, times, tables.

Everything shown comes from the logs, and an attacker writes those strings (a user agent, a pod name, a
command): every value goes through `esc`, which HTML-escapes (`& < > " '`, so it is safe in text and in quoted
attributes alike), replaces control characters, bidirectional overrides and lone surrogates (which a JSON `\\ud800` escape can put in a
string and which UTF-8 cannot encode) and cuts absurd lengths. Markup is only ever built from constants and
`esc` output; nothing from a log is put in a URL, a style, a script or an event handler.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterable, Sequence

MAX_TEXT_CHARS = 2000
# C0/C1 controls, and the bidirectional overrides and isolates that make text display in another order than it
# reads (a pod name that shows as something else)
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def esc(value: object, limit: int = MAX_TEXT_CHARS) -> str:
    """`value` as text safe anywhere in HTML content or in a double- or single-quoted attribute."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    text = _SURROGATE.sub("\ufffd", _CONTROL.sub("\ufffd", text))
    return html.escape(text, quote=True)


def num(n: int | float) -> str:
    """1234567 -> 1,234,567 (thin grouping, no locale)."""
    return f"{n:,.0f}" if isinstance(n, float) else f"{n:,}"


def size(n_bytes: int | float) -> str:
    value = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError


def pct(part: int | float, whole: int | float) -> str:
    return "–" if not whole else f"{100.0 * part / whole:.1f}%"


def when(ts: float | None) -> str:
    """Epoch seconds as `2026-11-22 10:00:03Z` (UTC); "–" when unknown."""
    if ts is None or ts <= 0:
        return "–"
    try:
        return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts))
    except (OverflowError, ValueError, OSError):
        return "–"


class Cell:
    """A table cell: shown markup (already safe) and a sort key."""

    __slots__ = ("cls", "html", "sort")

    def __init__(self, html_text: str, sort: str | int | float | None = None, cls: str = "") -> None:
        self.html = html_text
        self.sort = sort
        self.cls = cls


def text(value: object, cls: str = "") -> Cell:
    """A text cell from a log value (escaped)."""
    shown = esc(value)
    return Cell(shown, None, cls)


def number(n: int | float, shown: str | None = None, cls: str = "num") -> Cell:
    return Cell(esc(shown if shown is not None else num(n)), n, cls)


def time_cell(ts: float | None) -> Cell:
    return Cell(esc(when(ts)), ts or 0, "time")


def table(headers: Sequence[str], rows: Iterable[Sequence[Cell]], *, empty: str = "nothing recorded", cls: str = "", numeric: Sequence[int] = ()) -> str:
    """A sortable table (click a header); `headers` are constants, cells are built by the helpers above."""
    body = []
    for row in rows:
        cells = []
        for cell in row:
            sort = "" if cell.sort is None else f' data-sort="{esc(cell.sort)}"'
            klass = f' class="{cell.cls}"' if cell.cls else ""
            cells.append(f"<td{klass}{sort}>{cell.html}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    if not body:
        return f'<p class="empty">{esc(empty)}</p>'
    head = "".join(f'<th{" class=num" if i in numeric else ""} tabindex="0">{esc(h)}</th>' for i, h in enumerate(headers))
    return f'<div class="scroll"><table class="sortable {cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def panel(title: str, body: str, *, note: str = "", wide: bool = False, anchor: str = "") -> str:
    """A titled box of the page; `title` and `note` are constants or already-built text (escaped here)."""
    ident = f' id="{esc(anchor)}"' if anchor else ""
    klass = "panel wide" if wide else "panel"
    note_html = f'<p class="note">{esc(note)}</p>' if note else ""
    return f'<section class="{klass}"{ident}><h3>{esc(title)}</h3>{note_html}{body}</section>'


def card(label: str, value: str, sub: str = "", *, alert: bool = False) -> str:
    klass = "card alert" if alert else "card"
    sub_html = f'<div class="sub">{esc(sub)}</div>' if sub else ""
    return f'<div class="{klass}"><div class="label">{esc(label)}</div><div class="value">{esc(value)}</div>{sub_html}</div>'


def showing(shown: int, total: int, what: str) -> str:
    """'the 200 most recent of 3,412 deletions' style note."""
    if total <= shown:
        return f"{num(total)} {what}"
    return f"the {num(shown)} most recent of {num(total)} {what}"
