"""Which tamper findings are mailed, and with what (docs/plugin.md, "Tamper alerts"). Three
sources: the records of the audit stream (tamper.classify: who did it, and changes quick
enough to be undone before the state is read), the kernel's state against the deployed one
(StateWatch: every loss of coverage, also one whose records were excluded), and the end of
the plugin (its own SIGTERM or EOF, and a predecessor that ended without a word). A change
that both tell of is one mail: the state's, with the records' actor and event. What the
role's window covers is logged and counted, not mailed: the role's rule loads and auditd
restarts, judged against the deployed state once the window closes; never what the role
does not do (auditing disabled, events lost, the lost counter reset)."""

# Python 3.6 (RHEL 8) has no list[str] or X | None in annotations: keep typing's names.
# ruff: noqa: UP006, UP035, UP045

import os
import time
from typing import Iterable, List, Optional, Set

from .audit_netlink import AuditNetlink
from .config import HOSTNAME, Rule
from .events import RECORDS_MAX, read_records, timestamp
from .kernel_state import Finding
from .log import Log
from .spool import Spool, boot_id, uptime
from .state_watch import STATE_POLL, StateWatch, findings_json
from .status import Status
from .tamper import (
    BURST_QUIET,
    RemovalBurst,
    Tamper,
    classify,
    sender_description,
    settings_set,
)

RELOAD_RECENT = 10.0  # seconds after auditd's DAEMON_CONFIG op=reconfigure that its stop is its reload
MAINTENANCE_EARLY = 2  # seconds before the window opened (a marker written a moment late)...
MAINTENANCE_LATE = 5  # ...and after it closed (a signal handled a moment later)
# The state's finding kinds that each record finding's kind tells of.
SAME_CHANGE = {"rules-removed": ("rules-removed", "rule-changed"), "audit-disabled": ("audit-disabled",),
               "audit-setting": ("audit-setting",), "lost-reset": ("lost-reset",),
               "rule-excluding": ("rule-excluding",)}
NEVER_THE_ROLE = ("audit-disabled", "events-lost", "lost-reset")
KEY_KINDS = ("rules-removed", "rule-changed")  # the state's findings that name watched keys
HELD_MAX = 100  # records kept for a change the state holds back for the role's window
COUNTER_KINDS = ("events-lost", "lost-reset")  # from read to read: they cannot wait a read
# When one read of the state finds several changes (auditctl run twice in a row), they are
# one incident and one mail, under the kind that weighs most.
WEIGHT = ("audit-disabled", "rule-excluding", "rules-removed", "rule-changed", "audit-setting",
          "lost-reset", "events-lost")


def rule_lines(finding: Finding) -> List[str]:
    """The rules a finding of the kernel's state is about, as auditctl -l prints them."""
    lines = []
    if finding.before:
        lines += ["", "Rules deployed (as auditctl -l prints them):"] + ["  " + t for t in finding.before]
    if finding.after:
        lines += ["", "Rules now (as auditctl -l prints them):"] + ["  " + t for t in finding.after]
    return lines


def state_tamper(finding: Finding, status: dict) -> Tamper:
    """A Tamper for a finding of the kernel's state that no record told of."""
    what = [finding.summary]
    if finding.kind in ("rules-removed", "rule-changed"):
        what.insert(0, f"{'Removed' if finding.kind == 'rules-removed' else 'Changed'} keys: "
                       + ", ".join(finding.keys))
    if finding.kind == "events-lost":
        what[0] += (f"; backlog_limit {status.get('backlog_limit')}, rate_limit "
                    f"{status.get('rate_limit')}, backlog {status.get('backlog')}")
    who = "the kernel (no actor is recorded)" if finding.kind == "events-lost" else \
        "unknown: no audit record of the change reached the plugin"
    return Tamper(finding.kind, finding.summary, what + rule_lines(finding), who, time.time())


def rule_keys(text: str) -> List[str]:
    """The keys of a rule as auditctl -l prints it (-k K, -F key=K)."""
    words = text.split()
    return [word[len("key="):] if word.startswith("key=") else words[i + 1]
            for i, word in enumerate(words)
            if word.startswith("key=") or (word == "-k" and i + 1 < len(words))]


