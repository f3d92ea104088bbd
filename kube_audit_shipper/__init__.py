"""kube-audit-shipper: tail the kube-apiserver audit log and ship every event at least once."""

__version__ = "0.1.0"
