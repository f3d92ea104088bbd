"""What enrichment reads from an event, as structural types.

The pipeline hands enrichment the event the policy step already decoded (`kube_audit_shipper.process.policy.event.RecordedEvent`
satisfies `EventView`; its `view` is the typed audit Event), so every head field is decoded once, in the same
pass as the line, and enrichment does not import the policy package. Absent fields are `msgspec.UNSET`, which
is falsy: `if view.user:` reads "has a user".
"""

from __future__ import annotations

from typing import Any, Protocol

from msgspec import Raw, UnsetType


class UserView(Protocol):
    @property
    def username(self) -> str | UnsetType: ...

    @property
    def groups(self) -> list[str] | UnsetType: ...


class ObjectRefView(Protocol):
    @property
    def resource(self) -> str | UnsetType: ...

    @property
    def subresource(self) -> str | UnsetType: ...

    @property
    def namespace(self) -> str | UnsetType: ...

    @property
    def name(self) -> str | UnsetType: ...

    @property
    def apiGroup(self) -> str | UnsetType: ...

    @property
    def apiVersion(self) -> str | UnsetType: ...


class StatusView(Protocol):
    @property
    def code(self) -> int | UnsetType: ...


class AuditEventView(Protocol):
    """The audit Event fields enrichment reads (names as in the Event JSON)."""

    @property
    def verb(self) -> str | UnsetType: ...

    @property
    def requestURI(self) -> str | UnsetType: ...

    @property
    def user(self) -> UserView | UnsetType: ...

    @property
    def impersonatedUser(self) -> UserView | UnsetType: ...

    @property
    def sourceIPs(self) -> list[str] | UnsetType: ...

    @property
    def objectRef(self) -> ObjectRefView | UnsetType: ...

    @property
    def responseStatus(self) -> StatusView | UnsetType: ...

    @property
    def requestReceivedTimestamp(self) -> str | UnsetType: ...

    @property
    def stageTimestamp(self) -> str | UnsetType: ...

    @property
    def annotations(self) -> dict[str, str] | UnsetType: ...


class EventView(Protocol):
    """A decoded event: typed head fields in `view`, raw bodies through `get`, edits through `set`, notes
    through `annotate`."""

    @property
    def view(self) -> AuditEventView: ...

    def get(self, name: str) -> Raw | None: ...

    def set(self, name: str, value: Any) -> None: ...

    def annotate(self, note: str) -> None:
        """Say on the event what a step could not do (a body it could not parse), in a shipped annotation."""
        ...


def api_group(ref: ObjectRefView) -> str:
    """objectRef's API group; for v1alpha1-style refs without apiGroup, the group part of `group/version`."""
    group = ref.apiGroup or ""
    if not group and ref.apiVersion and "/" in ref.apiVersion:
        group = ref.apiVersion.rpartition("/")[0]
    return group
