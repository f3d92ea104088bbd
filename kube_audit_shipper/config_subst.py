"""`${VAR}`, `${VAR:-default}` and `${file:/path}` substitution in config string values.

Substitution runs on the parsed YAML (string scalars only, never keys), so a secret containing YAML
syntax cannot change the document's structure. `$${` is a literal `${`. Substituted values stay
strings; the typed conversion accepts a numeric or boolean string for an int, float or bool key, so
`rotate_bytes: ${ROTATE}` works while `file_prefix: ${PREFIX}` with PREFIX=2026 stays the string "2026".
`${file:...}` strips one trailing newline (secrets mounted from Kubernetes Secrets usually have none,
files written by `echo` have one). Every unresolved placeholder is reported with its key path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

_PLACEHOLDER = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def substitute(data: Any, env: Mapping[str, str] | None = None, path: str = "") -> tuple[Any, list[str]]:
    """Return (data with placeholders resolved, errors)."""
    errors: list[str] = []
    out = _walk(data, os.environ if env is None else env, path, errors)
    return out, errors


def _walk(node: Any, env: Mapping[str, str], path: str, errors: list[str]) -> Any:
    if isinstance(node, dict):
        return {k: _walk(v, env, f"{path}.{k}" if path else str(k), errors) for k, v in node.items()}
    if isinstance(node, list):
        return [_walk(v, env, f"{path}[{i}]", errors) for i, v in enumerate(node)]
    if isinstance(node, str) and "${" in node:
        return _string(node, env, path, errors)
    return node


def _resolve(expr: str, env: Mapping[str, str], path: str, errors: list[str]) -> str | None:
    if expr.startswith("file:"):
        fname = expr[5:]
        try:
            with open(fname, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            errors.append(f"{path}: cannot read ${{file:{fname}}}: {exc.strerror or exc}")
            return None
        return text[:-1] if text.endswith("\n") else text
    name, sep, default = expr.partition(":-")
    if not _NAME.match(name):
        errors.append(f"{path}: bad placeholder ${{{expr}}}: expected ${{VAR}}, ${{VAR:-default}} or ${{file:/path}}")
        return None
    value = env.get(name)
    if value is None or (sep and value == ""):
        if sep:
            return default
        errors.append(f"{path}: environment variable {name} is not set (used as ${{{name}}})")
        return None
    return value


def _string(text: str, env: Mapping[str, str], path: str, errors: list[str]) -> Any:
    whole = _PLACEHOLDER.fullmatch(text)
    if whole and whole.group(1) is not None:
        value = _resolve(whole.group(1), env, path, errors)
        return text if value is None else value

    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$${":
            return "${"
        value = _resolve(m.group(1), env, path, errors)
        return m.group(0) if value is None else value

    return _PLACEHOLDER.sub(repl, text)
