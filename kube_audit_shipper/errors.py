"""The agent's exception tree.

AgentError                      base; `cli` maps it to an exit code
├── ConfigError                 config file invalid: carries every problem found (exit 2)
├── PolicyError                 audit Policy file invalid: carries every problem found (exit 2)
├── StateError                  state_dir unusable: missing and not creatable, read-only, locked, corrupt (exit 2)
└── MalformedEventError         one input line is not an audit event (dead-lettered, never fatal)
"""

from __future__ import annotations

# Exit codes of the command line (README "Exit codes"): what a script or systemd can tell apart.
EXIT_OK = 0
EXIT_FAILED = 1  # the agent failed (a bug, or a final checkpoint it could not write)
EXIT_INVALID = 2  # the operator must fix something first: config, policy, or a state_dir that cannot be used
EXIT_INCOMPLETE = 3  # `run --once`: stopped before everything was shipped, or an input could not be read


class AgentError(Exception):
    """Base of every error the agent raises on purpose."""


class _ProblemListError(AgentError):
    """An error that carries a list of human-readable problems, each naming where it is."""

    what = "problems"

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        super().__init__(f"{len(self.problems)} {self.what}{where}:\n" + "\n".join(f"  {p}" for p in self.problems))


class ConfigError(_ProblemListError):
    """The configuration is invalid; `problems` lists every error with its key path."""

    what = "config error(s)"


class PolicyError(_ProblemListError):
    """The audit Policy is invalid; `problems` lists every error with its rule index."""

    what = "policy error(s)"


class StateError(AgentError):
    """The state directory cannot be used."""


class MalformedEventError(AgentError):
    """A line that is not a valid audit event (bad UTF-8, bad JSON, not an object)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)
