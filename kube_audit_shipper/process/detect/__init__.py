"""Detection: rules evaluated on every audit event as recorded (before policy trimming), raising `Alert`s.

Modules: `paths` (the path syntax), `context` (one event: lazy bodies), `computed` (`@name` values),
`getters` (paths → getters), `conditions` (condition trees → closures, index values), `candidates` (the
rules an event can match: index entries filtered by event features), `spec` (a loaded rule),
`rulefile` (our YAML format, every error with its key path), `sigma` + `sigma_condition` (Sigma rules),
`template` (summaries), `mitre` (tag checks), `compiled` (a rule ready to run), `aggregate` (windows),
`engine` (evaluation, dedup, one alert per auditID, snapshot/restore, counters), `state` (the saved form),
`eventtime` (event time, never the clock), `intel` (geoip and risky lists), `config` (`detect:`), `build`
(load everything, tune, build the engine), `lint` (rules an audit Policy starves). The rule format and the
built-in rules (package data under `rules/`) are documented in docs/rules.md.
"""

from kube_audit_shipper.process.detect.build import RuleCatalog, RulesError, build_engine, load_catalog
from kube_audit_shipper.process.detect.config import DetectConfig
from kube_audit_shipper.process.detect.engine import DetectionEngine, DetectStats

__all__ = ["DetectConfig", "DetectStats", "DetectionEngine", "RuleCatalog", "RulesError", "build_engine", "load_catalog"]
