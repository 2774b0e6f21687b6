"""What is accepted goes out: the Outbox spools it (or prints it), the Deliverer thread
delivers the spool with retries, back-off and quarantine."""

# Python 3.6 (RHEL 8) has no list[str] or X | None in annotations: keep typing's names.
# ruff: noqa: UP045

import queue
import sys
import threading
import time
from email.message import EmailMessage
from typing import Optional

from . import PROG
from .compose import WIRE_POLICY
from .config import Config
from .log import Log
from .spool import Spool
from .status import Status
from .transports import DeliveryError
from .transports.sendmail import send_sendmail
from .transports.smtp import SESSION_FACTOR, send_smtp

QUEUE_SIZE = 1000  # names handed to the delivery worker; beyond that it re-scans the spool
SHUTDOWN_DELIVERY = 10  # seconds (at least [mail] timeout) to deliver the queue at exit
UNSPOOLED_MAX = 1000  # alerts held in memory when the spool cannot take them...
UNSPOOLED_MAX_BYTES = 8 << 20  # ...and their bytes; beyond either, an alert is dropped


def send(config: Config, data: bytes) -> None:
    """One delivery attempt through the configured transport (DeliveryError, ValueError)."""
    if config.transport == "smtp":
        send_smtp(config, data)
    else:
        send_sendmail(config, data)


