"""What the kernel enforces against what was deployed (issue #21): the audit rules and
status, read over the audit netlink socket at start, soon after a configuration change and
every STATE_POLL seconds whatever arrives, compared with the deployed state (the kernel's
state that `--record-state` kept in the spool after the role's last rules load, or the
state found at the first start). Every loss of coverage is a finding however it was made,
also when the records that would tell of it were excluded; each is reported once, until it
is undone. The lost counter is compared from read to read.

The unit that owns the kernel's state; it decides nothing about the role's window:
TamperWatch says whether it is open (then what the role does is held back).
"""

# Python 3.6 (RHEL 8) has no list[str] or X | None in annotations: keep typing's names.
# ruff: noqa: UP006, UP035, UP045

import json
import time
from typing import Iterable, List, Optional

from .audit_netlink import AuditNetlink
from .kernel_state import Finding, KernelState, counter_losses, losses
from .log import Log
from .spool import Spool

STATE_POLL = 3.0  # seconds between two reads of the kernel's state, whatever arrives
# What the role's own work can look like while it loads rules or restarts auditd: held
# back while its window is open, judged against the deployed state when it closes. The
# rest (auditing disabled, events lost, the lost counter reset) the role never does.
ROLE_KINDS = frozenset(["rules-removed", "rule-changed", "rule-excluding", "audit-setting"])


def read_kernel(netlink: AuditNetlink) -> KernelState:
    return KernelState.from_kernel(netlink.status(), netlink.rules())


def record_state(spool: Spool, netlink: AuditNetlink) -> KernelState:
    """The kernel's state now becomes the deployed state (--record-state, or at start)."""
    state = read_kernel(netlink)
    spool.write_deployed(json.dumps({"recorded": time.time(), "state": state.to_json()},
                                    sort_keys=True).encode())
    return state


def findings_json(findings) -> list:
    """Findings as status.json keeps them (lists of their fields)."""
    return sorted([f.kind, f.summary, list(f.before), list(f.after), list(f.keys)] for f in findings)


def findings_from_json(rows: list) -> List[Finding]:
    """findings_json's rows back as findings; a row of another shape is passed over."""
    found = []
    for row in rows if isinstance(rows, list) else []:
        if isinstance(row, list) and len(row) == 5 and all(isinstance(part, str) for part in row[:2]) \
                and all(isinstance(part, list) for part in row[2:]):
            found.append(Finding(row[0], row[1], *(tuple(str(x) for x in part) for part in row[2:])))
    return found


class StateWatch:
    """Reads the kernel's state and turns what it lost into findings (kernel_state.Finding)."""

    def __init__(self, spool: Spool, log: Log, watched: List[str], netlink: AuditNetlink) -> None:
        self.spool = spool
        self.log = log
        self.watched = watched
        self.netlink = netlink
        self.deployed = None  # type: Optional[KernelState]
        self.deployed_raw = None  # type: Optional[bytes]  # deployed.json as last read
        self.last = None  # type: Optional[KernelState]  # the last read
        self.reported = set()  # type: Set[Finding]  # losses mailed and not undone since
        self.current = []  # type: List[Finding]  # the losses at the last read, held back or not
        self.error = None  # type: Optional[str]  # the last failure to read, logged once

    def start(self, reported: Optional[list] = None) -> None:
        """The first read; the deployed state from the spool, or this one (and kept).
        reported: the losses the plugin before this one mailed (findings_json), which are
        not mailed again while they last."""
        self.last = read_kernel(self.netlink)
        self._load_deployed()
        self.reported = set(findings_from_json(reported or []))
        if self.deployed is None:
            record_state(self.spool, self.netlink)
            self._load_deployed()
            self.log.info(f"no deployed audit state was recorded: the kernel's state at start "
                          f"({len(self.last.rules)} rules) is taken as deployed")

    def _load_deployed(self) -> None:
        """deployed.json, when it changed since the last read (--record-state rewrote it)."""
        raw = self.spool.read_deployed(self.log)
        if raw is None or raw == self.deployed_raw:
            return
        try:
            self.deployed = KernelState.from_json(json.loads(raw.decode())["state"])
        except (ValueError, TypeError, KeyError, UnicodeDecodeError) as err:
            self.log.warning(f"{self.spool.deployed_path} ignored: {type(err).__name__}: {err}")
            return
        self.deployed_raw = raw
        self.reported = set()  # judged anew against what the role deployed

    def settings_set(self, names: Iterable[str]) -> None:
        """A CONFIG_CHANGE record told that these status fields were set (auditctl -e, -f,
        -r, -b, --backlog_wait_time): a loss of them that was mailed is forgotten, and the
        next read judges it anew. Between two reads a setting can be put back and taken
        again (-f 1, -f 0): the reads alone see one loss that never ended, and the second
        one would go unmailed. (-e 1 leaves no record while auditing is off.)"""
        names = set(names)
        for finding in list(self.reported):
            if finding.kind == "audit-disabled" and "enabled" in names or \
                    finding.kind == "audit-setting" and finding.summary.split(" ", 1)[0] in names:
                self.reported.discard(finding)

    def check(self, window_open: bool) -> Optional[List[Finding]]:
        """The findings to report now; None when the kernel could not be read. What the
        role may be doing (ROLE_KINDS) waits while its window is open."""
        try:
            now = read_kernel(self.netlink)
        except OSError as err:
            if str(err) != self.error:
                self.log.warning(f"cannot read the kernel's audit state: {err}")
            self.error = str(err)
            return None
        self.error = None
        self._load_deployed()
        found = counter_losses(self.last.status, now.status)
        self.last = now
        current = self.current = losses(self.deployed, now, self.watched)
        self.reported &= set(current)  # undone: mailed again if it comes back
        for finding in current:
            if finding in self.reported or (window_open and finding.kind in ROLE_KINDS):
                continue
            self.reported.add(finding)
            found.append(finding)
        return found
