"""The Cost page's volume tables: events and bytes by verb, resource, level, stage and user.

Every event line in the window counts here, whatever its stage: this is what a backend stores and bills.
Bytes are the line's length (without the line feed), as recorded, before any policy trimming. Resources are
`resource[/subresource]` with the API group when it is not the core group; non-resource requests are their
path (without the query).
"""

from __future__ import annotations

from kube_audit_shipper.report.event import ReportEvent
from kube_audit_shipper.report.tables import KeyedTable

EVENTS, BYTES = 0, 1


class Volume:
    def __init__(self) -> None:
        self.by_verb = KeyedTable(100, width=2)
        self.by_resource = KeyedTable(1000, width=2)
        self.by_level = KeyedTable(20, width=2)
        self.by_stage = KeyedTable(20, width=2)
        self.by_user = KeyedTable(2000, width=2)
        self.events = 0
        self.bytes = 0

    def add(self, event: ReportEvent, size_bytes: int, username: str) -> None:
        self.events += 1
        self.bytes += size_bytes
        ref = event.objectRef
        if ref:
            resource = ref.resource or "(no resource)"
            if ref.subresource:
                resource = f"{resource}/{ref.subresource}"
            group = ref.apiGroup
            if group:
                resource = f"{resource}.{group}"
        else:
            resource = event.requestURI.partition("?")[0] or "(none)"
        for table, key in (
            (self.by_verb, event.verb or "(none)"),
            (self.by_resource, resource),
            (self.by_level, event.level or "(none)"),
            (self.by_stage, event.stage or "(none)"),
            (self.by_user, username or "(none)"),
        ):
            row = table.rows.get(key)
            if row is None:
                row = table.row(key)
            row[EVENTS] += 1
            row[BYTES] += size_bytes
