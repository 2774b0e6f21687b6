# Copyright (c) audit mail alert developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Read the state of the Linux audit system: auditctl output, ausearch records, /proc.

The functions here parse text the audit tools print; the callers run the tools
(AnsibleModule.run_command with a list), so the parsers stay testable without a host.
"""

import os
import re
import time
from typing import Dict, List, Optional

# The environment of every audit tool the modules run: ausearch --start parses dates by
# locale, and the parsers here read the C locale's words.
C_LOCALE = {"LC_ALL": "C", "LANG": "C"}
# `auditctl -s` prints "name value [words]" per line; these values are numbers.
_STATUS_INT_FIELDS = (
    "enabled", "failure", "pid", "rate_limit", "backlog_limit", "lost", "backlog",
    "backlog_wait_time", "backlog_wait_time_actual",
)
_RAW_EVENT_ID = re.compile(r"msg=audit\((\d+)\.(\d+):(\d+)\)")
_RAW_FIELD = re.compile(r"\b(type|ppid|pid|auid|uid|exe|key)=(\"[^\"]*\"|\S+)")
_CHANGE_FIELD = re.compile(r"\b(op|key|res)=(\"[^\"]*\"|\S+)")
# Keys of one rule are stored joined by \x01 in the kernel; auditctl may print either form.
_KEY_SEPARATOR = "\x01"


def parse_status(text: str) -> dict:
    """Parse `auditctl -s` into a dict; numbers become int, `loginuid_immutable` a bool."""
    status: dict = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) < 2:
            continue
        name, value = words[0], words[1]
        if name in _STATUS_INT_FIELDS:
            try:
                status[name] = int(value)
            except ValueError:
                status[name] = value
        elif name == "loginuid_immutable":
            status[name] = value == "1"
        else:
            status[name] = " ".join(words[1:])
    if "enabled" in status:
        # enabled 2 means the configuration is locked until reboot (auditctl -e 2).
        status["immutable"] = status["enabled"] == 2
    return status


def parse_version(text: str) -> Optional[str]:
    """Return the version from `auditctl -v` ("auditctl version 3.0.9")."""
    match = re.search(r"version\s+(\S+)", text)
    return match.group(1) if match else None


def parse_rules(text: str) -> List[dict]:
    """Parse `auditctl -l` into [{"rule": line, "keys": [...]}]; "No rules" gives []."""
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("-"):
            continue
        rules.append({"rule": line, "keys": rule_keys(line)})
    return rules


def rule_keys(rule: str) -> List[str]:
    """The keys of one rule line: every `-k KEY` and `-F key=KEY`, split on \\x01."""
    keys: List[str] = []
    words = rule.split()
    for index, word in enumerate(words):
        value = None
        if word == "-k" and index + 1 < len(words):
            value = words[index + 1]
        elif word == "-F" and index + 1 < len(words) and words[index + 1].startswith("key="):
            value = words[index + 1][len("key="):]
        if value:
            keys.extend(part for part in value.split(_KEY_SEPARATOR) if part)
    return keys


def deletion_argv(rule: str) -> Optional[List[str]]:
    """The auditctl arguments that delete exactly RULE, a line of `auditctl -l`: the same
    words with -a turned into -d, -w into -W. None for a line that is not such a rule."""
    words = rule.split()
    flag = {"-a": "-d", "-w": "-W"}.get(words[0] if words else "")
    return [flag, *words[1:]] if flag else None


def loaded_keys(rules: List[dict]) -> List[str]:
    """Sorted, unique keys of the loaded rules."""
    return sorted({key for rule in rules for key in rule["keys"]})


def ausearch_start(timestamp: float) -> List[str]:
    """`--start DATE TIME` words for ausearch run with LC_ALL=C.

    ausearch reads the date with strptime("%x"), which in the C locale is %m/%d/%y
    (two-digit year), and the time as %H:%M:%S in local time.
    """
    local = time.localtime(timestamp)
    return ["--start", time.strftime("%m/%d/%y", local), time.strftime("%H:%M:%S", local)]


def parse_raw_events(text: str) -> List[dict]:
    """Events in `ausearch --format raw` output, in log order.

    Each event: {"id": "SEC.MSEC:SERIAL", "time": float, "serial": int, and from its
    SYSCALL record when there is one: "pid", "ppid", "uid", "auid", "exe", "key"}.
    """
    events: Dict[str, dict] = {}
    for line in text.splitlines():
        match = _RAW_EVENT_ID.search(line)
        if not match:
            continue
        seconds, millis, serial = match.groups()
        event_id = f"{seconds}.{int(millis):03d}:{serial}"
        event = events.setdefault(event_id, {
            "id": event_id,
            "time": float(f"{seconds}.{millis}"),
            "serial": int(serial),
        })
        # Enriched raw lines carry interpreted fields after \x1d; keep the raw part.
        fields = dict(_RAW_FIELD.findall(line.split("\x1d")[0]))
        if fields.get("type") == "SYSCALL":
            for name in ("pid", "ppid", "uid", "auid"):
                if name in fields and fields[name].isdigit():
                    event[name] = int(fields[name])
            for name in ("exe", "key"):
                if name in fields:
                    event[name] = fields[name].strip('"')
    return list(events.values())


def parse_rule_changes(text: str) -> List[dict]:
    """The CONFIG_CHANGE records of rules added or removed in `ausearch --format raw` output:
    [{"id": "SEC.MSEC:SERIAL", "op": "add_rule" or "remove_rule", "keys": [...], "ok": res=1}]
    in log order. The kernel writes a key with a byte outside printable ASCII (several keys
    joined by \x01) in hex, without quotes."""
    changes = []
    for line in text.splitlines():
        raw = line.split("\x1d")[0]
        match = _RAW_EVENT_ID.search(raw)
        if not raw.startswith("type=CONFIG_CHANGE ") or not match:
            continue
        fields = dict(_CHANGE_FIELD.findall(raw))
        if fields.get("op") not in ("add_rule", "remove_rule"):
            continue
        seconds, millis, serial = match.groups()
        changes.append({"id": f"{seconds}.{int(millis):03d}:{serial}", "op": fields["op"],
                        "keys": _logged_keys(fields.get("key", "")), "ok": fields.get("res") == "1"})
    return changes


def _logged_keys(value: str) -> List[str]:
    """The keys of a CONFIG_CHANGE key= field: "KEY", HEX or (null)."""
    if value.startswith('"'):
        text = value.strip('"')
    elif re.fullmatch(r"(?:[0-9A-Fa-f]{2})+", value):
        text = bytes.fromhex(value).decode("utf-8", "replace")
    else:
        return []
    return [key for key in text.split(_KEY_SEPARATOR) if key]


def normalize_event_id(value: str) -> Optional[str]:
    """"SEC.MSEC:SERIAL[@NODE]" as "SEC.MMM:SERIAL" (three-digit milliseconds), or None."""
    match = re.match(r"\s*(\d+)\.(\d+):(\d+)", value or "")
    if not match:
        return None
    seconds, millis, serial = match.groups()
    return f"{seconds}.{int(millis):03d}:{serial}"


def read_cmdline(pid: int, proc: str = "/proc") -> Optional[List[str]]:
    """argv of a process, or None if it is gone (or a kernel thread)."""
    try:
        with open(os.path.join(proc, str(pid), "cmdline"), "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    if not raw:
        return None
    return [part.decode("utf-8", "replace") for part in raw.rstrip(b"\0").split(b"\0")]


def read_ppid(pid: int, proc: str = "/proc") -> Optional[int]:
    """Parent pid from /proc/PID/stat (the field after the parenthesised comm)."""
    try:
        with open(os.path.join(proc, str(pid), "stat"), "rb") as handle:
            stat = handle.read().decode("utf-8", "replace")
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    return int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None


def process_name(pid: int, proc: str = "/proc") -> Optional[str]:
    """The comm of a process, or None if it does not exist."""
    try:
        with open(os.path.join(proc, str(pid), "comm")) as handle:
            return handle.read().strip()
    except OSError:
        return None


def find_processes(program: str, proc: str = "/proc") -> List[dict]:
    """Processes running PROGRAM: argv[0] is it, or argv[1] is it and argv[0] is a
    Python interpreter (how the kernel starts a #! script such as the plugin).
    Returns [{"pid", "ppid", "cmdline"}] sorted by pid."""
    found = []
    try:
        entries = os.listdir(proc)
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        pid = int(entry)
        argv = read_cmdline(pid, proc)
        if not argv:
            continue
        by_interpreter = len(argv) > 1 and argv[1] == program and "python" in os.path.basename(argv[0])
        if argv[0] != program and not by_interpreter:
            continue
        found.append({"pid": pid, "ppid": read_ppid(pid, proc), "cmdline": argv})
    return sorted(found, key=lambda process: process["pid"])
