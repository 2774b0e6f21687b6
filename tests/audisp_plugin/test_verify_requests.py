"""Verification requests (`<spool>/verify/<pid>`, written by the audit_alert_verify module)
are honoured only while they are young and the process that wrote them runs: a request
left behind (the module ended by a signal that skips its `finally`) would otherwise tag
every later alert of a process whose parent got that pid, past the rate limit.

The requests are written with the module's own writer (plugins/module_utils/alert_plugin.py,
beside the files/ under test), for real processes; a pid is reused for real (the kernel's
ns_last_pid). The plugin runs as auditd starts it."""

import importlib.util
import os
import re
import subprocess
import time

import pytest
from conftest import (
    FILES,
    events_with_key,
    log_bytes,
    print_messages,
    run_plugin,
    write_config,
)

KEY = "amx-flood"
LIMITED = f"[limits]\nmax_mails = 1\n[rule flood]\nkeys = {KEY}\n"
SYSCALL_PPID_RE = re.compile(rb"^(type=SYSCALL .*? ppid=)\d+", re.MULTILINE)


def module_utils():
    """The modules' alert_plugin (standard library only), from the tree under test."""
    path = FILES.parent / "plugins" / "module_utils" / "alert_plugin.py"
    spec = importlib.util.spec_from_file_location("alert_plugin_under_test", str(path))
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def flood_from(pid: int) -> bytes:
    """The captured flood (one shell's events with KEY), as if that shell's parent were PID."""
    return SYSCALL_PPID_RE.sub(lambda found: found.group(1) + str(pid).encode(), log_bytes("flood"))


def sleeper() -> subprocess.Popen:
    return subprocess.Popen(["sleep", "300"])


def ended(process: subprocess.Popen) -> int:
    process.kill()
    process.wait()
    return process.pid


def spool_config(tmp_path) -> str:
    return f"[spool]\ndir = {tmp_path / 'spool'}\n" + LIMITED


def request(tmp_path, pid: int, token: str = "tok-123") -> str:
    (tmp_path / "spool").mkdir(mode=0o700, exist_ok=True)  # the plugin's, before the module runs
    return module_utils().write_verify_request(str(tmp_path / "spool"), pid, token)


def tagged_and_held(messages: list) -> tuple:
    alerts = [m for m in messages if m["X-Audit-Digest"] is None]
    return ({m["X-Audit-Verify"] for m in alerts}, len(alerts),
            sum(1 for m in messages if m["X-Audit-Digest"] is not None))


@pytest.fixture
def parent():
    process = sleeper()
    yield process
    process.kill()
    process.wait()


def test_the_request_of_the_running_writer_is_honoured(tmp_path, parent):
    """Every alert of the writer's children is tagged, neither held back nor counted."""
    request(tmp_path, parent.pid)
    data = flood_from(parent.pid)
    messages = print_messages(tmp_path, spool_config(tmp_path), data)
    tags, alerts, digests = tagged_and_held(messages)
    assert tags == {"tok-123"} and alerts == len(events_with_key(data, KEY)) and digests == 0
    assert os.path.exists(tmp_path / "spool" / "verify" / str(parent.pid))


def test_a_request_without_a_valid_token_is_ignored(tmp_path, parent):
    path = tmp_path / "spool" / "verify" / str(parent.pid)
    path.parent.mkdir(parents=True)
    start = module_utils().process_start(parent.pid)
    path.write_text(f"bad!token {start}\nX-Evil: 1\n")
    messages = print_messages(tmp_path, spool_config(tmp_path), flood_from(parent.pid))
    tags, alerts, digests = tagged_and_held(messages)
    assert tags == {None} and alerts == 1 and digests == 1
    assert all(m["X-Evil"] is None for m in messages)


def test_a_request_of_an_ended_process_is_not_honoured_and_is_removed(tmp_path):
    process = sleeper()
    path = request(tmp_path, process.pid)
    pid = ended(process)  # SIGKILL: what its finally never saw
    messages = print_messages(tmp_path, spool_config(tmp_path), flood_from(pid))
    tags, alerts, digests = tagged_and_held(messages)
    assert tags == {None} and alerts == 1 and digests == 1  # the rate limit holds
    assert not os.path.exists(path)


def reuse_pid(pid: int, attempts: int = 50) -> subprocess.Popen:
    """A new process with PID (which has ended): the kernel gives the pid after
    ns_last_pid to the next fork; another fork on the machine may come first, so retry."""
    for _attempt in range(attempts):
        try:
            with open("/proc/sys/kernel/ns_last_pid", "w") as handle:
                handle.write(str(pid - 1))
        except OSError as error:  # a container mounts /proc/sys read-only
            pytest.skip(f"cannot choose the next pid ({error}); the host's plugin suite runs this test")
        process = sleeper()
        if process.pid == pid:
            return process
        ended(process)
    pytest.skip(f"pid {pid} was not handed out again in {attempts} attempts")


def test_a_request_of_an_earlier_process_with_the_same_pid_is_not_honoured(tmp_path):
    writer = sleeper()
    path = request(tmp_path, writer.pid)
    time.sleep(0.02)  # a start time in clock ticks (10 ms): the next process starts later
    successor = reuse_pid(ended(writer))
    try:
        messages = print_messages(tmp_path, spool_config(tmp_path), flood_from(successor.pid))
    finally:
        ended(successor)
    tags, alerts, digests = tagged_and_held(messages)
    assert tags == {None} and alerts == 1 and digests == 1
    assert not os.path.exists(path)


def test_an_old_request_is_not_honoured_and_is_removed(tmp_path, parent):
    path = request(tmp_path, parent.pid)
    written = time.time() - 601  # past the bound (docs/plugin.md: 600 s)
    os.utime(path, (written, written))
    messages = print_messages(tmp_path, spool_config(tmp_path), flood_from(parent.pid))
    tags, alerts, digests = tagged_and_held(messages)
    assert tags == {None} and alerts == 1 and digests == 1
    assert not os.path.exists(path)


def test_the_plugin_removes_stale_requests_when_it_starts(tmp_path, parent, fake_sendmail):
    live = request(tmp_path, parent.pid)
    process = sleeper()
    gone = request(tmp_path, process.pid, "tok-gone")
    ended(process)
    config = write_config(tmp_path, f"[mail]\nto = root@example.com\nfrom = audit@example.com\n"
                          f"transport = sendmail\nsendmail = {fake_sendmail[0]}\n"
                          + spool_config(tmp_path))
    result = run_plugin(["--config", config], b"")
    assert result.returncode == 0, result.stderr.decode()
    assert not os.path.exists(gone)
    assert os.path.exists(live)


def test_the_module_writer_names_its_process_start(tmp_path, parent):
    """What the plugin compares: the second word is field 22 of /proc/PID/stat."""
    path = request(tmp_path, parent.pid)
    with open(f"/proc/{parent.pid}/stat") as handle:
        start = handle.read().rsplit(")", 1)[1].split()[19]
    with open(path) as handle:
        assert handle.read() == f"tok-123 {start}\n"
