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
import weakref
from typing import Dict, List, Optional, Tuple

from .config import GLOB_FIELDS, HOSTNAME, Condition, Rule
from .events import Record, find_fields

UNSET_IDS = ("4294967295", "-1")  # an auid never set ((unsigned) -1): auparse says "unset"
SUCCESS = {"yes": "yes", "no": "no", "success": "yes", "failed": "no", "1": "yes", "0": "no"}
# The audit fields each condition field is read from.
AUDIT_FIELDS = {"success": ("success", "res"), "path": ("name", "cwd")}
EVERY_FIELD = ("name",)  # read in every record (each PATH); of the others, the first one
PLAIN_FIELDS = ("success", "res", "tty", "node")  # auparse shows them as they are
_RULE_FIELDS = weakref.WeakKeyDictionary()  # type: weakref.WeakKeyDictionary  # rule -> audit fields


def audit_fields(rules: List[Rule]) -> List[str]:
    """The audit fields that the rules' conditions need read from an event (worked out once
    per rule: a reload makes new rules)."""
    if len(rules) != 1:
        return _audit_fields(rules)
    names = _RULE_FIELDS.get(rules[0])
    if names is None:
        names = _RULE_FIELDS[rules[0]] = _audit_fields(rules)
    return names


def _audit_fields(rules: List[Rule]) -> List[str]:
    names = []  # type: List[str]
    for rule in rules:
        for condition in ([rule.match] if rule.match is not None else []) + rule.ignore:
            for field, _values in condition.fields:
                names += [n for n in AUDIT_FIELDS.get(field, (field,)) if n not in names]
    return names


def read_values(au, rules: List[Rule], node: bool = False) -> Dict[str, List[str]]:
    """The values of the event auparse holds that the rules' conditions name (and node when
    asked, for --print's account): only those fields are read; res only where success is
    missing (a field an event lacks costs a search through all its records)."""
    names = [n for n in audit_fields(rules) if n != "res"]
    found = find_fields(au, names + (["node"] if node and "node" not in names else []), EVERY_FIELD,
                        PLAIN_FIELDS)
    if "success" in names and not found["success"]:
        found.update(find_fields(au, ["res"], (), PLAIN_FIELDS))
    return event_values(found)


def record_values(records: List[Record], rules: List[Rule]) -> Dict[str, List[str]]:
    """The same from records already read (the tamper rule's: TamperWatch reads them all)."""
    return event_values(record_fields(records, audit_fields(rules) + ["node"]))


def record_fields(records: List[Record], names: List[str]) -> Dict[str, List[Tuple[str, str, str]]]:
    """What events.find_fields reads from auparse, from records already read (tamper)."""
    return {name: [(r.type, r.raw[name], r.shown.get(name, "")) for r in records if name in r.raw]
            for name in names}


def event_values(found: Dict[str, List[Tuple[str, str, str]]]) -> Dict[str, List[str]]:
    """Each condition field's values in this event, from the audit fields found (record
    type, raw, interpreted; events.find_fields): as auparse interprets them (names for ids,
    text for hex) and, where that differs, the raw number. A subject field is the SYSCALL
    record's (the first record of a kernel event), else the first record's that has it (a
    user-space event has one record)."""
    values = {}  # type: Dict[str, List[str]]
    for name, occurrences in found.items():
        if not occurrences or name in ("success", "res", "name", "cwd", "node"):
            continue
        _type, raw, shown = next((o for o in occurrences if o[0] == "SYSCALL"), occurrences[0])
        values[name] = [shown] if shown else []
        if raw and raw != shown and raw.isdigit():
            values[name].append(raw)
        if name == "auid" and raw in UNSET_IDS and "unset" not in values[name]:
            values[name].append("unset")
    result = (found.get("success") or found.get("res") or [None])[0]
    if result is not None:
        values["success"] = [SUCCESS.get(result[1].strip("'\""), result[1])]
    values["node"] = [(found.get("node") or [("", HOSTNAME, "")])[0][1] or HOSTNAME]
    cwd = next((shown for kind, _raw, shown in found.get("cwd", []) if kind == "CWD"), "")
    paths = []  # type: List[str]
    for kind, _raw, name in found.get("name", []):
        if kind == "PATH" and name and name != "(null)":
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
