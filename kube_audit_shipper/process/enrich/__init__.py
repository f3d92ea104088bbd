"""Enrichment of shipped events: static fields, node name, derived security fields, secret redaction.

`fields` (static + derived fields, the output layout), `identity` (user kind, effective user), `address`
(public/internal source IP), `timestamps` (latency), `session` (exec/attach/portforward), `redact` (masking),
`view` (what enrichment reads from an event), `config` (the `enrich:` section).
"""

from kube_audit_shipper.process.enrich.config import EnrichConfig
from kube_audit_shipper.process.enrich.fields import Enricher
from kube_audit_shipper.process.enrich.redact import Redactor

__all__ = ["EnrichConfig", "Enricher", "Redactor"]
