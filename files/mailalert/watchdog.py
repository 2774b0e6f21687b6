"""The watchdog (`--watchdog`): run outside the plugin by a systemd timer or cron, every
minute. It reports what the plugin cannot report itself: a plugin that never comes back
(auditd gave up after `max_restarts`, or it was stopped with SIGSTOP, or killed while
auditd was gone). It looks at the processes (auditd, and a process of this program and
config whose parent is auditd) and at the plugin's heartbeat (status.json, rewritten at
least every STATE_POLL seconds while the plugin runs), and mails one tamper finding per
outage through the plugin's own transport; the outage is kept in the spool
(`watchdog.json`) until the plugin is healthy again. See docs/plugin.md, "Tamper alerts".
"""

# Python 3.6 (RHEL 8) has no list[str] or X | None in annotations: keep typing's names.
# ruff: noqa: UP006, UP035, UP045

import json
import os
import time
from typing import List, Optional

from .compose import WIRE_POLICY, compose_tamper
from .config import DEFAULT_CONFIG, Config
from .delivery import send
from .log import Log
from .spool import Spool, boot_id, check_private_dir, uptime
from .state_watch import STATE_POLL
from .tamper import Tamper
from .tamper_watch import MAINTENANCE_EARLY, MAINTENANCE_LATE
from .transports import DeliveryError

# status.json older than this is stale: ten heartbeats (the plugin reads the kernel's state
# every STATE_POLL = 3 s and rewrites status.json at least that often), so that a host
# under load never looks like a stopped plugin.
STALE_AFTER = 10 * STATE_POLL
# auditd starts its plugins right after its own start, and a plugin writes status.json
# right after its own: younger processes than this are not judged yet.
SETTLE = 10.0
KINDS = ("plugin-missing", "plugin-stalled", "auditd-missing")
WHO = "unknown (the watchdog sees what is, not who made it so)"
PROC = "/proc"


class Process:
    """One process as /proc shows it: pid, parent, state letter (T: stopped), name, argv,
    and its start in seconds since boot."""

    def __init__(self, pid: int, ppid: int, state: str, name: str, argv: List[str], start: float) -> None:
        self.pid, self.ppid, self.state, self.name = pid, ppid, state, name
        self.argv, self.start = argv, start

    @classmethod
    def read(cls, pid: int, proc: str = PROC) -> Optional["Process"]:
        try:
            with open(f"{proc}/{pid}/stat", "rb") as handle:
                stat = handle.read().decode("utf-8", "replace")
            with open(f"{proc}/{pid}/cmdline", "rb") as handle:
                argv = handle.read().decode("utf-8", "replace").split("\0")
        except OSError:
            return None  # gone meanwhile
        name, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        # Fields after the name: state ppid ... starttime (the 22nd field, the 20th here).
        start = int(rest[19]) / os.sysconf("SC_CLK_TCK")
        return cls(pid, int(rest[1]), rest[0], name, [a for a in argv if a], start)


def processes(proc: str = PROC) -> List[Process]:
    found = []
    for entry in os.listdir(proc):
        if entry.isdigit():
            process = Process.read(int(entry), proc)
            if process is not None:
                found.append(process)
    return found


def runs(process: Process, program: str, config: str) -> bool:
    """Whether process is this program (argv[0], or argv[1] under its interpreter) with this
    config (--config PATH, or the default)."""
    argv, program = process.argv, os.path.realpath(program)
    # Only a path with the program's name is resolved: resolving every process's would stat
    # files that the plugin's SELinux domain has no business with (and be denied, logged).
    name = os.path.basename(program)
    at = next((i for i, arg in enumerate(argv[:2])
               if os.path.basename(arg) == name and os.path.realpath(arg) == program), None)
    if at is None:
        return False
    given = DEFAULT_CONFIG
    for i, arg in enumerate(argv[at + 1:], at + 1):
        if arg == "--config" and i + 1 < len(argv):
            given = argv[i + 1]
        elif arg.startswith("--config="):
            given = arg.split("=", 1)[1]
    return os.path.realpath(given) == os.path.realpath(config)


class Verdict:
    """What the watchdog found: healthy, not judged yet (starting), or an outage of a kind
    (KINDS) with a summary for the Subject and the lines of what it found."""

    def __init__(self, kind: str, summary: str = "", what: Optional[List[str]] = None) -> None:
        self.kind, self.summary, self.what = kind, summary, what or []

    @property
    def outage(self) -> bool:
        return self.kind in KINDS


