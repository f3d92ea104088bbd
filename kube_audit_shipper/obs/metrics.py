"""Every metric the agent exports, on a registry of its own (no global state).

Counters that change per event are kept as plain integers by the component that owns them (the line
processor, the tailer, the sink runners) and read at scrape time by `_StateCollector`, so the hot
path never takes a metrics lock. Per-batch observations (send latency) use prometheus_client types.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

P = "kube_audit_shipper_"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


@dataclass(slots=True)
class Snapshot:
    """The pipeline's state at scrape time, as the metrics and `status` show it. Filled by the pipeline
    (app/pipeline.py) from the components that own each number; per-event counters are plain integers
    there, so the hot path never takes a metrics lock."""

    events_read: int = 0
    bytes_read: int = 0
    dropped: dict[tuple[str, str], int] = field(default_factory=dict)  # (reason, policy rule) -> events
    deadlettered: dict[str, int] = field(default_factory=dict)  # reason -> input lines
    shipped: dict[str, tuple[int, int]] = field(default_factory=dict)  # sink or alert target -> (records, bytes)
    bytes_behind: dict[str, int] = field(default_factory=dict)  # path -> bytes
    checkpoint_writes: int = 0
    truncations: int = 0
    read_errors: dict[str, int] = field(default_factory=dict)  # reason -> inputs
    lost_files: int = 0
    lost_bytes: int = 0
    backpressure_waits: int = 0
    deadletter_evicted: int = 0
    inflight_bytes: int = 0
    memory_limit: int = 0
    files_tracked: int = 0
    files_at_risk: int = 0
    sink_state: dict[str, str] = field(default_factory=dict)
    sink_blocked_s: dict[str, float] = field(default_factory=dict)
    sink_rejected: dict[str, int] = field(default_factory=dict)
    spool_bytes: dict[str, int] = field(default_factory=dict)
    spooled_batches: dict[str, int] = field(default_factory=dict)
    spool_full_waits: dict[str, int] = field(default_factory=dict)
    sink_families: list[Callable[[], Iterable[Any]]] = field(default_factory=list)  # backends' own metric families
    checkpoint_age_s: float = 0.0
    state_write_errors: dict[str, int] = field(default_factory=dict)  # what -> failed writes
    bodies_withheld: int = 0
    alerts_raised: dict[str, int] = field(default_factory=dict)  # rule -> alerts
    alert_targets: tuple[str, ...] = ()  # which of `shipped` are alert targets
    detection_seconds: float = 0.0
    detection_errors: dict[str, int] = field(default_factory=dict)  # rule -> events a rule raised on


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.errors = Counter(P + "errors", "Errors by kind", ["kind"], registry=self.registry)
        self.sink_retries = Counter(P + "sink_retries", "Failed sends that will be retried", ["sink"], registry=self.registry)
        self.deadlettered = Counter(
            P + "sink_events_deadlettered", "Events a sink dead-lettered (rejected, too large, retries given up)", ["sink", "reason"], registry=self.registry
        )
        self.config_reloads = Counter(
            P + "config_reloads", "SIGHUP reloads by result (applied in place, restarted the pipeline, failed)", ["result"], registry=self.registry
        )
        self.batch_send_seconds = Histogram(
            P + "batch_send_seconds", "Time to encode and deliver one batch, retries included", ["sink"], buckets=_LATENCY_BUCKETS, registry=self.registry
        )
        self.delivery_latency_seconds = Histogram(
            P + "delivery_latency_seconds",
            "From reading a batch's oldest event to its acknowledgement by the sink",
            ["sink"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._collector: _StateCollector | None = None
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, process_resident_memory_bytes, ...

    def shipped(self, sink: str, events: int, nbytes: int, send_s: float, latency_s: float) -> None:
        self.batch_send_seconds.labels(sink).observe(send_s)
        self.delivery_latency_seconds.labels(sink).observe(latency_s)

    def bind(self, state: Callable[[], Snapshot]) -> None:
        """Export the live state returned by `state()` (see app.Agent.metrics_state); a pipeline
        restarted by a reload binds its own state in place of the old one."""
        if self._collector is not None:
            self.registry.unregister(self._collector)
        self._collector = _StateCollector(state)
        self.registry.register(self._collector)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    def __init__(self, state: Callable[[], Snapshot]) -> None:
        self._state = state

    def collect(self) -> Iterator[Any]:
        s = self._state()
        yield _counter("events_read", "Lines read from audit logs", s.events_read)
        yield _counter("input_bytes_read", "Bytes read from audit logs (compressed bytes for .gz files)", s.bytes_read)
        c = CounterMetricFamily(P + "events_dropped", "Events not shipped on purpose, by reason and the policy rule that decided", labels=["reason", "rule"])
        for (reason, rule), n in sorted(s.dropped.items()):
            c.add_metric([reason, rule], n)
        yield c
        c = CounterMetricFamily(P + "events_deadlettered", "Input lines stored as dead letters instead of shipped", labels=["reason"])
        for reason, n in sorted(s.deadlettered.items()):
            c.add_metric([reason], n)
        yield c
        shipped = CounterMetricFamily(P + "events_shipped", "Events acknowledged by a sink", labels=["sink"])
        nbytes = CounterMetricFamily(P + "bytes_shipped", "Uncompressed event bytes acknowledged by a sink", labels=["sink"])
        for sink, (events, b) in sorted(s.shipped.items()):
            shipped.add_metric([sink], events)
            nbytes.add_metric([sink], b)
        yield shipped
        yield nbytes
        g = GaugeMetricFamily(P + "file_bytes_behind", "Bytes of a file not yet acknowledged by every sink", labels=["path"])
        for path, n in sorted(s.bytes_behind.items()):
            g.add_metric([path], n)
        yield g
        yield _counter("checkpoint_writes", "Checkpoint file writes", s.checkpoint_writes)
        yield _counter("source_truncations", "Files found truncated (copytruncate) and read again from 0", s.truncations)
        yield _counter("source_lost_files", "Input files deleted before they were read to their end (logged as errors)", s.lost_files)
        yield _counter("source_lost_bytes", "Unread bytes of those files (0 counted for a gzip file, whose size is not known)", s.lost_bytes)
        c = CounterMetricFamily(P + "source_read_errors", "Inputs that became unreadable (or were corrupt), by reason", labels=["reason"])
        for reason in sorted({"permission_denied", "io_error", "corrupt", "other", *s.read_errors}):
            c.add_metric([reason], s.read_errors.get(reason, 0))
        yield c
        c = CounterMetricFamily(P + "state_write_errors", "Writes under state_dir that failed (kept and retried), by what was written", labels=["what"])
        for what in ("checkpoint", "deadletter", "spool"):  # always exported, so an alert can use rate() from the first failure
            c.add_metric([what], s.state_write_errors.get(what, 0))
        yield c
        yield _counter("reader_backpressure_waits", "Times the reader waited for memory to be freed by acknowledgements", s.backpressure_waits)
        yield _counter("deadletter_evicted_records", "Dead-letter records removed to keep the store under max_bytes", s.deadletter_evicted)
        yield GaugeMetricFamily(P + "memory_inflight_bytes", "Bytes of events read and not yet acknowledged by every sink", value=s.inflight_bytes)
        yield GaugeMetricFamily(P + "memory_limit_bytes", "memory_limit_bytes from the config", value=s.memory_limit)
        yield GaugeMetricFamily(P + "files_tracked", "Input files currently tracked", value=s.files_tracked)
        yield GaugeMetricFamily(
            P + "oldest_unread_file_at_risk",
            "1 when a file being read is the oldest backup on disk (the next rotation may delete it)",
            value=1 if s.files_at_risk else 0,
        )
        state = GaugeMetricFamily(P + "sink_state", "1 for the sink's current state (ok, retrying, blocked)", labels=["sink", "state"])
        blocked = GaugeMetricFamily(P + "sink_blocked_seconds", "How long the sink has been blocked (0 when not blocked)", labels=["sink"])
        rejected = CounterMetricFamily(
            P + "sink_events_rejected",
            "Events a sink dead-lettered other than by retry.max_retry_age_s: refused by the backend, unencodable, or too large",
            labels=["sink"],
        )
        for sink, current in sorted(s.sink_state.items()):
            for name in ("ok", "retrying", "blocked"):
                state.add_metric([sink, name], 1 if current == name else 0)
            blocked.add_metric([sink], s.sink_blocked_s[sink])
            rejected.add_metric([sink], s.sink_rejected[sink])
        yield state
        yield blocked
        yield rejected
        spool = GaugeMetricFamily(P + "spool_bytes", "Bytes of the sink's disk spool", labels=["sink"])
        spooled = CounterMetricFamily(P + "spool_batches", "Batches written to the sink's spool", labels=["sink"])
        full = CounterMetricFamily(P + "spool_full_waits", "Times a batch waited for room in a full spool (reader held back)", labels=["sink"])
        for sink, n in sorted(s.spool_bytes.items()):
            spool.add_metric([sink], n)
            spooled.add_metric([sink], s.spooled_batches[sink])
            full.add_metric([sink], s.spool_full_waits[sink])
        yield spool
        yield spooled
        yield full
        for families in s.sink_families:
            yield from families()
        yield GaugeMetricFamily(P + "checkpoint_age_seconds", "Seconds since the checkpoint file was last written by this process", value=s.checkpoint_age_s)
        yield _counter("bodies_withheld", "Bodies redaction replaced by a marker because it could not parse them", s.bodies_withheld)
        c = CounterMetricFamily(P + "alerts_raised", "Alerts detection raised, by rule", labels=["rule"])
        for rule, n in sorted(s.alerts_raised.items()):
            c.add_metric([rule], n)
        yield c
        c = CounterMetricFamily(P + "alerts_delivered", "Alerts an alert target acknowledged, by target", labels=["target"])
        for target in s.alert_targets:
            c.add_metric([target], s.shipped.get(target, (0, 0))[0])
        yield c
        c = CounterMetricFamily(P + "detection_rule_errors", "Events a detection rule raised on (the event still ships), by rule", labels=["rule"])
        for rule, n in sorted(s.detection_errors.items()):
            c.add_metric([rule], n)
        yield c
        yield _counter("detection_seconds", "CPU time spent evaluating detection rules", s.detection_seconds)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(P + name, doc, value=value)
