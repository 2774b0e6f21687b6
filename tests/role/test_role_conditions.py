"""Rule conditions (issue #24) through the role on this host's real auditd, dma delivering
to /var/mail/root: a `match: {success: "no"}` watch mails nobody's refused read and not
root's successful one; an `ignore: [{auid: unset}]` watch is quiet for a write without a
login user and mails the same write under a login uid; the tamper rule's ignore excuses
auditctl without a login session (its record and the kernel state's finding of the same
change) and not the same removal by a login user. "Not mailed" is asserted once the
plugin counted the event (status.json `ignored`) and a later event was mailed, never after
a fixed sleep. The role's refusals of bad conditions: tests_refused_input.yml
(test_role.py::test_refused_input_changes_nothing)."""

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from polling import wait_for
from tamper_mail import mta_idle, plugin_status, subjects, tamper_mails
from test_role import BUILD, LOCK, alerts, playbook

WORK = Path("/var/tmp/amr-cond")
SECRET = WORK / "secret"
WRITTEN = WORK / "written"
TIMEOUT = 60
# A login uid for a child: writing /proc/self/loginuid needs CAP_AUDIT_CONTROL (root) and
# an unset one (this test's own); daemon (1) exists on every Debian and RHEL host.
AS_DAEMON = "echo 1 > /proc/self/loginuid && exec "


@pytest.fixture(scope="module")
def host():
    if os.geteuid() != 0:
        pytest.skip("needs root to drive the host's auditd")
    if shutil.which("sendmail", path="/usr/sbin:/usr/bin") is None:
        pytest.fail("no MTA: /usr/sbin/sendmail is missing (install dma, see mk/apt-packages)")
    if not (BUILD / "ansible_collections/linux_audit/mail_alert/roles").is_dir():
        pytest.fail("no collection tree: run `make collection-tree` (make test-role does)")
    if Path("/proc/self/loginuid").read_text().strip() != "4294967295":
        pytest.skip("the test runs with a login uid: its own commands would not be auid unset")
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        WORK.mkdir(mode=0o755, exist_ok=True)
        SECRET.write_text("secret\n")
        SECRET.chmod(0o600)
        WRITTEN.write_text("")
        clean = playbook("absent.yml")
        assert clean.rc == 0, clean
        try:
            run = playbook("converge.yml", "-e", "role_vars_file=vars_conditions.yml")
            assert run.rc == 0, run
            yield
        finally:
            playbook("absent.yml")
            shutil.rmtree(WORK, ignore_errors=True)


def ignored(rule):
    return plugin_status().get("rules", {}).get(rule, {}).get("ignored", 0)


def run(command):
    subprocess.run(["bash", "-c", command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


def the_new_alert(key, before):
    """Wait for a new alert with key after the first `before`; the only new one."""
    wait_for(lambda: len(alerts(key)) > before, TIMEOUT, f"an alert with key {key}")
    wait_for(mta_idle, TIMEOUT, "dma to deliver")
    new = alerts(key)[before:]
    assert len(new) == 1, [m["Subject"] for m in new]
    return new[0]


def test_a_failed_read_is_mailed_and_a_successful_one_is_not(host):
    before, counted = len(alerts("amr-cond-fail")), ignored("amr-cond-fail")
    run(f"cat {SECRET}")
    wait_for(lambda: ignored("amr-cond-fail") > counted, TIMEOUT, "the plugin to leave root's read out")
    run(f"setpriv --reuid=65534 --regid=65534 --clear-groups cat {SECRET}")
    mail = the_new_alert("amr-cond-fail", before)
    assert "nobody" in mail["Subject"] or "nobody" in mail.as_string(), mail.as_string()
    assert ignored("amr-cond-fail") == counted + 1


def test_a_write_without_a_login_user_is_not_mailed_and_one_with_is(host):
    before, counted = len(alerts("amr-cond-login")), ignored("amr-cond-login")
    run(f"touch {WRITTEN}")
    wait_for(lambda: ignored("amr-cond-login") > counted, TIMEOUT, "the plugin to leave the write out")
    run(AS_DAEMON + f"touch {WRITTEN}")
    mail = the_new_alert("amr-cond-login", before)
    assert "daemon" in mail["Subject"] or "daemon" in mail.as_string(), mail.as_string()
    assert ignored("amr-cond-login") == counted + 1


def removal(path, perm, key):
    return f"auditctl -d always,exit -F path={path} -F perm={perm} -F key={key}"


def test_the_tamper_ignore_excuses_its_actor_and_no_other(host):
    before, counted = len(tamper_mails()), ignored("tamper")
    reads = plugin_status().get("state_reads", 0)
    run(removal(WRITTEN, "wa", "amr-cond-login"))
    wait_for(lambda: ignored("tamper") > counted, TIMEOUT, "the plugin to excuse auditctl")
    # The kernel's state shows the removal too: two more reads of it judged that finding.
    wait_for(lambda: plugin_status().get("state_reads", 0) >= reads + 2, TIMEOUT, "two reads of the state")
    wait_for(mta_idle, TIMEOUT, "dma to deliver")
    assert tamper_mails()[before:] == [], subjects(tamper_mails()[before:])
    run(AS_DAEMON + removal(SECRET, "r", "amr-cond-fail"))
    wait_for(lambda: len(tamper_mails()) > before, TIMEOUT, "the tamper mail of daemon's removal")
    wait_for(mta_idle, TIMEOUT, "dma to deliver")
    new = tamper_mails()[before:]
    assert [m["X-Audit-Tamper"] for m in new] == ["rules-removed"], subjects(new)
    body = new[0].as_string()
    assert "auid=daemon" in body and "amr-cond-fail" in body, body
    assert ignored("tamper") == counted + 1