class Deliverer(threading.Thread):
    """The delivery worker: takes spooled names from a bounded queue and delivers them.
    A failure pauses all delivery (the transport is likely down) for retry_min seconds,
    doubling up to retry_max while failures go on; the failed message goes behind those
    that failed less often, so one message that always fails cannot block the others.
    Alerts the spool could not take come held in memory (hold), and are delivered alike."""

    def __init__(self, spool: Spool, status: Status, log: Log, config: Config) -> None:
        super().__init__(name="delivery", daemon=True)
        self.spool = spool
        self.status = status
        self.log = log
        self.config = config
        self.inbox = queue.Queue(QUEUE_SIZE)  # type: queue.Queue
        self.rescan = True  # the spool may hold more than the inbox: list it again
        self.stopping = False
        self.stop_deadline = 0.0
        self.pending = {}  # type: dict  # spool name -> failed attempts
        self.failures_in_a_row = 0
        self.paused_until = 0.0  # monotonic time
        self.lock = threading.Lock()  # guards unspooled, which the reading thread adds to
        self.unspooled = {}  # type: dict  # name -> message: accepted but not in the spool

    def hold(self, data: bytes) -> bool:
        """Take an alert the spool could not, to deliver it from memory; False (not taken)
        when UNSPOOLED_MAX alerts or UNSPOOLED_MAX_BYTES are held already."""
        with self.lock:
            if len(self.unspooled) >= UNSPOOLED_MAX or \
                    sum(map(len, self.unspooled.values())) + len(data) > UNSPOOLED_MAX_BYTES:
                return False
            name = self.spool.new_name()
            self.unspooled[name] = data
            held = len(self.unspooled)
        with self.status.lock:  # now: the worker may be busy with a hung delivery
            self.status.unspooled = held
            self.status.changed = True
        self.submit(name)
        return True

    def submit(self, name: str) -> None:
        try:
            self.inbox.put_nowait(name)
        except queue.Full:
            self.rescan = True

    def stop(self, deadline: float) -> None:
        self.stop_deadline = deadline
        self.stopping = True
        self.submit("")

    def run(self) -> None:
        while True:
            # Read before collecting: once stop() was called every name is in the inbox,
            # so this pass is the last one and misses none.
            last_pass = self.stopping
            self._collect()
            if time.monotonic() >= self.paused_until:
                # Fewest failed attempts first, then oldest first (names sort by time).
                for name in sorted(self.pending, key=lambda n: (self.pending[n], n)):
                    if self.stopping and time.monotonic() >= self.stop_deadline:
                        break
                    if not self._deliver(name):
                        break
            self._publish()
            if last_pass:
                self._spool_unspooled()
                self._publish()
                return  # what is left stays spooled for the next start
            if self.pending:
                self._wait(max(0.05, self.paused_until - time.monotonic()))
            else:
                self._wait(60.0)

    def _wait(self, seconds: float) -> None:
        try:
            name = self.inbox.get(timeout=min(seconds, 60.0))
        except queue.Empty:
            return
        if name:
            self.pending.setdefault(name, 0)

    def _collect(self) -> None:
        while True:
            try:
                name = self.inbox.get_nowait()
            except queue.Empty:
                break
            if name:
                self.pending.setdefault(name, 0)
        if self.rescan:
            self.rescan = False
            names = set(self.spool.names())
            with self.lock:
                names |= set(self.unspooled)
            for name in names:
                self.pending.setdefault(name, 0)
            for name in list(self.pending):
                if name not in names:
                    del self.pending[name]

    def _deliver(self, name: str) -> bool:
        """One attempt at one message. False: pause all delivery (a temporary failure, of the
        transport most likely). A message refused for good goes to bad/, the others go on."""
        try:
            data = self._message(name)
        except FileNotFoundError:
            self.pending.pop(name, None)  # gone (delivered by an earlier run): nothing to do
            self.spool.forget(name)
            return True
        except DeliveryError as err:
            return self._failed(name, err)
        except OSError as err:  # kept: an I/O error may pass, and the file is all there is
            return self._failed(name, DeliveryError(f"cannot read it: {err}"))
        try:
            send(self.config, data)
        except (DeliveryError, ValueError) as err:
            return self._failed(name, err if isinstance(err, DeliveryError) else DeliveryError(str(err)))
        self._delivered(name)
        return True

    def _message(self, name: str) -> bytes:
        with self.lock:
            data = self.unspooled.get(name)
        return self.spool.read(name) if data is None else data

    def _delivered(self, name: str) -> None:
        with self.lock:
            held = self.unspooled.pop(name, None)
        try:
            if held is None:
                self.spool.remove(name)
        except OSError as err:
            self.log.error(f"delivered {name} but cannot remove it: {err}")
        self.pending.pop(name, None)
        self.failures_in_a_row = 0
        with self.status.lock:
            self.status.last_delivery = time.time()
            self.status.changed = True

    def _failed(self, name: str, err: DeliveryError) -> bool:
        with self.status.lock:
            self.status.last_error = f"{name}: {err}"
            self.status.last_error_permanent = err.permanent
            self.status.changed = True
        if err.permanent and self._quarantine(name, err):
            return True
        self.pending[name] = self.pending.get(name, 0) + 1
        self.failures_in_a_row += 1
        delay = min(self.config.retry_max,
                    self.config.retry_min * 2 ** min(self.failures_in_a_row - 1, 30))
        self.paused_until = time.monotonic() + delay
        self.log.error(f"delivery of {name} failed (attempt {self.pending[name]}), "
                       f"next try in {delay} s: {err}")
        return False

    def _quarantine(self, name: str, err: DeliveryError) -> bool:
        """Move a message that no retry can deliver to bad/, out of the others' way."""
        with self.lock:
            held = self.unspooled.pop(name, None)
        try:
            if held is None:
                self.spool.move_to_bad(name)
            else:
                self.spool.add_bad(name, held)
        except OSError as failure:
            if held is not None:  # no retry can deliver it, and there is no room to keep it
                self.pending.pop(name, None)
                self._count_dropped(1, f"{name}, held in memory, failed for good ({err}) and "
                                       f"cannot be written to {self.spool.bad_dir}: {failure}")
                return True
            self.log.error(f"cannot move {name} to {self.spool.bad_dir}: {failure}")
            return False  # then it is retried like any failure, with the pause
        self.pending.pop(name, None)
        self.log.error(f"delivery of {name} failed for good, moved to {self.spool.bad_dir}: {err}")
        with self.status.lock:
            self.status.bad = self.spool.bad_count
            self.status.changed = True
        return True

    def _publish(self) -> None:
        """status.json's queue (spooled alerts waiting) and unspooled (held in memory)."""
        with self.lock:
            counts = (sum(1 for name in self.pending if name not in self.unspooled),
                      len(self.unspooled))
        with self.status.lock:
            if (self.status.queue, self.status.unspooled) != counts:
                self.status.queue, self.status.unspooled = counts
                self.status.changed = True

    def _spool_unspooled(self) -> None:
        """At exit: the alerts still held in memory go to the spool if it has room again;
        the others are lost."""
        with self.lock:
            held, self.unspooled = self.unspooled, {}
        lost = 0
        for data in held.values():
            try:
                self.spool.add(data)
            except OSError:
                lost += 1
        if lost:
            self._count_dropped(lost, f"{lost} alerts held in memory are lost at exit: "
                                      "the spool still cannot take them")

    def _count_dropped(self, count: int, message: str) -> None:
        self.log.error(message)
        with self.status.lock:
            self.status.dropped += count
            self.status.changed = True


