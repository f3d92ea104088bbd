"""`kube-audit-shipper report`: one offline HTML page of what recorded audit logs say (ACK's audit reports, anywhere).

Aggregation (one streaming pass, bounded memory): `inputs` (plain/gzip/zstd lines) → `event` (the few fields,
decoded once; bad lines classified) → `request` (who, from where, when) → `aggregate` feeding `overview`,
`resources`, `who`, `volume`, plus `coverage` (a Policy's per-rule figures) and the seams to detection
(`detection`, `intel`); `tables` and `timeline` bound every table and trend; `window` is `--since/--until`.
Rendering: `render` assembles `render_overview`, `render_resources`, `render_who`, `render_cost` into
`page` (document, styles, script, CSP), with `markup` (escaping, tables) and `svg` (charts). `progress` is the
stderr progress line. The command is `kube_audit_shipper.commands.report`.
"""
