"""The detection engine: every event as recorded → the alerts it raises.

    event ─ skip RequestReceived ─ candidates by (verb, resource, subresource) ─ per rule: already done for this
          auditID? ─ match ─ exceptions (rule's, then global) ─ event rule: dedup → Alert
                                                              ─ aggregate: count in its group → threshold → Alert

* Index: a rule whose condition pins the verb, resource or subresource (`verb in [...]` at the top, under
  `and`, or in every branch of an `or`) is a candidate only for those; the candidate list of each distinct
  (verb, resource, subresource) is built once and memoised, so a typical event meets a handful of rules. Rules
  that pin none of them but pin the status code, impersonation or a public client address (conditions.FEATURES)
  are then filtered by those features of the event, memoised the same way per feature values: a typical event
  evaluates only the rules that can fire on it.
* One request, one alert: a request recorded at several stages is one auditID. Rules run at ResponseStarted,
  ResponseComplete and Panic (and on events without a stage); a rule that matched (or an aggregate that counted)
  at ResponseStarted is not run again at the request's later stages. Only requests seen at ResponseStarted are
  remembered (long-running ones: watches, exec), up to `max_tracked_requests`, first in first out; an auditID
  forgotten early is counted (`overflow["requests"]`).
* Event time only (`eventtime`); the watermark is the latest event time seen. Dedup periods and windows are
  judged at the watermark, so an event that arrives late cannot reopen what later events closed.
* Containment: whatever one rule raises on one event (an undecodable body, an odd value) is counted in
  `stats.errors[rule]`, and evaluation goes on with the next rule and the next event. A rule the index or a
  feature excludes for an event is not evaluated on it at all (it could not match), so it raises nothing there.
* `snapshot()`/`restore()` save and load all state (watermark, requests in flight, dedup keys, aggregate
  groups) as versioned msgpack; the same events give the same alerts with or without a restore in between.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from typing import Any

import msgspec

from kube_audit_shipper.errors import MalformedEventError
from kube_audit_shipper.model import Alert, AlertWindow
from kube_audit_shipper.process.detect.candidates import Candidates, Entry, event_features
from kube_audit_shipper.process.detect.compiled import CompiledRule, compile_exceptions
from kube_audit_shipper.process.detect.conditions import FEATURES
from kube_audit_shipper.process.detect.context import Env, EventContext
from kube_audit_shipper.process.detect.eventtime import format_time
from kube_audit_shipper.process.detect.spec import Exceptions, RuleSpec
from kube_audit_shipper.process.detect.state import STATE_VERSION, EngineState
from kube_audit_shipper.process.policy.event import decode_event

NO_ALERTS: list[Alert] = []
NO_EXCEPTIONS = Exceptions()
#: event-time seconds between sweeps of expired dedup keys and aggregate groups (memory only, never an outcome)
SWEEP_S = 60.0
_INDEX_CACHE_MAX = 4096
_clock = time.perf_counter
_BOUND_TESTS = {"gt": float.__gt__, "ge": float.__ge__, "lt": float.__lt__, "le": float.__le__}


class DetectStats:
    """Counters for export (monotonic; per rule where it says so)."""

    def __init__(self) -> None:
        self.events = 0  # events evaluated
        self.skipped_stage = 0  # RequestReceived events, not evaluated
        self.undecodable = 0  # lines `evaluate_line` could not decode
        self.eval_seconds = 0.0  # time spent in `evaluate`
        self.alerts: Counter[str] = Counter()  # per rule
        self.suppressed: Counter[str] = Counter()  # per rule: matches inside a dedup period
        self.errors: Counter[str] = Counter()  # per rule: exceptions contained
        self.late: Counter[str] = Counter()  # per aggregate rule: events older than the window
        self.overflow: Counter[str] = Counter()  # "requests", "dedup", "groups:<rule>", "distinct:<rule>"


class DetectionEngine:
    """Evaluates the enabled rules on decoded events (`kube_audit_shipper.process.policy.event.RecordedEvent`)."""

    def __init__(
        self,
        specs: list[RuleSpec],
        *,
        env: Env | None = None,
        global_exceptions: Exceptions = NO_EXCEPTIONS,
        max_tracked_requests: int = 100_000,
        max_dedup_keys: int = 100_000,
        max_groups_per_rule: int = 10_000,
        max_distinct_values: int = 10_000,
    ) -> None:
        self.env = env or Env()
        self.rules = [
            CompiledRule(spec, slot, max_groups=max_groups_per_rule, max_distinct=max_distinct_values) for slot, spec in enumerate(specs) if spec.enabled
        ]
        for slot, rule in enumerate(self.rules):
            rule.slot = slot
        self.by_id = {rule.id: rule for rule in self.rules}
        self._global = compile_exceptions(global_exceptions)
        #: (verb, resource, subresource) → (match test, rule) of each candidate rule, in rule order
        self._index: dict[tuple[str, str, str], Entry] = {}
        #: which features some rule pins (the others are not computed)
        self._features_used = tuple(any(rule.guards[i] is not None for rule in self.rules) for i in range(len(FEATURES)))
        self.max_tracked_requests = max_tracked_requests
        self.max_dedup_keys = max_dedup_keys
        self.stats = DetectStats()
        self._reset()

    def _reset(self) -> None:
        self.watermark: float | None = None
        self._next_sweep = float("-inf")
        self._inflight: dict[str, set[int]] = {}
        self._dedup: dict[tuple[int, str], float] = {}
        for rule in self.rules:
            if rule.counter is not None:
                rule.counter.groups = {}

    # ---- evaluation ------------------------------------------------------------------------------------------
    def evaluate_line(self, line: bytes) -> list[Alert]:
        """Decode one audit log line and evaluate it; a line that is not an event is counted and skipped."""
        try:
            event = decode_event(line)
        except MalformedEventError:
            self.stats.undecodable += 1
            return NO_ALERTS
        return self.evaluate(event)

    def evaluate(self, event: Any) -> list[Alert]:
        """The alerts one event raises (most events: none)."""
        started = _clock()
        stats = self.stats
        view = event.view
        stage = view.stage
        if stage == "RequestReceived":
            stats.skipped_stage += 1
            return NO_ALERTS
        stats.events += 1
        ref = view.objectRef
        key = (view.verb or "", ref.resource or "", ref.subresource or "") if ref else (view.verb or "", "", "")
        entry = self._index.get(key)
        if entry is None:
            entry = self._entry(key)
        candidates = entry.all
        if not candidates:
            stats.eval_seconds += _clock() - started
            return NO_ALERTS
        ctx = EventContext(event, self.env)
        if entry.guarded:
            features = event_features(ctx, self._features_used)
            if features is not None:
                found = entry.by_features.get(features)
                candidates = found if found is not None else entry.only(features)
                if not candidates:
                    stats.eval_seconds += _clock() - started
                    return NO_ALERTS
        audit_id = view.auditID or ""
        final = stage != "ResponseStarted"
        done = None
        if audit_id and self._inflight:
            done = self._inflight.pop(audit_id, None) if final else self._inflight.get(audit_id)
        alerts: list[Alert] | None = None
        consumed: list[int] | None = None
        excluded_globally = self._global
        for match, rule in candidates:
            try:
                if not match(ctx) or (done is not None and rule.slot in done):
                    continue
                if (rule.excluded is not None and rule.excluded(ctx)) or (excluded_globally is not None and excluded_globally(ctx)):
                    continue
                alert = self._count(rule, ctx, audit_id) if rule.counter is not None else self._raise(rule, ctx, audit_id)
            except Exception:  # noqa: BLE001  # one rule's trouble with one event is contained and counted
                stats.errors[rule.id] += 1
                continue
            if consumed is None:
                consumed = []
            consumed.append(rule.slot)
            if alert is not None:
                stats.alerts[rule.id] += 1
                if alerts is None:
                    alerts = []
                alerts.append(alert)
        if consumed is not None and audit_id and not final:
            self._remember(audit_id, consumed, done)
        stats.eval_seconds += _clock() - started
        return alerts if alerts is not None else NO_ALERTS

    def _candidates(self, key: tuple[str, str, str]) -> Candidates:
        return self._entry(key).all

    def _entry(self, key: tuple[str, str, str]) -> Entry:
        entry = Entry(tuple((rule.match, rule) for rule in self.rules if rule.candidate_for(*key)))
        if len(self._index) >= _INDEX_CACHE_MAX:
            self._index.clear()
        self._index[key] = entry
        return entry

    def _remember(self, audit_id: str, consumed: list[int], done: set[int] | None) -> None:
        if done is not None:
            done.update(consumed)
            return
        inflight = self._inflight
        if len(inflight) >= self.max_tracked_requests:
            del inflight[next(iter(inflight))]
            self.stats.overflow["requests"] += 1
        inflight[audit_id] = set(consumed)

    def _now(self, time_s: float | None) -> float:
        """Advance the watermark with an event time; the watermark (or the time, or 0 when there is none)."""
        watermark = self.watermark
        if time_s is not None and (watermark is None or time_s > watermark):
            watermark = self.watermark = time_s
            if watermark >= self._next_sweep:
                self._sweep(watermark)
        if watermark is None:
            return 0.0
        return watermark

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + SWEEP_S
        self._forget_expired_dedup(now)
        for rule in self.rules:
            if rule.counter is not None:
                rule.counter.sweep(now)

    def _forget_expired_dedup(self, now: float) -> None:
        expired = [key for key, until in self._dedup.items() if until <= now]
        for key in expired:
            del self._dedup[key]

    def _make_dedup_room(self, now: float) -> None:
        """Expired keys first (they change nothing), then the oldest live key (counted)."""
        self._forget_expired_dedup(now)
        while len(self._dedup) >= self.max_dedup_keys:
            del self._dedup[next(iter(self._dedup))]
            self.stats.overflow["dedup"] += 1

    def _raise(self, rule: CompiledRule, ctx: EventContext, audit_id: str) -> Alert | None:
        time_s = ctx.event_time()
        now = self._now(time_s)
        group = None
        if rule.dedup_by:
            group = rule.key(rule.dedup_by, ctx)
            if group is not None:
                dedup_key = (rule.slot, group)
                until = self._dedup.pop(dedup_key, None)
                if until is not None and until > now:
                    self._dedup[dedup_key] = until
                    self.stats.suppressed[rule.id] += 1
                    return None
                if len(self._dedup) >= self.max_dedup_keys:
                    self._make_dedup_room(now)
                self._dedup[dedup_key] = now + rule.dedup_s
        fields = rule.output_fields(ctx)
        self._add_intel(ctx, fields)
        spec = rule.spec
        return Alert(
            rule=rule.id,
            severity=spec.severity,
            time=format_time(now if time_s is None else time_s),
            summary=rule.summary(fields),
            audit_ids=[audit_id] if audit_id else [],
            fields=fields,
            tags=rule.tags,
            id=f"{rule.id}:{audit_id or _fingerprint(ctx)}",
            group=_display(group),
        )

    def _count(self, rule: CompiledRule, ctx: EventContext, audit_id: str) -> Alert | None:
        counter = rule.counter
        assert counter is not None
        key = rule.key(rule.group_by, ctx)
        if key is None:
            return None
        time_s = ctx.event_time()
        now = self._now(time_s)
        tallies = [test(ctx) for test in rule.tallies]
        values = [rule.key(getters, ctx) for getters in rule.distinct]
        late_before, overflow_before, distinct_before = counter.late, counter.overflow, counter.distinct_overflow
        group = counter.add(key, time_s, now, tallies, values, audit_id)
        if counter.late != late_before:
            self.stats.late[rule.id] += 1
        if counter.overflow != overflow_before:
            self.stats.overflow[f"groups:{rule.id}"] += counter.overflow - overflow_before
        if counter.distinct_overflow != distinct_before:
            self.stats.overflow[f"distinct:{rule.id}"] += counter.distinct_overflow - distinct_before
        if group is None or group.quiet_until > now:
            return None
        metrics = counter.metrics(group, now)
        for name, bounds in counter.spec.threshold:
            value = float(metrics[name])
            if not all(_BOUND_TESTS[op](value, bound) for op, bound in bounds):
                return None
        group.quiet_until = now + counter.dedup_s
        fields = rule.output_fields(ctx, metrics)
        self._add_intel(ctx, fields)
        start = format_time(counter.window_start_s(group, now))
        shown = _display(key)
        return Alert(
            rule=rule.id,
            severity=rule.spec.severity,
            time=format_time(now if time_s is None else time_s),
            summary=rule.summary(fields),
            audit_ids=counter.recent_ids(group, now),
            fields=fields,
            tags=rule.tags,
            id=f"{rule.id}:{shown}:{start}",
            group=shown,
            count=metrics["count"],
            window=AlertWindow(start=start, end=format_time(now), seconds=counter.window_s),
        )

    def _add_intel(self, ctx: EventContext, fields: dict[str, Any]) -> None:
        intel = self.env.intel
        if intel is None or not ctx.view.sourceIPs:
            return
        address = ctx.view.sourceIPs[0]
        if self.env.is_public(address) is not True:
            return
        if intel.geo_enabled:
            geo = intel.geo_of(address)
            if geo:
                fields["source_geo"] = dict(geo)
        if intel.risky_enabled:
            lists = intel.risky_of(address)
            fields["source_risky"] = bool(lists)
            if lists:
                fields["source_risky_lists"] = list(lists)

    # ---- state -----------------------------------------------------------------------------------------------
    def snapshot(self) -> bytes:
        """All window, dedup and in-flight state, versioned (msgpack)."""
        ids = [rule.id for rule in self.rules]
        state = EngineState(
            version=STATE_VERSION,
            watermark=self.watermark,
            inflight=[(audit_id, sorted(ids[slot] for slot in slots)) for audit_id, slots in self._inflight.items()],
            dedup=[(ids[slot], key, until) for (slot, key), until in self._dedup.items()],
            aggregates=[(rule.id, rule.signature, rule.counter.save()) for rule in self.rules if rule.counter is not None],
        )
        return msgspec.msgpack.encode(state)

    def restore(self, data: bytes) -> list[str]:
        """Load a snapshot; returns notes on state that no longer fits the rules (dropped). Raises ValueError when
        `data` is not a snapshot of a version this engine reads (the engine is then left empty)."""
        self._reset()
        try:
            state = msgspec.msgpack.decode(data, type=EngineState)
        except msgspec.DecodeError as exc:
            raise ValueError(f"not a detection state snapshot: {exc}") from exc
        if state.version != STATE_VERSION:
            raise ValueError(f"detection state version {state.version} is not {STATE_VERSION}")
        notes: list[str] = []
        slots = {rule.id: rule.slot for rule in self.rules}
        self.watermark = state.watermark
        for audit_id, rule_ids in state.inflight:
            known = {slots[rule_id] for rule_id in rule_ids if rule_id in slots}
            if known:
                self._inflight[audit_id] = known
        for rule_id, key, until in state.dedup:
            if rule_id in slots:
                self._dedup[(slots[rule_id], key)] = until
        for rule_id, signature, groups in state.aggregates:
            rule = self.by_id.get(rule_id)
            if rule is None or rule.counter is None:
                notes.append(f"{rule_id}: no such aggregate rule now; its saved groups are dropped")
            elif rule.signature != signature:
                notes.append(f"{rule_id}: its aggregate changed (group_by, window, tallies or distinct); saved groups dropped")
            else:
                try:
                    rule.counter.load(groups)
                except ValueError as exc:
                    notes.append(f"{rule_id}: {exc}; saved groups dropped")
        if self.watermark is not None:
            self._next_sweep = self.watermark + SWEEP_S
        return notes


def _display(key: str | None) -> str | None:
    return None if key is None else key.replace("\x1f", " / ").replace("\x1e", ",")


def _fingerprint(ctx: EventContext) -> str:
    """A stable id for an event without an auditID (fixtures, odd sources)."""
    return hashlib.blake2b(msgspec.json.encode(ctx.view), digest_size=8).hexdigest()