class Outbox:
    """Where an accepted message goes: into the spool, and its name to the delivery worker;
    with --print (print_only), to stdout in mbox format instead (no spool, no worker). The
    reading thread never waits for mail: when the spool cannot take a message, the worker
    holds it in memory (Deliverer.hold); beyond that bound it is lost, and counted."""

    def __init__(self, spool: Spool, status: Status, log: Log, print_only: bool) -> None:
        self.spool = spool
        self.status = status
        self.log = log
        self.print_only = print_only
        self.deliverer: Optional[Deliverer] = None

    def open(self, config: Config) -> None:
        """Prepare the spool and start the delivery worker (OSError: the spool is unusable)."""
        if self.print_only:
            return
        self.spool.prepare()
        self.status.bad = self.spool.bad_count
        self.deliverer = Deliverer(self.spool, self.status, self.log, config)
        self.deliverer.start()

    def reconfigure(self, config: Config) -> None:
        if self.deliverer:
            self.deliverer.config = config

    def put(self, message: EmailMessage) -> None:
        if self.print_only:
            out = sys.stdout.buffer
            out.write(f"From {PROG} {time.asctime()}\n".encode())
            out.write(message.as_bytes(policy=WIRE_POLICY.clone(mangle_from_=True)))
            out.write(b"\n")
            out.flush()
            return
        data = message.as_bytes(policy=WIRE_POLICY)
        try:
            name = self.spool.add(data)
        except OSError as err:
            self._hold(data, err)
            return
        if self.deliverer:
            self.deliverer.submit(name)

    def _hold(self, data: bytes, err: OSError) -> None:
        """The spool cannot take an alert (disk full, read-only): the worker gets it in
        memory, so that this thread never waits for mail; beyond that bound it is lost."""
        if self.deliverer and self.deliverer.hold(data):
            self.log.error(f"cannot spool an alert ({err}); it is held in memory for delivery")
            return
        self.log.error(f"cannot spool an alert ({err}), and {UNSPOOLED_MAX} alerts or "
                       f"{UNSPOOLED_MAX_BYTES >> 20} MB are held in memory already: it is dropped")
        with self.status.lock:
            self.status.dropped += 1
            self.status.changed = True

    def close(self, timeout: int) -> None:
        """At exit: the worker gets a last chance to deliver (at least SHUTDOWN_DELIVERY
        seconds); what it cannot stays in the spool for the next start. An attempt begun
        just before the budget ends may take its own bound (an SMTP session SESSION_FACTOR
        times timeout)."""
        if self.deliverer:
            budget = max(timeout, SHUTDOWN_DELIVERY)
            self.deliverer.stop(time.monotonic() + budget)
            self.deliverer.join(budget + SESSION_FACTOR * timeout + 1)
