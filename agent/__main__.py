"""`python -m agent` is the `kube-audit-shipper` command."""

from agent.cli import main

raise SystemExit(main())
