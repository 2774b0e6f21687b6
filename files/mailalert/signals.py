"""HUP, TERM and INT taken by a thread of their own, with their sender."""

# Python 3.6 (RHEL 8) has no list[str] or X | None in annotations: keep typing's names.
# ruff: noqa: UP045

import os
import queue
import signal
import threading
import time
from typing import Optional

from . import HELD_SIGNALS


class SignalWatcher(threading.Thread):
    """HUP, TERM and INT stay blocked in every thread; this one takes them with sigwaitinfo,
    which, unlike a handler, tells who sent each (a kill of the plugin is a tamper finding).
    It wakes the main loop through a pipe (wake_fd); the main loop then calls take(), which
    turns what came into requests: a reload (HUP), or the stop (TERM, INT) and its sender."""

    def __init__(self) -> None:
        super().__init__(name="signals", daemon=True)
        self.received = queue.Queue()  # type: queue.Queue
        self.wake_fd = -1  # the pipe's end the main loop waits on (start() opens it)
        self.wake_write = -1
        self.stop_requested = False
        self.stop_sender: Optional[tuple] = None  # (pid, uid) of the SIGTERM's sender
        self.stop_time = 0.0

    def start(self) -> None:
        """Block the signals (one that came since start-up is taken now) and start taking
        them. Before any other thread or child: they inherit the mask."""
        signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)  # main() did, a test may not
        self.wake_fd, self.wake_write = os.pipe()
        os.set_blocking(self.wake_fd, False)
        os.set_blocking(self.wake_write, False)
        super().start()

    def run(self) -> None:
        while True:
            self.received.put(signal.sigwaitinfo(HELD_SIGNALS))
            try:
                os.write(self.wake_write, b"s")
            except BlockingIOError:  # the pipe is full: the main loop is awake anyway
                pass

    def take(self) -> bool:
        """wake_fd woke the main loop: note the signals received since the last call.
        True when a HUP came (reload the config); a stop sets stop_requested."""
        try:
            os.read(self.wake_fd, 512)
        except BlockingIOError:
            pass
        reload = False
        while True:
            try:
                info = self.received.get_nowait()
            except queue.Empty:
                return reload
            if info.si_signo == signal.SIGHUP:
                reload = True
            elif not self.stop_requested:
                self.stop_requested = True
                self.stop_sender = (info.si_pid, info.si_uid)
                self.stop_time = time.time()
