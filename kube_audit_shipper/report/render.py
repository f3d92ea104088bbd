"""The whole report page from a finished `aggregate.Aggregator`: the four tabs in one self-contained document."""

from __future__ import annotations

import time

from kube_audit_shipper import __version__
from kube_audit_shipper.report import page, render_cost, render_overview, render_resources, render_who
from kube_audit_shipper.report.aggregate import Aggregator
from kube_audit_shipper.report.markup import esc, when

DEFAULT_TITLE = "Kubernetes audit report"


def render(a: Aggregator, *, title: str = DEFAULT_TITLE, detection_note: str = "", generated_s: float | None = None) -> str:
    """The HTML page. `detection_note` says why detection hits are missing when no engine was connected."""
    generated = time.time() if generated_s is None else generated_s
    period = f"{when(a.first_s)} – {when(a.last_s)}" if a.first_s is not None else "no timed events"
    meta = [f"events from {period}", f"{len(a.logs)} log(s)"]
    if a.window.bounded:
        meta.append(
            f"window {when(a.window.since_s) if a.window.since_s is not None else '…'} – {when(a.window.until_s) if a.window.until_s is not None else '…'}"
        )
    meta.append(f"generated {when(generated)}")
    sections = [
        ("overview", render_overview.render(a, detection_note or "detection was not run")),
        ("resources", render_resources.render(a)),
        ("who", render_who.render(a)),
        ("cost", render_cost.render(a)),
    ]
    footer = f"kube-audit-shipper {esc(__version__)} report: one file, no external resources; every value from the logs is escaped."
    return page.document(title, esc(" · ".join(meta)), sections, footer)
