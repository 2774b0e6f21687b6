"""The plugin's main loop: reading, matching, limiting, accepting."""

# Python 3.6 (RHEL 8) has no list[str] or X | None in annotations: keep typing's names.
# ruff: noqa: UP006, UP035, UP045

import os
import select
import stat
import sys
import time
from typing import List, Optional, Tuple

from .auparse_feed import Feeder
from .compose import compose_alert, compose_digest, compose_tamper
from .conditions import has_conditions, left_out, read_values, record_values
from .config import Config, ConfigError, Rule, load_config
from .delivery import Outbox
from .events import (
    Event,
    Record,
    auparse,
    event_keys,
    read_event,
    rule_loads_only,
    timestamp,
)
from .framing import MAX_LINE, LineFramer
from .limits import RateLimiter
from .log import Log, fstat_mode
from .plugins_d import entry_active
from .sifter import (
    EOE_TIMEOUT,
    Candidates,
    EventSifter,
    key_pattern,
    mark_candidates,
)
from .signals import SignalWatcher
from .spool import Spool
from .status import Status, StatusFile
from .tamper import TAMPER_TYPES, Tamper
from .tamper_watch import TamperWatch
from .text import escape_text

TICK = 0.5  # seconds between timer duties (event aging, window ends, status file)
READ_SIZE = 65536
EXIT_DRAIN = 1.0  # seconds to read what auditd still sends after its SIGTERM
# The reference path: every line goes to auparse, as before the sifter (the differential
# test and `make bench` set it; benchmarks/plugin_feed_everything.py).
FEED_EVERYTHING = False


