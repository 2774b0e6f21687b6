"""Logging: the plugin's own problems go to syslog always, and to stderr too when somebody
can read it."""

import os
import sys
import syslog

from . import PROG
from .text import escape_text


class Log:
    """The plugin's own problems go to syslog (ident audisp-mailalert) and maybe stderr."""

    def __init__(self) -> None:
        self.to_stderr = False
        syslog.openlog(PROG, syslog.LOG_PID, syslog.LOG_DAEMON)

    def _emit(self, priority: int, message: str) -> None:
        message = escape_text(message, 1000)
        syslog.syslog(priority, message)
        if self.to_stderr:
            try:
                sys.stderr.write(f"{PROG}: {message}\n")
                sys.stderr.flush()
            except (OSError, ValueError):
                pass

    def error(self, message: str) -> None:
        self._emit(syslog.LOG_ERR, message)

    def warning(self, message: str) -> None:
        self._emit(syslog.LOG_WARNING, message)

    def info(self, message: str) -> None:
        self._emit(syslog.LOG_INFO, message)


def fstat_mode(fd: int) -> int:
    """The st_mode of an open file descriptor; 0 when it is closed."""
    try:
        return os.fstat(fd).st_mode
    except OSError:
        return 0


def stderr_is_useful() -> bool:
    """True unless stderr is closed or /dev/null (as when auditd starts the plugin)."""
    try:
        st = os.fstat(2)
        null = os.stat("/dev/null")
    except OSError:
        return False
    return (st.st_dev, st.st_ino) != (null.st_dev, null.st_ino)
