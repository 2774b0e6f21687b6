"""audit_alert_verify against the real chain (conftest.py): it succeeds on a working chain,
and for each hop, broken for real, it fails naming exactly that hop."""

from __future__ import annotations

import json
import mailbox
import os
import pwd
import re
import shutil
import signal
import subprocess
import uuid

import pytest
from realchain import (
    ANSIBLE,
    AUDITD_CONF,
    COLLECTIONS,
    DMA_CONF,
    MAILBOX,
    PLUGINS_D,
    run,
    wait_for,
)


def assert_fails_at(result: dict, hop: str) -> None:
    assert result["failed"], result
    assert f"(hop {hop})" in result["msg"], result["msg"]
    first_broken = next(item["name"] for item in result["hops"] if not item["ok"])
    assert first_broken == hop, result["hops"]


def mailbox_headers(key: str) -> list[dict]:
    """The alert headers in /var/mail/root for KEY, read with the mailbox package."""
    box = mailbox.mbox(MAILBOX, create=False)
    try:
        return [dict(message.items()) for message in box if message["X-Audit-Key"] == key]
    finally:
        box.close()


def logged_runs(chain) -> list[str]:
    """TIME:SERIAL of the logged executions of the watched program with the chain's key."""
    found = run("ausearch", "--input-logs", "-k", chain.key, "--format", "raw", check=False).stdout
    return sorted(set(re.findall(rf'^type=SYSCALL msg=audit\((\d+\.\d+:\d+)\):.* exe="{chain.watched}"',
                                 found, flags=re.MULTILINE)))


def test_working_chain_proves_the_alert(chain):
    result = chain.verify()
    assert not result["failed"], result.get("msg")
    assert result["changed"] is False
    # The mbox's mtime comes from the kernel's coarse clock (a few ms behind time.time()),
    # so a local delivery within that tick reads as 0.0 (seen once with dma here).
    assert 0 <= result["latency"] < 15
    assert all(item["ok"] for item in result["hops"])
    # The event the module names is the one auditd logged for our key, and the mail in the
    # mailbox is the alert for that event, marked with the module's token.
    assert logged_runs(chain) == [result["event"]]
    [alert] = mailbox_headers(chain.key)
    assert alert["X-Audit-Event"].startswith(result["event"] + "@")
    assert alert["X-Audit-Verify"] == result["token"]
    assert alert["Message-ID"] == result["message_id"]
    assert not os.listdir(chain.spool / "verify")  # the request was removed
    print(f"latency {result['latency']} s for event {result['event']}")


def test_run_as_names_the_user_in_the_event(chain):
    result = chain.verify(run_as="nobody")
    assert not result["failed"], result.get("msg")
    raw = run("ausearch", "--input-logs", "-a", result["event"].split(":")[1],
              "--format", "raw").stdout
    syscall = next(line for line in raw.splitlines() if line.startswith("type=SYSCALL"))
    assert f" uid={pwd.getpwnam('nobody').pw_uid} " in syscall


def test_check_mode_runs_nothing(chain):
    result = chain.verify(check_mode=True)
    assert not result["failed"], result.get("msg")
    assert result["command"] == [str(chain.watched)]
    assert all(item["ok"] for item in result["hops"])
    assert logged_runs(chain) == []
    assert not (chain.spool / "verify").exists() or not os.listdir(chain.spool / "verify")


def test_rule_not_loaded(chain):
    chain.delete_rule()
    assert_fails_at(chain.verify(), "rule_loaded")


def test_auditd_not_running(chain):
    run("service", "auditd", "stop")
    assert_fails_at(chain.verify(), "auditd_running")


def test_event_not_logged(chain):
    # auditd still hands events to its plugins but writes no log: ausearch cannot find it.
    AUDITD_CONF.write_text(re.sub(r"(?m)^write_logs\s*=.*$", "write_logs = no",
                                  AUDITD_CONF.read_text()))
    chain.restart_auditd()
    chain.load_rule()
    chain.wait_plugin()
    result = chain.verify(timeout=5)
    assert_fails_at(result, "event_logged")
    # Only the log is missing: the plugin did mail the alert.
    wait_for(lambda: mailbox_headers(chain.key), what="the alert of the unlogged event")


def test_plugin_not_configured(chain):
    chain.write_plugins_d(active="no")
    chain.restart_auditd()
    chain.load_rule()
    wait_for(lambda: not chain.plugin_pids(), what="the plugin to be gone")
    assert_fails_at(chain.verify(), "plugin_configured")


def test_plugin_not_running(chain):
    # A config the INI parser reads but the plugin refuses: auditd's restarts of the plugin
    # exit at once, until auditd gives up on it.
    chain.write_config(extra="timeout = never\n")
    for pid in chain.plugin_pids():
        os.kill(pid, 15)
    wait_for(lambda: not chain.plugin_pids(), timeout=30, what="auditd to give up the plugin")
    assert_fails_at(chain.verify(), "plugin_running")