def without_keys(finding: Finding, keys: Set[str]) -> Optional[Finding]:
    """A finding of watched keys without those that an excused actor removed (the state's
    finding is every loss since the deployed state, also the excused ones): None when
    nothing else is lost. A rule is left out only when every key it has is among them."""
    if finding.kind not in KEY_KINDS or not keys.intersection(finding.keys):
        return finding
    rest = tuple(key for key in finding.keys if key not in keys)
    if not rest:
        return None
    before = tuple(t for t in finding.before if not set(rule_keys(t)) <= keys) or finding.before
    after = tuple(t for t in finding.after if not set(rule_keys(t)) <= keys) or finding.after
    verb = "removed" if finding.kind == "rules-removed" else "changed"
    return finding._replace(summary=f"{len(before)} rule(s) {verb}, keys {', '.join(rest)}",
                            before=before, after=after, keys=rest)


def one_incident(tampers: List[Tamper]) -> Tamper:
    """Several findings of one read of the state as one: the weightiest, with the others'
    summaries and accounts after its own."""
    tampers = sorted(tampers, key=lambda t: WEIGHT.index(t.kind) if t.kind in WEIGHT else len(WEIGHT))
    first = tampers[0]
    first.summary = ", ".join(t.summary for t in tampers)
    for other in tampers[1:]:
        first.what += ["", f"Also ({other.kind}):"] + other.what
        if other.who not in first.who:
            first.who += "; " + other.who
        first.records.extend(other.records[:max(0, RECORDS_MAX - len(first.records))])
        first.event_id = first.event_id or other.event_id
        first.token = first.token or other.token
    return first


def merged(finding: Finding, records: List[Tamper], status: dict) -> Tamper:
    """One finding of a change that the kernel's state and records both tell of: the
    records' account (who, what, the event) with the state's rules, under the state's kind."""
    if not records:
        return state_tamper(finding, status)
    tamper = records[0]
    for record in records[1:]:
        if record.who not in tamper.who:
            tamper.who += "; " + record.who
        tamper.what += [line for line in record.what if line not in tamper.what]
        tamper.records.extend(record.records[:max(0, RECORDS_MAX - len(tamper.records))])
        tamper.token = tamper.token or record.token
    if tamper.kind != finding.kind:
        tamper.kind, tamper.summary = finding.kind, finding.summary
    tamper.what += rule_lines(finding)
    return tamper


