"""Fixtures shared by every pytest suite of the collection."""

import fcntl
import os
import re
import shutil
import subprocess
import time

import pytest

# The host has one auditd and one kernel audit rule list: tests that touch them take this
# lock, so that two suites (or two developers' runs) never reconfigure auditd at once.
HOST_AUDITD_LOCK = "/run/lock/audit-mail-alert-host.lock"
AUDITD_START_TIMEOUT = 20  # seconds


def _auditd_pid() -> int:
    """The pid the kernel reports for its audit daemon (0: none), from `auditctl -s`."""
    status = subprocess.run(["auditctl", "-s"], capture_output=True, text=True, check=True).stdout
    found = re.search(r"^pid (\d+)$", status, re.MULTILINE)
    return int(found.group(1)) if found else 0


def _is_live_auditd(pid: int) -> bool:
    """Whether pid is a running (not zombie) auditd. The kernel keeps reporting the pid of
    an auditd that was killed until its next message to it fails, so pid alone can lie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            name, state = re.match(r"\d+ \((.*)\) (\S)", stat.read()).groups()
    except (OSError, AttributeError):
        return False
    return name == "auditd" and state not in "ZX"


def _ensure_auditd_running() -> None:
    """A fresh machine has auditd installed but not started (no systemd to start it); a
    machine whose auditd was killed still has the dead pid registered in the kernel."""
    if _is_live_auditd(_auditd_pid()):
        return
    subprocess.run(["service", "auditd", "start"], check=True, capture_output=True)
    deadline = time.monotonic() + AUDITD_START_TIMEOUT
    while not _is_live_auditd(_auditd_pid()):
        if time.monotonic() > deadline:
            pytest.fail(f"auditd did not register with the kernel within {AUDITD_START_TIMEOUT} s")
        time.sleep(0.1)


@pytest.fixture
def host_auditd():
    """Hold the host auditd lock for the test's duration, with auditd running.

    Skips with a reason where the host cannot run auditd (not root, no auditctl)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to drive the host's auditd")
    if shutil.which("auditctl") is None:
        pytest.skip("auditctl is not installed (Debian package auditd)")
    os.makedirs(os.path.dirname(HOST_AUDITD_LOCK), exist_ok=True)
    with open(HOST_AUDITD_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _ensure_auditd_running()
        yield
