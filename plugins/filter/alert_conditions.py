# Copyright (c) audit mail alert developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The role's checks of rule conditions (match, ignore; issue #24), on the controller before
anything on a host changes: the same refusals as the plugin's config (files/mailalert/config.py,
Section.condition), each naming the variable, the rule and the field."""

import json

FIELDS = ("auid", "uid", "euid", "gid", "exe", "comm", "syscall", "success", "tty", "node", "path")
GLOB_FIELDS = ("exe", "comm", "path")
GLOB_CHARS = "*?["
USER_FIELDS = ("auid", "uid", "euid")
VALUE_MAX = 4096


def _values(given):
    return given if isinstance(given, list) else [given]


def _condition_errors(where, condition):
    if not isinstance(condition, dict) or not condition:
        return [f"{where} must be a mapping of fields (e.g. {{auid: unset}}), got {json.dumps(condition, default=str)}"]
    errors = []
    for name, given in condition.items():
        if name not in FIELDS:
            errors.append("{}: unknown field {} (fields: {})".format(where, json.dumps(name, default=str),
                                                                     ", ".join(FIELDS)))
            continue
        if _values(given) == []:
            errors.append(f"{where}.{name}: an empty list fits no event")
        for value in _values(given):
            if name == "success" and value not in ("yes", "no"):
                errors.append(f'{where}.success must be "yes" or "no" (quoted: YAML reads a bare no as '
                              f"false), got {json.dumps(value, default=str)}")
            elif not isinstance(value, str) or not value or len(value) > VALUE_MAX:
                errors.append(f"{where}.{name}: a value is a string of 1-{VALUE_MAX} characters (or a list of them), "
                              f"got {json.dumps(value, default=str)}")
            elif name not in GLOB_FIELDS and any(c in value for c in GLOB_CHARS):
                errors.append("{}.{} takes no glob (only {} do), got {}".format(
                    where, name, ", ".join(GLOB_FIELDS), json.dumps(value)))
    return errors


def _rule_conditions(rules, tamper_ignore):
    """(where, condition) of every match and ignore entry, and the errors of their shape."""
    found, errors = [], []
    for index, rule in enumerate(rules or []):
        if not isinstance(rule, dict):
            continue
        where = "audit_mail_alert_rules[{}] (key {})".format(index, json.dumps(rule.get("key"), default=str))
        if rule.get("match") is not None:
            found.append((where + " match", rule["match"]))
        ignore = rule.get("ignore")
        if ignore is not None and not isinstance(ignore, list):
            errors.append(f"{where} ignore must be a list of mappings, got {json.dumps(ignore, default=str)}")
        else:
            found += [(f"{where} ignore[{n}]", c) for n, c in enumerate(ignore or [])]
    if not isinstance(tamper_ignore, list):
        errors.append(f"audit_mail_alert_tamper_ignore must be a list of mappings, got {json.dumps(tamper_ignore, default=str)}")
    else:
        found += [(f"audit_mail_alert_tamper_ignore[{n}]", c) for n, c in enumerate(tamper_ignore)]
    return found, errors


def condition_errors(rules, tamper_ignore=None):
    found, errors = _rule_conditions(rules, tamper_ignore if tamper_ignore is not None else [])
    for where, condition in found:
        errors += _condition_errors(where, condition)
    return errors


def condition_names(rules, tamper_ignore=None):
    """The user and group names the conditions use, each with where: {users: {NAME: WHERE},
    groups: {...}}; numbers and auid's unset need no name on the host."""
    found, _errors = _rule_conditions(rules, tamper_ignore if tamper_ignore is not None else [])
    names = {"users": {}, "groups": {}}
    for where, condition in found:
        if not isinstance(condition, dict):
            continue
        for name, given in condition.items():
            kind = "users" if name in USER_FIELDS else "groups" if name == "gid" else None
            for value in _values(given) if kind else []:
                if isinstance(value, str) and value and not value.isdigit() and \
                        not (name == "auid" and value == "unset"):
                    names[kind].setdefault(value, f"{where}.{name}")
    return names


class FilterModule:
    def filters(self):
        return {"condition_errors": condition_errors, "condition_names": condition_names}
