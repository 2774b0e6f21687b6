"""Rule conditions (issue #24): whether an event whose key matched a rule is mailed, by who
did it and how (docs/plugin.md, "Conditions"). A rule's `match` must fit the event, and no
`ignore` entry may; a condition fits when every field of it does, and a field fits when
the event's value is one of the condition's (shell-style globs for exe, comm and path).
The event's values are the fields the plugin already reads with auparse (events.Record),
names for ids as auparse interprets them; nothing here reads the system."""

# Python 3.6 (RHEL 8) has no list[str] or X | None in annotations: keep typing's names.
# ruff: noqa: UP006, UP035, UP045

import fnmatch
import posixpath
from typing import Dict, List, Optional

from .config import GLOB_FIELDS, HOSTNAME, Condition, Rule
from .events import Record

# Where an event's subject is told: the kernel's SYSCALL record, else the first record
# that has the field (a user-space event, USER_* or a daemon's record, has one record).
SUBJECT_FIELDS = ("auid", "uid", "euid", "gid", "exe", "comm", "syscall", "tty")
UNSET_IDS = ("4294967295", "-1")  # an auid never set ((unsigned) -1): auparse says "unset"
SUCCESS = {"yes": "yes", "no": "no", "success": "yes", "failed": "no", "1": "yes", "0": "no"}


def event_values(records: List[Record]) -> Dict[str, List[str]]:
    """Each condition field's values in this event: as auparse interprets them (names for
    ids, text for hex) and, where that differs, the raw value (an id as a number)."""
    values = {}  # type: Dict[str, List[str]]
    ordered = [r for r in records if r.type == "SYSCALL"] + [r for r in records if r.type != "SYSCALL"]
    for name in SUBJECT_FIELDS:
        source = next((r for r in ordered if name in r.raw), None)
        if source is None:
            continue
        raw, shown = source.raw[name], source.shown.get(name, "")
        found = [shown] if shown else []
        if raw and raw != shown and raw.isdigit():
            found.append(raw)
        if name == "auid" and raw in UNSET_IDS and "unset" not in found:
            found.append("unset")
        values[name] = found
    result = next((r.raw.get(name) for r in ordered for name in ("success", "res") if name in r.raw), None)
    if result is not None:
        values["success"] = [SUCCESS.get(result.strip("'\""), result)]
    values["node"] = [next((r.raw["node"] for r in records if "node" in r.raw), HOSTNAME)]
    cwd = next((r.shown.get("cwd", "") for r in records if r.type == "CWD"), "")
    paths = []  # type: List[str]
    for record in records:
        name = record.shown.get("name", "") if record.type == "PATH" else ""
        if name and name != "(null)":
            paths.append(name)
            if not name.startswith("/") and cwd.startswith("/"):  # relative to the process's cwd
                paths.append(posixpath.normpath(posixpath.join(cwd, name)))
    values["path"] = paths
    return values


def _field_fits(name: str, wanted: List[str], found: List[str]) -> bool:
    if name in GLOB_FIELDS:
        return any(fnmatch.fnmatchcase(value, pattern) for pattern in wanted for value in found)
    return any(value in wanted for value in found)


def misfit(condition: Condition, values: Dict[str, List[str]]) -> Optional[str]:
    """The first field of the condition that the event does not fit, or None: it fits."""
    for name, wanted in condition.fields:
        if not _field_fits(name, wanted, values.get(name, [])):
            return name
    return None


def _shown(values: Dict[str, List[str]], name: str) -> str:
    return ", ".join(values.get(name, [])) or "(none)"


def left_out(rule: Rule, values: Dict[str, List[str]]) -> Optional[str]:
    """Why the rule does not mail this event (the condition that leaves it out), or None."""
    if rule.match is not None:
        field = misfit(rule.match, values)
        if field is not None:
            return f"match {rule.match.text}: {field} is {_shown(values, field)}"
    for index, condition in enumerate(rule.ignore):
        if misfit(condition, values) is None:
            return f"ignore[{index}] {condition.text}"
    return None


def has_conditions(rule: Rule) -> bool:
    return rule.match is not None or bool(rule.ignore)
