"""status.json: the counters both threads update, and the file written from them."""

# Python 3.6 (RHEL 8) has no list[str] or X | None in annotations: keep typing's names.
# ruff: noqa: UP006, UP035, UP045

import json
import os
import threading
import time
from typing import List, Optional

from .config import Rule
from .limits import RateLimiter
from .log import Log
from .spool import Spool

STATUS_INTERVAL = 1.0  # seconds between two writes of status.json


class Status:
    """Shared state behind status.json (written by the main thread, at most once a second)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queue = 0
        self.last_error: Optional[str] = None
        self.last_error_permanent = False  # the MTA refused that message: no retry can help
        self.last_delivery: Optional[float] = None
        self.bad = 0  # files in <spool>/bad/
        self.unspooled = 0  # alerts held in memory, the spool could not take them
        self.dropped = 0  # alerts lost since start: no room in the spool nor in memory
        self.long_lines = 0  # input lines dropped for being longer than MAX_LINE
        self.tamper_suppressed = 0  # tamper findings in the role's maintenance window
        self.state_reads = 0  # reads of the kernel's state (every few seconds: a heartbeat)
        self.running = True  # False once the plugin ends cleanly (the next one reads it)
        self.auditd_ended = False  # this host's auditd said it ends (DAEMON_END, _ABORT)
        # The kernel state's losses mailed and not undone (StateWatch.reported, as JSON):
        # the next plugin does not mail them again.
        self.tamper_reported = []  # type: list
        self.ignored = {}  # type: dict  # rule name -> events its conditions left out
        self.changed = True

    def document(self, now: float, rules: dict) -> dict:
        """status.json's content (docs/design.md); rules: each rule's RateLimiter row."""
        with self.lock:
            self.changed = False
            return {
                "pid": os.getpid(),
                "updated": now,
                "rules": rules,
                "queue": self.queue,
                "last_error": self.last_error,
                "last_error_permanent": self.last_error_permanent,
                "last_delivery": self.last_delivery,
                "bad": self.bad,
                "unspooled": self.unspooled,
                "dropped": self.dropped,
                "long_lines": self.long_lines,
                "tamper_suppressed": self.tamper_suppressed,
                "state_reads": self.state_reads,
                "running": self.running,
                "auditd_ended": self.auditd_ended,
                "tamper_reported": self.tamper_reported,
            }


class StatusFile:
    """Writes status.json (Spool.write_status) from Status and the rate limiter's rows when
    something changed, at most every STATUS_INTERVAL seconds; a failure to write it is
    logged once and retried at the next tick. With --print (print_only) there is none."""

    def __init__(self, spool: Spool, status: Status, log: Log, print_only: bool) -> None:
        self.spool = spool
        self.status = status
        self.log = log
        self.print_only = print_only
        self.written = 0.0
        self.error: Optional[str] = None  # the last failure to write it

    def previous(self) -> dict:
        """status.json as the plugin before this one left it ({} when there is none); read
        before this plugin writes its own."""
        if self.print_only:
            return {}
        try:
            with open(self.spool.status_path, "rb") as handle:
                document = json.loads(handle.read(1 << 20).decode())
        except (OSError, ValueError):
            return {}
        return document if isinstance(document, dict) else {}

    def write(self, limiter: "RateLimiter", rules: List[Rule], force: bool = False) -> None:
        if self.print_only:
            return
        now = time.time()
        if not force and (not self.status.changed or now - self.written < STATUS_INTERVAL):
            return
        document = self.status.document(now, {rule.name: dict(limiter.row(rule), ignored=self.status.ignored.get(
            rule.name, 0)) for rule in rules})
        self.written = now
        try:
            self.spool.write_status(document)
        except OSError as err:
            self.status.changed = True  # try again at the next tick; say so once
            if str(err) != self.error:
                self.log.error(f"cannot write {self.spool.status_path}: {err}")
            self.error = str(err)
            return
        self.error = None
