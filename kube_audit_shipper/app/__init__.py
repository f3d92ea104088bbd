"""The agent: one pipeline built from a config (pipeline.py) and the service around it (service.py).

build.py     config -> state-directory lock, detection engine, per-line transform
pipeline.py  Agent: builds, runs and stops one pipeline in data order; checkpoints; metrics state
runners.py   the delivery runners of one kind (event sinks, alert targets), and their replacement
reload.py    a reloaded config applied to a running pipeline
service.py   signals (installed once), coalesced reloads, restarts, systemd notifications
tasks.py     every background task started and watched
"""

from kube_audit_shipper.app.pipeline import Agent

__all__ = ["Agent"]
