"""Tamper alerts: the changes by which auditing, or this plugin, is switched off
(docs/plugin.md, "Tamper alerts"), from records, from the plugin's end and from the
kernel's lost-events counter; and which of them are the role's own work."""

# Python 3.6 (RHEL 8) has no list[str] or X | None in annotations: keep typing's names.
# ruff: noqa: UP006, UP035, UP045

import os
import pwd
import re
import time
from collections import Counter
from typing import List, Optional

from .config import HOSTNAME, Rule
from .events import RECORDS_MAX, Record, read_records, timestamp
from .kernel import KernelAuditStatus
from .log import Log
from .spool import Spool
from .status import Status
from .text import FIELD_MAX, escape_text

# Records that can tell of tampering: an event holding one is always read with auparse.
TAMPER_TYPES = ("CONFIG_CHANGE", "DAEMON_END", "DAEMON_ABORT")
TAMPER_OPS = ("remove_rule", "set")  # the CONFIG_CHANGE ops that classify() looks at
UNSET_ID = "4294967295"  # an auid or session that was never set ((unsigned) -1)
BURST_QUIET = 1.0  # seconds without another rule removal that end a burst (auditctl -D)...
BURST_MAX = 5.0  # ...and the longest a burst waits for its mail
MAINTENANCE_EARLY = 2  # slack before the window's start (the two clocks' resolution)...
MAINTENANCE_LATE = 5  # ...and after its end (a signal handled a moment later)
LOST_POLL = 5.0  # seconds between two reads of the kernel's lost-events counter


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


def classify(records: List[Record], watched: List[str]) -> Optional[Tamper]:
    """The tamper finding of one event's records, or None. watched: the configured keys."""
    change = next((r for r in records if r.type in TAMPER_TYPES), None)
    if change is None or change.raw.get("res") in ("0", "failed"):
        return None
    op = change.raw.get("op", "").strip('"').replace(" ", "_")  # as change_op() reads it
    who = _who_short(records)
    found = None
    if change.type == "DAEMON_END":
        found = Tamper("auditd-stopped", f"auditd stopped by {who}",
                       ["auditd stopped (DAEMON_END): no events are recorded until it starts again"],
                       describe_actor(records), 0.0)
    elif change.type == "DAEMON_ABORT":
        found = Tamper("auditd-aborted", "auditd aborted",
                       ["auditd aborted (DAEMON_ABORT): no events are recorded until it starts again"],
                       describe_actor(records), 0.0)
    elif op == "remove_rule":
        keys = [k for k in change.shown.get("key", "").split("\x01") if k and k != "(null)"]
        found = Tamper("rules-removed", "", [], describe_actor(records), 0.0)
        found.removed.update(k for k in keys if k in watched)
        found.others = 0 if found.removed else 1
    elif op == "set" and change.number("audit_enabled") == 0:
        found = Tamper("audit-disabled", f"auditing disabled by {who}",
                       ["auditing disabled (audit_enabled 1 -> 0): the kernel records no events"],
                       describe_actor(records), 0.0)
    elif op == "set":
        old = change.number("old")
        reasons = [weakened_setting(name, change.number(name), old) for name in change.raw
                   if name.startswith("audit_") and change.number(name) is not None and old is not None]
        reasons = [reason for reason in reasons if reason]
        if reasons:
            found = Tamper("audit-setting", f"audit setting weakened by {who}", reasons,
                           describe_actor(records), 0.0)
    if found is not None:
        found.records = [r.text for r in records]
    return found


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
        parts.append("exe=" + os.readlink(base + "/exe"))
        with open(base + "/loginuid") as handle:
            auid = handle.read().strip()
        if auid != UNSET_ID:
            parts.insert(0, f"auid={_user_name(int(auid))}({auid})")
        with open(base + "/sessionid") as handle:
            session = handle.read().strip()
        if session != UNSET_ID:
            parts.append(f"ses={session}")
    except (OSError, ValueError):
        parts.append("(the sender has exited)")
    return " ".join(escape_text(part, FIELD_MAX) for part in parts)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return str(uid)