def test_plugin_not_configured_for_the_key(chain):
    chain.write_config(keys="some-other-key")
    chain.hup_plugin()
    assert_fails_at(chain.verify(), "plugin_key")


def test_rate_limit_holds_ordinary_alerts_but_never_the_verification(chain):
    chain.write_config(max_mails=1)
    chain.hup_plugin()
    for run_number in range(3):  # one alert sent, two held back
        subprocess.run([str(chain.watched), str(run_number)], check=True)
    wait_for(lambda: chain.status()["rules"]["modtest"]["held"] >= 2, what="alerts held back")
    # An ordinary alert (no verification request) is held back: the module says so.
    assert_fails_at(chain.verify(verify_marker=False, timeout=5), "rate_limit")
    held = chain.status()["rules"]["modtest"]["held"]
    # The verification alert passes the saturated limit and is not counted against it.
    result = chain.verify()
    assert not result["failed"], result.get("msg")
    status = chain.status()["rules"]["modtest"]
    assert status["held"] == held and status["sent"] == 1


def test_mail_not_handed_to_the_mta(chain):
    failing = chain.dir / "sendmail-tempfail"
    failing.write_text("#!/bin/sh\ncat >/dev/null\nexit 75\n")
    failing.chmod(0o755)
    chain.write_config(sendmail=failing)
    chain.hup_plugin()
    result = chain.verify(timeout=5)
    assert_fails_at(result, "plugin_delivery")
    assert str(chain.spool / "queue") in result["msg"]


def test_mail_still_in_the_mta_queue(chain):
    # dma keeps every mail in its queue until `dma -q` (the fixture runs it afterwards).
    DMA_CONF.write_text(DMA_CONF.read_text() + "\nDEFER\n")
    assert_fails_at(chain.verify(timeout=5), "mta_queue")


def test_mailbox_not_writable(chain):
    if not os.path.exists(MAILBOX):
        subprocess.run(["sendmail", "root"], input=b"Subject: create the mailbox\n\n.\n", check=True)
        wait_for(lambda: os.path.exists(MAILBOX), what="dma to create the mailbox")
    flagged = run("chattr", "+i", MAILBOX, check=False)  # the fixture removes the flag
    if flagged.returncode != 0:
        pytest.skip(f"the file system of {MAILBOX} has no immutable flag: {flagged.stderr}")
    result = chain.verify()
    assert_fails_at(result, "mailbox_writable")
    assert "immutable" in result["msg"]


def test_mailbox_not_written(chain, tmp_path):
    # The chain delivers to /var/mail/root; the mailbox the module watches never gets it.
    elsewhere = tmp_path / "other.mbox"
    elsewhere.write_text("")
    assert_fails_at(chain.verify(mailbox=str(elsewhere), timeout=5), "mailbox")


def children_running(argv: list[str]) -> list[tuple[int, int]]:
    """(pid, ppid) of the processes whose command line is exactly ARGV."""
    wanted = "\0".join(argv).encode() + b"\0"
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                if handle.read() != wanted:
                    continue
            with open(f"/proc/{entry}/stat", "rb") as handle:
                found.append((int(entry), int(handle.read().rsplit(b")", 1)[1].split()[1])))
        except (OSError, ValueError):
            continue
    return found


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_that_ends_the_module_removes_its_request(chain, number):
    """SIGTERM and SIGHUP (a cancelled task, a lost connection) skip a `finally`: the module
    removes its verification request on them too, then ends by the signal."""
    command = [shutil.which("sleep"), f"{uuid.uuid4().int % 1000 + 300}.{os.getpid()}"]
    args = {"command": command, "key": chain.key, "timeout": 30, "plugin_conf": str(PLUGINS_D)}
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_LOCALHOST_WARNING="0")
    ansible = subprocess.Popen([ANSIBLE, "localhost", "-m", "linux_audit.mail_alert.audit_alert_verify",
                                "-a", json.dumps(args)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, env=env)
    try:
        [(_child, module)] = wait_for(lambda: children_running(command), timeout=60,
                                      what="the module to run its command")
        request = chain.spool / "verify" / str(module)
        assert request.exists(), "the module writes its request before the command"
        os.kill(module, number)
        output = ansible.communicate(timeout=60)[0].decode()
    finally:
        for pid, _parent in children_running(command):
            os.kill(pid, signal.SIGKILL)
        if ansible.poll() is None:
            ansible.kill()
            ansible.wait()
    assert "FAILED" in output or "UNREACHABLE" in output, output  # the module did not finish
    assert not request.exists(), f"request left behind after signal {number}"
    assert os.listdir(chain.spool / "verify") == []
