"""Fixtures shared by every pytest suite of the collection."""

import contextlib
import fcntl
import os
import shutil
import subprocess

import pytest

# The host has one auditd and one kernel audit rule list: tests that touch them take this
# lock, so that two suites (or two developers' runs) never reconfigure auditd at once.
HOST_AUDITD_LOCK = "/run/lock/audit-mail-alert-host.lock"
AUDITD_START_TIMEOUT = 20  # seconds


def _ensure_auditd_running() -> None:
    """A fresh machine has auditd installed but not started (no systemd to start it); a
    machine whose auditd was killed still has the dead pid registered in the kernel."""
    # Imported here, not at the top: ansible-test units loads this conftest too, from a
    # copy of the collection where tests/ is not on sys.path.
    from host_auditd import auditd_running
    from polling import wait_for

    if auditd_running():
        return
    subprocess.run(["service", "auditd", "start"], check=True, capture_output=True)
    wait_for(auditd_running, AUDITD_START_TIMEOUT, "auditd to register with the kernel", 0.1)


@pytest.fixture
def host_auditd():
    """Hold the host auditd lock for the test's duration, with auditd running.

    Skips with a reason where the host cannot run auditd (not root, no auditctl)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to drive the host's auditd")
    if shutil.which("auditctl") is None:
        pytest.skip("auditctl is not installed (Debian package auditd)")
    with _host_auditd_lock():
        _ensure_auditd_running()
        yield


@pytest.fixture
def host_auditd_config():
    """Hold the host auditd lock for the test's duration, for a test that writes auditd's
    configuration (an entry in /etc/audit/plugins.d) and needs no auditd running: no other
    suite reloads the host's auditd meanwhile, so it never reads what the test writes.

    Skips with a reason where /etc/audit/plugins.d cannot be written (not root, no auditd
    package); runs in a container too."""
    if os.geteuid() != 0:
        pytest.skip("needs root to write /etc/audit/plugins.d")
    if not os.path.isdir("/etc/audit/plugins.d"):
        pytest.skip("/etc/audit/plugins.d is missing (Debian package auditd)")
    with _host_auditd_lock():
        yield


@contextlib.contextmanager
def _host_auditd_lock():
    os.makedirs(os.path.dirname(HOST_AUDITD_LOCK), exist_ok=True)
    with open(HOST_AUDITD_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