class TamperWatch:
    """Turns records, the kernel's state and the plugin's end into findings, and hands each
    to report(tamper) (the plugin rate-limits and mails it) unless it is the role's own
    work. With --print (print_only) or outside auditd there is no kernel state to read, no
    verification token and no role's work: findings come from the records alone."""

    def __init__(self, report, spool: Spool, status: Status, print_only: bool, under_auditd: bool,
                 log: Log) -> None:
        self.report = report
        self.spool = spool
        self.status = status
        self.print_only = print_only
        self.under_auditd = under_auditd
        self.log = log
        self.burst = None  # type: Optional[RemovalBurst]
        self.pending = []  # type: List[Tamper]  # record findings waiting for the state
        self.auditd_ended = False  # this host's auditd said DAEMON_END or DAEMON_ABORT
        self.reconfigured = None  # type: Optional[float]  # monotonic: its last op=reconfigure
        self.parent = os.getppid()
        self.boot = boot_id()
        self.state = None  # type: Optional[StateWatch]
        self.next_poll = 0.0  # monotonic: the next read of the kernel's state
        self.check_soon = None  # type: Optional[float]  # ...sooner, after a change record
        self.waited: Set[Finding] = set()  # findings held one read for their records
        self.previous_reported = []  # type: list  # what the plugin before this one mailed
        # The tamper rule's ignore (conditions.py): records -> why they are excused, or None.
        self.excuse = None
        self.excused = []  # type: List[Tamper]  # excused record findings waiting for the state
        # Watched keys whose removal was excused, while the kernel's state still lacks them:
        # a later finding of the state (every loss since the deployed state) leaves them out.
        self.excused_keys = set()  # type: Set[str]
        # Records of a change that the state holds back for the role's window (and records
        # that the window kept from being mailed): they only join the state's finding, if it
        # outlasts the window, and say who made the change.
        self.held = []  # type: List[Tamper]

    def start(self, rules: List[Rule]) -> None:
        """Under auditd: the first read of the kernel's state (the deployed one)."""
        if not self.under_auditd:
            return
        try:
            self.state = StateWatch(self.spool, self.log, self.watched(rules), AuditNetlink())
            self.state.start(self.previous_reported)
        except OSError as err:
            self.state = None
            self.log.warning(f"cannot read the kernel's audit state ({err}): tamper findings come "
                             "from audit records alone")

    @staticmethod
    def watched(rules: List[Rule]) -> List[str]:
        return [key for rule in rules for key in rule.keys]

    def reconfigure(self, rules: List[Rule]) -> None:
        if self.state is not None:
            self.state.watched = self.watched(rules)

    def read(self, au, rules: List[Rule]) -> None:
        """The tamper findings of this event's records, stamped with its time, node and id."""
        records = read_records(au)
        node = next((r.raw["node"] for r in records if "node" in r.raw), HOSTNAME)
        if node == HOSTNAME and any(r.type == "DAEMON_CONFIG" and r.raw.get("op", "").strip('"') == "reconfigure"
                                    and r.raw.get("res") not in ("0", "failed") for r in records):
            self.reconfigured = time.monotonic()
            self.log.info("auditd reloaded its configuration (DAEMON_CONFIG op=reconfigure)")
        if node == HOSTNAME and self.state is not None:
            self.state.settings_set(settings_set(records))
        findings = classify(records, self.watched(rules))
        if not findings:
            return
        stamp = timestamp(au)
        ppid = next((r.raw["ppid"] for r in records if "ppid" in r.raw), "")
        token = self.spool.verify_token(ppid, self.log) if ppid and not self.print_only else None
        reason = self.excuse(records) if self.excuse is not None else None
        for finding in findings:
            finding.when = stamp.sec + stamp.milli / 1000.0
            finding.node = node
            finding.event_id = f"{stamp.sec}.{stamp.milli:03d}:{stamp.serial}@{node}"
            finding.token = token
            if reason is not None:
                self._excused(finding, reason)
            else:
                self.observe(finding)

    def observe(self, tamper: Tamper) -> None:
        """A finding from the audit stream. Another node's (an aggregating auditd) is that
        node's: it is mailed as it is, and says nothing of this host's kernel or auditd."""
        local = tamper.node == HOSTNAME
        if tamper.kind in ("auditd-stopped", "auditd-aborted") and local:
            self.auditd_ended = True
            with self.status.lock:
                self.status.auditd_ended = True
                self.status.changed = True
        if self.suppressed(tamper):  # each record of the role's work is counted
            if self.state is not None and local and tamper.kind in SAME_CHANGE:
                self._hold([tamper])  # a loss that outlasts the window is mailed with it
            return
        if self.state is not None and local and tamper.kind in SAME_CHANGE:
            self.check_soon = time.monotonic() + BURST_QUIET  # once the change settled
            if tamper.kind != "rules-removed":
                self.pending.append(tamper)
                return
        elif tamper.kind != "rules-removed":
            self._report(tamper)
            return
        self._add_to_burst(tamper)

    def _excused(self, tamper: Tamper, reason: str) -> None:
        """A record finding that the tamper rule's ignore excuses: logged and counted, never
        mailed; the state's finding of the same change is not mailed either (_check_state)."""
        if tamper.kind in ("auditd-stopped", "auditd-aborted") and tamper.node == HOSTNAME:
            self.auditd_ended = True
            with self.status.lock:
                self.status.auditd_ended = True
        self.log.info(f"tamper finding {tamper.kind} (event {tamper.event_id}) not mailed: rule tamper: {reason}")
        with self.status.lock:
            self.status.ignored["tamper"] = self.status.ignored.get("tamper", 0) + 1
            self.status.changed = True
        if self.state is not None and tamper.node == HOSTNAME and tamper.kind in SAME_CHANGE:
            self.excused.append(tamper)
            self.check_soon = time.monotonic() + BURST_QUIET

    def _add_to_burst(self, tamper: Tamper) -> None:
        now = time.monotonic()
        if self.burst is None or self.burst.tamper.node != tamper.node:
            self._end_burst()
            self.burst = RemovalBurst(tamper, now)
        else:
            self.burst.add(tamper, now)

    def _end_burst(self) -> None:
        finding, self.burst = (self.burst.finding() if self.burst else None), None
        if finding is None:
            return
        if self.state is not None and finding.node == HOSTNAME:
            self.pending.append(finding)
        else:
            self._report(finding)

    def tick(self, force: bool = False) -> None:
        """Mail a burst that is due (every one when forced, at exit); read the kernel's
        state when it is time, or soon after a change record (and its burst) settled."""
        now = time.monotonic()
        if self.burst is not None and (force or self.burst.due(now)):
            self._end_burst()
        settled = self.check_soon is not None and now >= self.check_soon and self.burst is None
        if self.state is not None and (force or settled or now >= self.next_poll):
            self.next_poll, self.check_soon = now + STATE_POLL, None
            self._check_state(last=force)

    def _check_state(self, last: bool = False) -> None:
        """The state's findings, each with the record findings that tell of the same change;
        a record finding that the state does not show (undone already, or the role's work
        held back) is judged on its own. What an excused actor removed is left out of the
        state's findings while it lasts; the records of a change held back for the role's
        window wait for the read that judges it."""
        pending, self.pending = self.pending, []
        excused, self.excused = self.excused, []
        held, self.held = self.held, []
        found = self.state.check(self.window_open())
        reported = findings_json(self.state.reported)
        if reported != self.status.tamper_reported:
            with self.status.lock:
                self.status.tamper_reported = reported
                self.status.changed = True
        with self.status.lock:
            self.status.state_reads += 1
            self.status.changed = True
        if found is None:  # the kernel cannot be read now: the records alone
            for record in pending:
                self._report(record)
            return
        self.excused_keys.update(key for record in excused for key in record.removed)
        self.excused_keys &= {key for f in self.state.current if f.kind in KEY_KINDS for key in f.keys}
        if not last:  # at exit there is no later read to wait for
            found = self._wait_for_records(found, pending + excused + held)
        incident = []
        for finding in found:
            behind = [r for r in pending + held if finding.kind in SAME_CHANGE.get(r.kind, ())]
            pending = [r for r in pending if r not in behind]
            held = [r for r in held if r not in behind]
            if not behind and any(finding.kind in SAME_CHANGE.get(r.kind, ()) for r in excused) \
                    and finding.kind not in KEY_KINDS:
                continue  # the change of an excused actor (the tamper rule's ignore)
            rest = without_keys(finding, self.excused_keys)
            if rest is None:
                continue  # only keys that an excused actor removed
            tamper = merged(rest, behind, self.state.last.status)
            if rest is not finding:
                tamper.what += ["", "Also lost, removed by an actor the tamper rule's ignore excuses "
                                    "(not mailed): keys " + ", ".join(k for k in finding.keys if k not in rest.keys)]
            incident.append(tamper)
        if incident:
            self._report(one_incident(incident))
        shown = {finding.kind for finding in self.state.current + found}
        waiting = {f.kind for f in self.state.current if f not in self.state.reported}
        for record in pending + excused + held:
            if waiting.intersection(SAME_CHANGE.get(record.kind, ())):
                # held back for the role's window: said again at the read that judges it
                if record in excused:
                    self.excused.append(record)
                else:
                    self._hold([record])
            elif record in pending and not shown.intersection(SAME_CHANGE[record.kind]):
                self._report(record)  # the state does not show it: undone already

    def _hold(self, records: Iterable[Tamper]) -> None:
        """Keep records until the read that judges their change (at most HELD_MAX)."""
        self.held.extend(records)
        del self.held[:-HELD_MAX]

    def _wait_for_records(self, found: List[Finding], pending: List[Tamper]) -> List[Finding]:
        """A change the state shows before its record came is judged once more a moment
        later, so that the record's account (who did it) joins it: the records may only be
        on their way. A change whose records are excluded is reported at that next read."""
        fresh = [f for f in found if f.kind not in COUNTER_KINDS]
        if not fresh or pending or set(fresh) <= self.waited:
            self.waited = set()
            return found
        self.waited = set(fresh)
        self.state.reported -= self.waited  # fresh again at the next read
        self.check_soon = time.monotonic() + BURST_QUIET
        return [f for f in found if f.kind in COUNTER_KINDS]

    def window_open(self) -> bool:
        """Whether the role's maintenance marker holds now (Spool.maintenance)."""
        if self.print_only:
            return False
        marker = self.spool.maintenance(self.log)
        return marker is not None and marker.covers(self.boot, uptime(), MAINTENANCE_EARLY, MAINTENANCE_LATE)

    def suppressed(self, tamper: Tamper) -> bool:
        """Whether a finding may be the role's own work (the window is open, and the role
        does such things): then it is logged and counted, not mailed."""
        if tamper.kind in NEVER_THE_ROLE or not self.window_open():
            return False
        self.log.info(f"tamper finding {tamper.kind} during the role's maintenance, not mailed: "
                      f"{tamper.summary or ', '.join(sorted(tamper.removed))}")
        with self.status.lock:
            self.status.tamper_suppressed += 1
            self.status.changed = True
        return True

    def _report(self, tamper: Tamper) -> None:
        if not self.suppressed(tamper):
            self.report(tamper)

    def at_start(self, previous: dict) -> None:
        """The plugin before this one (status.json): ended without a word when it was
        running and did not see auditd end (killed with SIGKILL, or it crashed). The losses
        of the kernel's state it mailed are not mailed again while they last."""
        self.previous_reported = previous.get("tamper_reported") or []
        if not self.under_auditd or not previous.get("running") or previous.get("auditd_ended") \
                or previous.get("pid") == os.getpid():
            return
        what = (f"the alert plugin (pid {previous.get('pid')}) ended without a word (killed with "
                "SIGKILL, or it crashed): until auditd started this one, no alerts were mailed")
        self._report(Tamper("plugin-killed", "the alert plugin before this one was killed", [what],
                            "unknown (a SIGKILL names no sender)", time.time()))

    def at_exit(self, stop: Optional[tuple], when: float, entry: Optional[bool]) -> None:
        """The plugin ends: stop is (pid, uid) of the SIGTERM's sender, or None at EOF;
        entry: whether its plugins.d entry is active (plugins_d.entry_active; None: unknown).
        Only when auditd runs the plugin: a test or a replay may stop it as it likes."""
        self.tick(force=True)
        if not self.under_auditd or self.auditd_ended:
            return  # auditd's own DAEMON_END told it already
        finding = self._end_finding(stop, when, entry)
        if finding is not None:
            self._report(finding)

    def _end_finding(self, stop: Optional[tuple], when: float, entry: Optional[bool]) -> Optional[Tamper]:
        """What the plugin's end is. auditd ends a plugin without ending itself on a reload
        of audit 4.2 (input closed, SIGTERM 50 ms later, the list started anew) and, in
        every version, when its plugins.d entry is removed or deactivated: the entry tells
        the two apart. (audit 3.x to 4.1 send a reloaded plugin SIGHUP; SIGTERM also when
        its program changed, and it is started anew.)"""
        if stop is not None and stop[0] != self.parent:
            return Tamper("plugin-stopped", "the alert plugin was stopped",
                          [("the alert plugin got SIGTERM from a process other than auditd: "
                            "no alerts are mailed until auditd starts it again")],
                          sender_description(*stop), when)
        if stop is None and os.getppid() != self.parent:
            return Tamper("auditd-stopped", "auditd ended without a word",
                          [("auditd ended without DAEMON_END (killed with SIGKILL, or it "
                            "crashed): no events are recorded until it starts again")],
                          "unknown (auditd could not say)", when)
        how = "sent SIGTERM to the alert plugin" if stop is not None else "closed the alert plugin's input"
        recent = self.reconfigured is not None and time.monotonic() - self.reconfigured <= RELOAD_RECENT
        if entry or (entry is None and recent):
            self.log.info(f"auditd {how} and its plugins.d entry is "
                          f"{'active' if entry else 'unknown, after DAEMON_CONFIG op=reconfigure'}"
                          ": a reload, auditd starts the plugin anew")
            return None
        who = sender_description(*stop) if stop is not None else "auditd"
        if entry is None:
            return Tamper("plugin-stopped", "auditd stopped the alert plugin",
                          [(f"auditd {how} without stopping itself, and its plugins.d entry "
                            "could not be read: it may have been removed or deactivated")], who, when)
        return Tamper("plugin-stopped", "auditd stopped the alert plugin",
                      [(f"auditd {how} without stopping itself: its plugins.d entry was removed "
                        "or deactivated and auditd reloaded; no alerts are mailed until it is "
                        "active again")], who, when)
