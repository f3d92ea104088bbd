"""`python -m kube_audit_shipper` is the `kube-audit-shipper` command."""

from kube_audit_shipper.cli import main

raise SystemExit(main())
