"""Tamper alerts: the changes by which auditing, or this plugin, is switched off
(docs/plugin.md, "Tamper alerts"), as the audit records tell of them: what each change
record of an event says (classify), rule removals folded into one burst, and who did it.
TamperWatch (tamper_watch.py) weighs them against the kernel's state and the role's window."""

# Python 3.6 (RHEL 8) has no list[str] or X | None in annotations: keep typing's names.
# ruff: noqa: UP006, UP035, UP045

import os
import pwd
import re
from collections import Counter
from typing import List, Optional

from .config import HOSTNAME
from .events import EXCLUDE_LIST, RECORDS_MAX, Record
from .text import FIELD_MAX, escape_text

# Records that can tell of tampering: an event holding one is always read with auparse.
# DAEMON_CONFIG is none, but its op=reconfigure tells a reload of auditd (TamperWatch).
TAMPER_TYPES = ("CONFIG_CHANGE", "DAEMON_END", "DAEMON_ABORT", "DAEMON_CONFIG")

UNSET_ID = "4294967295"  # an auid or session that was never set ((unsigned) -1)
BURST_QUIET = 1.0  # seconds without another rule removal that end a burst (auditctl -D)...
BURST_MAX = 5.0  # ...and the longest a burst waits for its mail


class Tamper:
    """One tamper finding: its kind (X-Audit-Tamper), a short summary for the Subject, what
    changed and who did it, when (epoch seconds) and the audit event behind it."""

    def __init__(self, kind: str, summary: str, what: List[str], who: str, when: float) -> None:
        self.kind = kind
        self.summary = summary
        self.what = what
        self.who = who
        self.when = when
        self.event_id = ""  # TIME:SERIAL@NODE of the (first) event, if any
        self.records = []  # type: List[str]
        self.removed = Counter()  # type: Counter  # rules-removed: watched key -> rules
        self.others = 0  # rules-removed: rules without a watched key in the same burst
        self.token = None  # type: Optional[str]  # a verification's, see Spool.verify_token
        self.node = HOSTNAME  # the host it happened on (node= of an aggregating auditd)


def describe_actor(records: List[Record]) -> str:
    """Who made the change, from the SYSCALL record the kernel attaches when a rule makes
    the system call auditable, else from the change record itself."""
    source = next((r for r in records if r.type == "SYSCALL"), None) or \
        next((r for r in records if r.type in TAMPER_TYPES), Record("", ""))
    parts = []
    for name in ("auid", "uid", "ses", "tty", "exe", "comm", "pid", "ppid", "subj"):
        raw, shown = source.raw.get(name), source.shown.get(name, "")
        if raw is None or (name in ("auid", "ses") and raw == UNSET_ID):
            continue
        parts.append(f"{name}={shown}" if shown == raw or not raw.isdigit() else f"{name}={shown}({raw})")
    if "auid" not in source.raw or source.raw.get("auid") == UNSET_ID:
        parts.insert(0, "auid=unset (no login session)")
    return " ".join(parts) or "unknown"


def _who_short(records: List[Record]) -> str:
    """The actor for a Subject: the login user (auid), else the uid, else unknown."""
    source = next((r for r in records if r.type == "SYSCALL"), None) or \
        next((r for r in records if r.type in TAMPER_TYPES), Record("", ""))
    auid = source.raw.get("auid")
    if auid and auid != UNSET_ID:
        return source.shown.get("auid") or auid
    uid = source.raw.get("uid")
    return "uid " + (source.shown.get("uid") or uid) if uid else "unknown"


def weakened_setting(name: str, new: int, old: int) -> Optional[str]:
    """Why setting NAME from old to new lets events go unrecorded or unreported, or None.
    Tightening a setting, or setting it to what it was (augenrules does on every load),
    is no tampering."""
    if name == "audit_failure" and new == 0 and old != 0:
        return f"failure mode {old} -> 0 (silent): the kernel no longer reports lost events"
    if name == "audit_rate_limit" and new and (not old or new < old):
        return f"rate limit {old or 'none'} -> {new} messages/s: events beyond it are dropped"
    if name == "audit_backlog_limit" and new < old:
        return f"backlog limit {old} -> {new}: a smaller queue drops events sooner"
    if name == "audit_backlog_wait_time" and new < old:
        return f"backlog wait time {old} -> {new}: the kernel waits less before it drops events"
    return None


def classify(records: List[Record], watched: List[str]) -> List[Tamper]:
    """The tamper findings of one event's records: each change record is judged (one
    netlink message may carry several changes), and a daemon's end. watched: the keys."""
    found = []
    for change in records:
        if change.type in TAMPER_TYPES and change.raw.get("res") not in ("0", "failed"):
            finding = _classify_record(change, records, watched)
            if finding is not None:
                finding.records = [r.text for r in records]
                found.append(finding)
    return found