class Plugin:
    """The main thread: reads the audit stream (LineFramer, then EventSifter, then auparse),
    matches events to rules, and hands over: tamper events to the TamperWatch, alerts and
    findings through the RateLimiter to the Outbox. SignalWatcher and StatusFile serve the
    main loop."""

    def __init__(self, config: Config, log: Log, print_only: bool, arg_keys: List[str]) -> None:
        self.config = config
        self.log = log
        self.print_only = print_only
        self.arg_keys = arg_keys
        self.program = sys.argv[0]  # as auditd started it: its plugins.d entry names it
        self.pattern = key_pattern(config.rules, config.tamper is not None)
        self.candidates = Candidates()  # events whose key looked right, waiting for auparse
        self.limiter = RateLimiter()
        self.status = Status()
        self.spool = Spool(config.spool_dir)
        self.outbox = Outbox(self.spool, self.status, log, print_only)
        self.status_file = StatusFile(self.spool, self.status, log, print_only)
        self.signals = SignalWatcher()
        # auditd hands its plugins one end of a socket pair; a test or `cat log |` a pipe.
        self.under_auditd = not print_only and stat.S_ISSOCK(fstat_mode(0))
        self.tamper = TamperWatch(self.report_tamper, self.spool, self.status, print_only,
                                  self.under_auditd, log)
        self.tamper.excuse = self.tamper_excuse
        self.au = auparse.AuParser(auparse.AUSOURCE_FEED, None)
        if hasattr(self.au, "set_eoe_timeout"):
            self.au.set_eoe_timeout(EOE_TIMEOUT)
        # auparse takes a plain function, not a bound method. The fast path is inlined:
        # most events are rejected by a dict lookup on their time stamp.
        candidates = self.candidates
        ready = auparse.AUPARSE_CB_EVENT_READY

        def on_event(au, cb_type, _user_data):
            try:
                if cb_type == ready and candidates:
                    stamp = timestamp(au)
                    if stamp is not None and stamp in candidates:
                        self.on_candidate(au)
            except Exception as err:  # noqa: BLE001 - raised into auparse, it breaks feed()
                self.log.error(f"event skipped: {type(err).__name__}: {err}")

        self.au.add_callback(on_event, None)
        self.feeder = Feeder(self.au, log)
        # Which lines reach auparse: those of events that may match (the sifter), or all of
        # them (FEED_EVERYTHING, the reference for the differential test and `make bench`).
        self.feed_everything = FEED_EVERYTHING
        self.sifter = EventSifter(self.pattern, self.feeder.feed, self.candidates.mark)
        self.framer = LineFramer(self._feed_lines, self.status, log)

    # -- a HUP: the config anew
    def reload(self) -> None:
        try:
            config = load_config(self.config.path, self.arg_keys, self.config.required)
        except ConfigError as err:
            self.log.error(f"reload refused, the old config stays in force: {err}")
            return
        if config.spool_dir != self.config.spool_dir:
            self.log.warning("[spool] dir changes take effect at the next start")
            config.spool_dir = self.config.spool_dir
        self.config = config
        self.send_digests()  # a rule that is gone reports what it held back
        self.pattern = key_pattern(config.rules, config.tamper is not None)
        self.tamper.reconfigure(config.rules)
        self.outbox.reconfigure(config)
        self.status.changed = True
        self.log.info(f"config reloaded: {len(config.rules)} rules")

    # -- the main loop
    def run(self, stdin_fd: int = 0) -> int:
        self.signals.start()
        try:
            self.outbox.open(self.config)
        except OSError as err:
            self.log.error(f"cannot use the spool directory {self.spool.dir}: {err}")
            return 1
        self.log.info("started: {} rules, transport {}{}".format(
            len(self.config.rules), self.config.transport, " (print only)" if self.print_only else ""))
        previous = self.status_file.previous()
        self.resume(previous)
        if self.config.tamper is not None:
            self.tamper.at_start(previous)
            self.guarded(self.tamper.start, self.config.rules)
        self.guarded(self.send_digests)  # of windows that ended while no plugin ran
        try:
            while not self.signals.stop_requested:
                readable = select.select([stdin_fd, self.signals.wake_fd], [], [], TICK)[0]
                reload = self.signals.wake_fd in readable and self.signals.take()
                if stdin_fd in readable:
                    data = os.read(stdin_fd, READ_SIZE)
                    if not data:
                        break
                    self.guarded(self.framer.feed, data)
                if reload:
                    self.guarded(self.reload)
                self.guarded(self.tick)
        finally:
            self.shutdown(stdin_fd)
        return 0

    def guarded(self, step, *args) -> None:
        """Run one step of the loop; an unexpected error is logged, the plugin goes on
        (a plugin that exits makes auditd restart it, and stops alerting after a few)."""
        try:
            step(*args)
        except Exception as err:  # noqa: BLE001 - see docstring
            self.log.error(f"{step.__name__} failed: {type(err).__name__}: {err}")

    def tick(self) -> None:
        """Timer duties: age events (a lone event is not held until the next one),
        digest windows that ended, write status.json."""
        self.sifter.age(int(time.time()))  # auparse ages by time(NULL), whole seconds
        self.feeder.age()
        self.tamper.tick()
        self.send_digests()
        self.status_file.write(self.limiter, self.config.all_rules())

    def _feed_lines(self, lines: bytes) -> None:
        """Scan and feed complete lines (from the LineFramer: none longer than MAX_LINE)."""
        if self.feed_everything:
            mark_candidates(self.pattern, lines, self.candidates.mark)
            self.feeder.feed(lines)
        else:
            self.sifter.pattern = self.pattern  # a reload may have changed the keys
            self.sifter.sift(lines)

    def finish_input(self) -> None:
        """End of input: a last line without its newline still counts; auparse hands over
        every event it still holds."""
        self.framer.finish()
        self.sifter.finish()
        self.feeder.flush()
        if self.sifter.fallbacks:
            self.log.info(f"the event buffer was full {self.sifter.fallbacks} times: its events "
                          "went to auparse as a whole")
        if self.status.long_lines:
            self.log.warning(f"input lines longer than {MAX_LINE} bytes dropped: {self.status.long_lines}")

    def on_candidate(self, au) -> None:
        stamp = timestamp(au)
        try:
            record_type, keys = event_keys(au)
            if keys or record_type in TAMPER_TYPES:  # the part with the candidate record
                self.candidates.done(stamp)
            self.handle(au)
        except Exception as err:  # noqa: BLE001 - a bad event must never stop the plugin
            self.log.error(f"event {stamp.serial} skipped: {type(err).__name__}: {err}")

    def handle(self, au) -> None:
        record_type, keys = event_keys(au)
        if record_type in TAMPER_TYPES:
            # Loading a watch is no alert; removing it, or switching auditing off, may be a
            # tamper finding. Rule loads alone (most CONFIG_CHANGE events) are passed over.
            if self.config.tamper is not None and (record_type != "CONFIG_CHANGE" or not rule_loads_only(au)):
                ended = self.tamper.auditd_ended
                self.tamper.read(au, self.config.rules)
                if self.tamper.auditd_ended and not ended:  # now: a KILL may follow at once
                    self.status_file.write(self.limiter, self.config.all_rules(), force=True)
            return
        matches = []
        for rule in self.config.rules:
            key = next((k for k in rule.keys if k in keys), None)
            if key is not None:
                matches.append((rule, key))
        conditional = [rule for rule, _key in matches if has_conditions(rule)]
        if conditional:  # only the fields the conditions name, searched by auparse
            values = read_values(au, conditional, node=self.print_only)
            matches = [(rule, key) for rule, key in matches if not self.left_out(rule, key, values, au)]
        if not matches:
            return
        event = read_event(au)
        token = self.spool.verify_token(event.ppid, self.log) if event.ppid else None
        for rule, key in matches:
            self.accept(rule, key, event, token)

    def left_out(self, rule: Rule, key: str, values: dict, au) -> bool:
        """Whether a condition of the rule leaves this event out: then it is counted under
        the rule (status.json's ignored), and with --print said on stderr, never mailed."""
        reason = left_out(rule, values) if has_conditions(rule) else None
        if reason is None:
            return False
        self.count_ignored(rule.name)
        if self.print_only:
            stamp = timestamp(au)
            self.say(f"not mailed: event {stamp.sec}.{stamp.milli:03d}:{stamp.serial}@{values['node'][0]} "
                     f"key {key} rule {rule.name}: {reason}")
        return True

    def tamper_excuse(self, records: List[Record]) -> Optional[str]:
        """TamperWatch asks whether the tamper rule's ignore excuses an event's findings."""
        rule = self.config.tamper
        if rule is None or not rule.ignore:
            return None
        return left_out(rule, record_values(records, [rule]))

    def count_ignored(self, name: str) -> None:
        with self.status.lock:
            self.status.ignored[name] = self.status.ignored.get(name, 0) + 1
            self.status.changed = True

    @staticmethod
    def say(text: str) -> None:
        """One line on stderr (--print): what a user testing conditions wants to see."""
        sys.stderr.write(escape_text(text, 2000) + "\n")
        sys.stderr.flush()

    def accept(self, rule: Rule, key: str, event: Event, token: Optional[str]) -> None:
        """Rate-limit, compose, and spool (or print) one alert."""
        if self.admit(rule, (event.subject, event.action, event.object), token):
            self.outbox.put(compose_alert(self.config, rule, key, event, token))

    def admit(self, rule: Rule, group: Tuple[str, str, str], token: Optional[str]) -> bool:
        """Whether the rule may mail now (RateLimiter). Verification mails are neither
        counted nor held back. A window that the event finds ended is digested first."""
        if token is not None:
            return True
        admitted = self.limiter.admit(rule, group, time.time())
        self.status.changed = True
        self.send_digests()
        return admitted

    def report_tamper(self, finding: Tamper) -> None:
        """TamperWatch's report: a finding is accepted as an alert is, under the tamper rule."""
        rule = self.config.tamper
        if rule is not None and self.admit(rule, (finding.who, finding.kind, finding.summary), finding.token):
            self.outbox.put(compose_tamper(self.config, rule, finding))

    def send_digests(self, force: bool = False) -> None:
        """Mail the digests that are due (all of them when forced, at the last end). Once a
        digest is in the spool, status.json says so at once: a plugin killed right after
        must not leave its held-back count for the next one to digest again."""
        digests = self.limiter.digests(self.config.all_rules(), time.time(), force)
        for digest in digests:
            self.outbox.put(compose_digest(self.config, digest.rule, digest.held, digest.window_end))
            self.log.info(f"rule {digest.rule.name}: digest of {digest.held.total} held-back events")
            self.status.changed = True
        if digests:
            self.status_file.write(self.limiter, self.config.all_rules(), force=True)

    def resume(self, previous: dict) -> None:
        """Go on with the rate-limit windows of the plugin before this one (status.json):
        an auditd reload or restart neither ends a window early nor loses what it held back.
        A rule that is gone from the config gets the digest of what it held, to [mail] to."""
        rows = previous.get("rules")
        if not isinstance(rows, dict):
            return
        rules = {rule.name: rule for rule in self.config.all_rules()}
        for name, row in rows.items():
            if name not in rules and isinstance(row, dict) and isinstance(row.get("keys"), list):
                rules[name] = Rule(name, [str(k) for k in row["keys"]], self.config.to, 0, 0)
        resumed = self.limiter.resume(rows, rules)
        if resumed:
            self.status.changed = True
            self.log.info(f"rate-limit windows of the plugin before this one resumed: {', '.join(sorted(resumed))}")

    def _drain(self, stdin_fd: int) -> None:
        """Read what is left on stdin, up to EOF or for at most EXIT_DRAIN seconds."""
        deadline = time.monotonic() + EXIT_DRAIN
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([stdin_fd], [], [], left)[0]:
                return
            data = os.read(stdin_fd, READ_SIZE)
            if not data:
                return
            self.guarded(self.framer.feed, data)

    def shutdown(self, stdin_fd: int) -> None:
        """EOF or SIGTERM: finish the events auparse holds, say whether the end is a tamper
        finding, digest every window, then give the worker a last chance to deliver; what
        it cannot stays in the spool."""
        if self.signals.stop_sender is not None and self.under_auditd:
            self._drain(stdin_fd)  # a stopping auditd sends DAEMON_END just before SIGTERM
        self.finish_input()
        entry = entry_active(self.program) if self.under_auditd else None
        if self.config.tamper is not None:
            self.tamper.at_exit(self.signals.stop_sender, self.signals.stop_time or time.time(), entry)
        # Every window is digested now when no plugin goes on with them: at the end of a
        # replay, or when auditd will not start this one again (its entry removed or
        # deactivated). Else the next one resumes them from status.json (docs/plugin.md).
        self.send_digests(force=not self.under_auditd or entry is False)
        self.outbox.close(self.config.timeout)
        self.status.running = False  # a clean end: the next plugin has nothing to report
        self.status_file.write(self.limiter, self.config.all_rules(), force=True)
        self.log.info("stopped")