class TamperWatch:
    """Turns tamper records, the end of the plugin and the kernel's lost-events counter into
    findings, and hands each to report(tamper) (the plugin rate-limits and mails it) unless
    it is the role's own work: then it is logged and counted, not mailed. With --print
    (print_only) no finding carries a verification token, and none is the role's work."""

    def __init__(self, report, spool: Spool, status: Status, print_only: bool, under_auditd: bool,
                 log: Log) -> None:
        self.report = report
        self.spool = spool
        self.status = status
        self.print_only = print_only
        self.under_auditd = under_auditd
        self.log = log
        self.burst = None  # type: Optional[RemovalBurst]
        self.auditd_ended = False  # a DAEMON_END or DAEMON_ABORT came
        self.parent = os.getppid()
        self.kernel = None  # type: Optional[KernelAuditStatus]
        self.lost = None  # type: Optional[int]
        self.next_poll = 0.0
        if under_auditd:
            self._open_kernel_status()

    def _open_kernel_status(self) -> None:
        try:
            self.kernel = KernelAuditStatus()
            self.lost = self.kernel.read()["lost"]
        except OSError as err:
            self.kernel = None
            self.log.warning(f"cannot read the kernel's audit status (lost events are not reported): {err}")

    def read(self, au, rules: List[Rule]) -> None:
        """The tamper finding of this event's records, if any, stamped with its time and id."""
        records = read_records(au)
        finding = classify(records, [k for rule in rules for k in rule.keys])
        if finding is None:
            return
        stamp = timestamp(au)
        finding.when = stamp.sec + stamp.milli / 1000.0
        node = next((r.raw["node"] for r in records if "node" in r.raw), HOSTNAME)
        finding.event_id = f"{stamp.sec}.{stamp.milli:03d}:{stamp.serial}@{node}"
        ppid = next((r.raw["ppid"] for r in records if "ppid" in r.raw), "")
        finding.token = self.spool.verify_token(ppid, self.log) if ppid and not self.print_only else None
        self.observe(finding)

    def suppressed(self, finding: Tamper) -> bool:
        """Whether a finding is the role's own work: its time lies in the window of the
        maintenance marker (Spool.maintenance). Then it is logged and counted, not mailed."""
        if self.print_only:
            return False
        window = self.spool.maintenance(self.log)
        if window is None or not window[0] - MAINTENANCE_EARLY <= finding.when <= window[1] + MAINTENANCE_LATE:
            return False
        self.log.info(f"tamper finding {finding.kind} during the role's maintenance, not mailed: "
                      f"{finding.summary or ', '.join(sorted(finding.removed))}")
        with self.status.lock:
            self.status.tamper_suppressed += 1
            self.status.changed = True
        return True

    def observe(self, tamper: Tamper) -> None:
        """A finding from the audit stream."""
        if tamper.kind in ("auditd-stopped", "auditd-aborted"):
            self.auditd_ended = True
        if self.suppressed(tamper):
            return
        if tamper.kind != "rules-removed":
            self.report(tamper)
            return
        now = time.monotonic()
        if self.burst is None:
            self.burst = RemovalBurst(tamper, now)
        else:
            self.burst.add(tamper, now)

    def tick(self, force: bool = False) -> None:
        """Mail a burst that is due (all of them when forced, at exit); read the lost counter."""
        now = time.monotonic()
        if self.burst is not None and (force or self.burst.due(now)):
            finding, self.burst = self.burst.finding(), None
            if finding is not None:
                self.report(finding)
        if self.kernel is not None and now >= self.next_poll:
            self.next_poll = now + LOST_POLL
            self._check_lost()

    def _check_lost(self) -> None:
        try:
            status = self.kernel.read()
        except OSError as err:
            self.log.warning(f"cannot read the kernel's audit status: {err}")
            return
        lost, before = status["lost"], self.lost
        self.lost = lost
        if before is None or lost <= before:  # a smaller count: auditctl --reset-lost
            return
        finding = Tamper("events-lost", f"the kernel lost {lost - before} audit events",
                         [(f"the kernel lost {lost - before} events (lost counter {before} -> {lost}); "
                           f"backlog_limit {status['backlog_limit']}, rate_limit {status['rate_limit']}, "
                           f"backlog {status['backlog']}")], "the kernel (no actor is recorded)", time.time())
        if not self.suppressed(finding):
            self.report(finding)

    def at_exit(self, stop: Optional[tuple], when: float) -> None:
        """The plugin ends: stop is (pid, uid) of the SIGTERM's sender, or None at EOF. Only
        when auditd runs the plugin: a test or a replay may stop it as it likes."""
        self.tick(force=True)
        if not self.under_auditd or self.auditd_ended:
            return  # auditd's own DAEMON_END told it already
        if stop is not None and stop[0] != self.parent:
            finding = Tamper("plugin-stopped", "the alert plugin was stopped",
                             [("the alert plugin got SIGTERM from a process other than auditd: "
                              "no alerts are mailed until auditd starts it again")],
                             sender_description(*stop), when)
        elif stop is not None:
            finding = Tamper("plugin-stopped", "auditd stopped the alert plugin",
                             [("auditd stopped the alert plugin without stopping itself: its "
                              "plugins.d entry was removed or deactivated and auditd reloaded")],
                             sender_description(*stop), when)
        elif os.getppid() != self.parent:
            finding = Tamper("auditd-stopped", "auditd ended without a word",
                             [("auditd ended without DAEMON_END (killed with SIGKILL, or it "
                              "crashed): no events are recorded until it starts again")],
                             "unknown (auditd could not say)", when)
        else:
            finding = Tamper("plugin-stopped", "auditd closed the alert plugin's input",
                             ["auditd closed the plugin's input without a signal"], "auditd", when)
        if not self.suppressed(finding):
            self.report(finding)