def judge(found: List[Process], program: str, config: str, status: Optional[dict], now: float,
          since_boot: float) -> Verdict:
    """The decision: found are the host's processes, status is status.json (None: none),
    now the time (epoch) and since_boot the uptime (the clock of Process.start). Without
    status.json no plugin has run with this spool yet (the role installs the watchdog
    before its handlers start the plugin): nothing to judge."""
    if status is None:
        return Verdict("starting")
    auditds = {p.pid: p for p in found if p.name == "auditd" and p.state not in "ZX"}
    mine = [p for p in found if runs(p, program, config) and p.state not in "ZX"]
    plugins = [p for p in mine if p.ppid in auditds]
    strays = [f"  pid {p.pid}, parent {p.ppid}, state {p.state}: {' '.join(p.argv)[:200]}"
              for p in mine if p.ppid not in auditds]
    if strays:
        strays = ["", "Processes of the plugin that auditd did not start:"] + strays
    if not auditds:
        return Verdict("auditd-missing", "auditd is not running, no alerts are mailed",
                       [("auditd is not running: no events are recorded and no alerts are mailed "
                         "until it starts again.")] + strays)
    if not plugins:
        if since_boot - max(p.start for p in auditds.values()) < SETTLE:
            return Verdict("starting")
        pids = ", ".join(str(pid) for pid in sorted(auditds))
        return Verdict("plugin-missing", "the alert plugin is not running under auditd",
                       [(f"auditd (pid {pids}) runs, but the alert plugin {program} is not one of its "
                         "processes: auditd gave up restarting it (max_restarts), or it was "
                         "stopped or killed. No alerts are mailed until auditd starts it again "
                         "(e.g. restart auditd).")] + strays)
    plugin = plugins[0]
    if plugin.state in "Tt":
        return Verdict("plugin-stalled", "the alert plugin is stopped",
                       [(f"The alert plugin (pid {plugin.pid}) runs under auditd but is stopped "
                         f"(state {plugin.state}: SIGSTOP, or a debugger): it reads and mails "
                         "nothing until it is continued (SIGCONT).")] + strays)
    ours = status is not None and status.get("pid") == plugin.pid
    updated = status.get("updated") if ours else None
    if not isinstance(updated, (int, float)):
        if since_boot - plugin.start < STALE_AFTER:
            return Verdict("starting")
        return Verdict("plugin-stalled", "the alert plugin writes no status",
                       [(f"The alert plugin (pid {plugin.pid}) runs under auditd but has not "
                         f"written its status.json for {since_boot - plugin.start:.0f} s since it "
                         "started: it is hung, or cannot write its spool.")] + strays)
    if now - updated > STALE_AFTER:
        return Verdict("plugin-stalled", "the alert plugin's status is stale",
                       [(f"The alert plugin (pid {plugin.pid}) runs under auditd but its "
                         f"status.json was last written {now - updated:.0f} s ago (its heartbeat "
                         f"rewrites it every {STATE_POLL:.0f} s; stale after {STALE_AFTER:.0f} s): "
                         "it is hung, or stopped.")] + strays)
    return Verdict("healthy")


def next_state(previous: Optional[dict], verdict: Verdict, boot: str, now: float) -> dict:
    """watchdog.json after this run: {"boot", "checked", "verdict" (this run's kind),
    "outage": null | {"kind", "since", "mailed"}}.
    An outage lasts until a healthy run; one of an earlier boot is over; a run that cannot
    judge (starting) keeps what was."""
    outage = previous.get("outage") if previous and previous.get("boot") == boot else None
    if not isinstance(outage, dict):
        outage = None
    if verdict.kind == "healthy":
        outage = None
    elif verdict.outage and outage is None:
        outage = {"kind": verdict.kind, "since": now, "mailed": False}
    return {"boot": boot, "outage": outage, "checked": now, "verdict": verdict.kind}


def must_mail(state: dict, verdict: Verdict) -> bool:
    """One mail per outage: this run's verdict is an outage that is not mailed yet."""
    return verdict.outage and state["outage"] is not None and not state["outage"]["mailed"]


def window_open(spool: Spool, log: Log, boot: str) -> bool:
    marker = spool.maintenance(log)
    return marker is not None and marker.covers(boot, uptime(), MAINTENANCE_EARLY, MAINTENANCE_LATE)


def read_status(spool: Spool) -> Optional[dict]:
    try:
        with open(spool.status_path, "rb") as handle:
            document = json.loads(handle.read(1 << 20).decode())
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def run_watchdog(config: Config, log: Log, program: str) -> int:
    """One check: 0 when healthy, not judged, or the outage is mailed (now or before); 1
    when the spool is unusable or the mail could not be delivered (the next run retries)."""
    if config.tamper is None:
        log.info("watchdog: tamper alerts are off ([tamper] enabled = no): nothing to mail")
        return 0
    spool = Spool(config.spool_dir)
    try:
        check_private_dir(spool.dir, follow=True)
    except OSError as err:
        log.error(f"watchdog: the spool {spool.dir} is unusable: {err}")
        return 1
    boot = boot_id()
    if window_open(spool, log, boot):
        log.info("watchdog: the role's maintenance window is open: not judged")
        return 0
    verdict = judge(processes(), os.path.realpath(program), config.path, read_status(spool),
                    time.time(), uptime())
    state = next_state(spool.read_watchdog(log), verdict, boot, time.time())
    code = 0
    if must_mail(state, verdict):
        tamper = Tamper(verdict.kind, verdict.summary, verdict.what, WHO, time.time())
        data = compose_tamper(config, config.tamper, tamper).as_bytes(policy=WIRE_POLICY)
        try:
            send(config, data)
            state["outage"]["mailed"] = True
            log.warning(f"watchdog: {verdict.summary}: mailed")
        except DeliveryError as err:
            log.error(f"watchdog: {verdict.summary}: the mail failed, the next run retries: {err}")
            code = 1
    try:
        spool.write_watchdog(json.dumps(state, sort_keys=True).encode())
    except OSError as err:
        log.error(f"watchdog: cannot write {spool.watchdog_path}: {err}")
        code = 1
    return code
