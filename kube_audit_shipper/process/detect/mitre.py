"""MITRE ATT&CK tags: technique ids (`T1609`, `T1552.007`) and tactic names (`execution`), checked when loaded.

A malformed entry is an error. A well-formed one that is not in the ATT&CK for Containers matrix (or not a
known tactic) is only a warning in `rules lint`: ATT&CK adds techniques and renames tactics between versions,
and a rule may rightly cite an Enterprise technique.
"""

from __future__ import annotations

import re

TECHNIQUE = re.compile(r"T\d{4}(?:\.\d{3})?")
TACTIC = re.compile(r"[a-z]+(?:-[a-z]+)*")

TACTICS = frozenset(
    {
        "reconnaissance",
        "resource-development",
        "initial-access",
        "execution",
        "persistence",
        "privilege-escalation",
        "defense-evasion",
        "stealth",
        "defense-impairment",
        "credential-access",
        "discovery",
        "lateral-movement",
        "collection",
        "command-and-control",
        "exfiltration",
        "impact",
    }
)

#: Techniques of the ATT&CK for Containers matrix (and their sub-techniques), by id.
CONTAINER_TECHNIQUES = {
    "T1190": "Exploit Public-Facing Application",
    "T1133": "External Remote Services",
    "T1078": "Valid Accounts",
    "T1078.001": "Valid Accounts: Default Accounts",
    "T1078.003": "Valid Accounts: Local Accounts",
    "T1609": "Container Administration Command",
    "T1610": "Deploy Container",
    "T1053": "Scheduled Task/Job",
    "T1053.007": "Scheduled Task/Job: Container Orchestration Job",
    "T1204": "User Execution",
    "T1204.003": "User Execution: Malicious Image",
    "T1098": "Account Manipulation",
    "T1098.006": "Account Manipulation: Additional Container Cluster Roles",
    "T1543": "Create or Modify System Process",
    "T1543.005": "Create or Modify System Process: Container Service",
    "T1525": "Implant Internal Image",
    "T1611": "Escape to Host",
    "T1068": "Exploitation for Privilege Escalation",
    "T1612": "Build Image on Host",
    "T1562": "Impair Defenses",
    "T1562.001": "Impair Defenses: Disable or Modify Tools",
    "T1070": "Indicator Removal",
    "T1036": "Masquerading",
    "T1036.005": "Masquerading: Match Legitimate Name or Location",
    "T1550": "Use Alternate Authentication Material",
    "T1550.001": "Use Alternate Authentication Material: Application Access Token",
    "T1110": "Brute Force",
    "T1110.001": "Brute Force: Password Guessing",
    "T1110.003": "Brute Force: Password Spraying",
    "T1110.004": "Brute Force: Credential Stuffing",
    "T1528": "Steal Application Access Token",
    "T1552": "Unsecured Credentials",
    "T1552.001": "Unsecured Credentials: Credentials In Files",
    "T1552.007": "Unsecured Credentials: Container API",
    "T1613": "Container and Resource Discovery",
    "T1046": "Network Service Discovery",
    "T1069": "Permission Groups Discovery",
    "T1485": "Data Destruction",
    "T1499": "Endpoint Denial of Service",
    "T1490": "Inhibit System Recovery",
    "T1498": "Network Denial of Service",
    "T1496": "Resource Hijacking",
}


def tag_problem(tag: object) -> str | None:
    """Why `tag` is not a technique id or a tactic name (an error), or None."""
    if not isinstance(tag, str):
        return f"expected a technique id (T1609) or a tactic name (execution), got {tag!r}"
    if TECHNIQUE.fullmatch(tag) or TACTIC.fullmatch(tag):
        return None
    return f"{tag!r} is neither a technique id (T1609, T1552.007) nor a tactic name (lowercase words joined by '-')"


def tag_warning(tag: str) -> str | None:
    """A note for a well-formed tag ATT&CK for Containers does not list."""
    if TECHNIQUE.fullmatch(tag):
        if tag not in CONTAINER_TECHNIQUES:
            return f"{tag} is not a technique of the ATT&CK for Containers matrix"
        return None
    if tag not in TACTICS:
        return f"{tag!r} is not a known ATT&CK tactic"
    return None
