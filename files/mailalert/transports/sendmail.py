"""Delivery through a local sendmail program: an argument list, no shell, a time limit."""

# Python 3.6 (RHEL 8) has no list[str] or X | None in annotations: keep typing's names.
# ruff: noqa: UP006, UP035

import os
import signal
import subprocess
from typing import List, Tuple

from .. import HELD_SIGNALS
from ..config import Config
from ..text import escape_text
from . import DeliveryError, envelope

# The sysexits.h codes by which a sendmail says that it refuses the message. Not
# EX_UNAVAILABLE (69): postfix's sendmail exits with it while its daemon is down.
SENDMAIL_REFUSALS = {65: "EX_DATAERR", 67: "EX_NOUSER", 68: "EX_NOHOST"}
SENDMAIL_STDERR_MAX = 4096  # bytes of a sendmail's complaint read for the log


def send_sendmail(config: Config, data: bytes) -> None:
    """Pipe the message to sendmail: argument list, no shell, explicit recipients, -oi.
    Its exit status alone says whether it took the message."""
    sender, recipients = envelope(data)
    command = [config.sendmail, "-oi"]
    if sender:
        command += ["-f", sender]
    command += ["--"] + recipients
    status, stderr = _run_sendmail(config, command, data)
    if status != 0:
        refusal = SENDMAIL_REFUSALS.get(status)
        raise DeliveryError("{} exited with {}: {}{}".format(
            config.sendmail, status, escape_text(stderr.decode("utf-8", "replace").strip(), 300),
            f" ({refusal}: refused, a permanent failure)" if refusal else ""),
            permanent=refusal is not None)


def _run_sendmail(config: Config, command: List[str], data: bytes) -> Tuple[int, bytes]:
    """Run sendmail with the message on stdin, for at most `timeout` seconds; its exit
    status and (the start of) what it wrote to stderr. stderr goes to a pipe of our own,
    read after the exit: communicate() would wait for it to close, which a child left
    behind by sendmail (a queue runner holding stderr) delays past the exit, making a
    delivered mail look hung, and retried."""
    errors, errors_write = os.pipe()
    try:
        try:
            process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors_write,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, cwd="/", close_fds=True,
                # preexec_fn runs between fork and exec: _unblock_signals takes no lock.
                start_new_session=True, preexec_fn=_unblock_signals)  # noqa: PLW1509
        except OSError as err:
            raise DeliveryError(f"cannot run {config.sendmail}: {err}")
        finally:
            os.close(errors_write)
        try:
            process.communicate(data, timeout=config.timeout)  # writes stdin, waits for the exit
        except subprocess.TimeoutExpired:
            _kill_group(process)
            raise DeliveryError(f"{config.sendmail} did not finish within {config.timeout} s")
        os.set_blocking(errors, False)
        try:
            stderr = os.read(errors, SENDMAIL_STDERR_MAX)
        except BlockingIOError:  # nothing written, and a child still holds the pipe
            stderr = b""
        return process.returncode, stderr
    finally:
        os.close(errors)


def _unblock_signals() -> None:
    """In a child before exec: the plugin's threads keep HUP, TERM and INT blocked (see
    SignalWatcher), and a blocked mask would pass on to sendmail and what it starts."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_SIGNALS)


def _kill_group(process: subprocess.Popen) -> None:
    """Kill a hung sendmail and whatever it started, then reap it without waiting on pipes
    a grandchild may still hold open."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        if process.stdin:
            process.stdin.close()
    except OSError:
        pass
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