def _classify_record(change: Record, records: List[Record], watched: List[str]) -> Optional[Tamper]:
    op = change.raw.get("op", "").strip('"').replace(" ", "_")
    if change.type in ("DAEMON_END", "DAEMON_ABORT"):
        stopped = change.type == "DAEMON_END"
        return Tamper("auditd-stopped" if stopped else "auditd-aborted",
                      f"auditd stopped by {_who_short(records)}" if stopped else "auditd aborted",
                      [(f"auditd {'stopped' if stopped else 'aborted'} ({change.type}): no events "
                        "are recorded until it starts again")], describe_actor(records), 0.0)
    if op in ("remove_rule", "autoremove_rule"):
        keys = [k for k in change.shown.get("key", "").split("\x01") if k and k != "(null)"]
        found = Tamper("rules-removed", "", [], describe_actor(records), 0.0)
        found.removed.update(k for k in keys if k in watched)
        found.others = 0 if found.removed else 1
        return found
    if op == "add_rule":
        if change.raw.get("list") != EXCLUDE_LIST:  # a rule load, no finding
            return None
        return Tamper("rule-excluding", f"a rule on the exclude list added by {_who_short(records)}",
                      [("a rule was added to the exclude list: the kernel drops the records it "
                        "matches before anyone sees them")], describe_actor(records), 0.0)
    if op == "set":
        return _classify_setting(change, records)
    return None


def settings_set(records: List[Record]) -> List[str]:
    """The kernel status fields (as kernel_state names them) that this event's CONFIG_CHANGE
    records set, whatever to: `audit_enabled=1 old=0` sets enabled."""
    return [name[len("audit_"):] for change in records if change.type == "CONFIG_CHANGE"
            for name in change.raw if name.startswith("audit_") and change.number(name) is not None
            and change.number("old") is not None]


def _classify_setting(change: Record, records: List[Record]) -> Optional[Tamper]:
    """op=set: auditing disabled, the lost counter reset, or a setting weakened."""
    old = change.number("old")
    if change.number("audit_enabled") == 0:
        kind, summary = "audit-disabled", "auditing disabled by {}"
        what = ["auditing disabled (audit_enabled 1 -> 0): the kernel records no events"]
    elif change.number("lost") == 0 and old:
        kind, summary = "lost-reset", "the lost-events counter reset by {}"
        what = [(f"the kernel's lost-events counter was reset ({old} -> 0): the losses it "
                "counted are no longer seen")]
    else:
        what = [reason for reason in (weakened_setting(name, change.number(name), old) for name in change.raw
                                      if name.startswith("audit_") and change.number(name) is not None
                                      and old is not None) if reason]
        if not what:
            return None
        kind, summary = "audit-setting", "audit setting weakened by {}"
    return Tamper(kind, summary.format(_who_short(records)), what, describe_actor(records), 0.0)


class RemovalBurst:
    """Rule removals that come together (auditctl -D, augenrules) folded into one finding:
    it is due once BURST_QUIET seconds pass without another one, or BURST_MAX after its first."""

    def __init__(self, first: Tamper, now: float) -> None:
        self.tamper = first
        self.started = self.last = now
        self.actors = [first.who]

    def add(self, removal: Tamper, now: float) -> None:
        self.tamper.removed.update(removal.removed)
        self.tamper.others += removal.others
        self.tamper.token = self.tamper.token or removal.token
        self.tamper.records.extend(removal.records[:max(0, RECORDS_MAX - len(self.tamper.records))])
        if not any(_same_actor(removal.who, actor) for actor in self.actors):
            self.actors.append(removal.who)
        self.last = now

    def due(self, now: float) -> bool:
        return now - self.last >= BURST_QUIET or now - self.started >= BURST_MAX

    def finding(self) -> Optional[Tamper]:
        """The finding, when a watched key went; a burst of other rules alone is none."""
        tamper = self.tamper
        if not tamper.removed:
            return None
        keys = ", ".join(sorted(tamper.removed))
        tamper.summary = f"audit rules removed ({keys})"
        counts = f"Rules removed: {sum(tamper.removed.values())} with a watched key, {tamper.others} others"
        tamper.what = [f"Removed keys: {keys}", counts]
        tamper.who = "; ".join(self.actors[:5])
        return tamper


def _same_actor(one: str, other: str) -> bool:
    """Whether two actor descriptions differ only in pid and ppid (auditctl run twice)."""
    return re.sub(r" p?pid=\S+", "", one) == re.sub(r" p?pid=\S+", "", other)


def sender_description(pid: int, uid: int) -> str:
    """The sender of a signal: its pid and uid, and what /proc still tells of it (it may
    have exited: kill(1) does at once)."""
    parts = [f"pid={pid}", f"uid={_user_name(uid)}({uid})"]
    base = f"/proc/{pid}"
    try:
        try:
            parts.append("exe=" + os.readlink(base + "/exe"))
        except PermissionError:  # the kernel's ptrace check: SELinux (docs/selinux.md), capabilities
            parts.append("exe=(not readable)")
        with open(base + "/loginuid") as handle:
            auid = handle.read().strip()
        if auid != UNSET_ID:
            parts.insert(0, f"auid={_user_name(int(auid))}({auid})")
        with open(base + "/sessionid") as handle:
            session = handle.read().strip()
        if session != UNSET_ID:
            parts.append(f"ses={session}")
    except PermissionError:
        parts.append("(its /proc entry is not readable)")
    except (OSError, ValueError):
        parts.append("(the sender has exited)")
    return " ".join(escape_text(part, FIELD_MAX) for part in parts)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return str(uid)
