"""The watchdog on the VM (docs/plugin.md, "Tamper alerts"): the role enabled its timer;
with the plugin stopped (SIGSTOP), the watchdog's service, started directly rather than
waited for from the timer, mails exactly one tamper finding however often it runs, and
none more once the plugin is continued (SIGCONT). On the SELinux VM the service runs
without a denial. Runs after test_tamper.py (file order)."""

import json
import re

from test_alert import MAILBOX, read_mbox
from test_selinux import DOMAIN, wait_for

SPOOL = "/var/spool/audisp-mailalert"
SERVICE = "audisp-mailalert-watchdog.service"
TIMER = "audisp-mailalert-watchdog.timer"
WATCHDOG_KINDS = ("plugin-missing", "plugin-stalled", "auditd-missing")


def watchdog_mails(host):
    return [m for m in read_mbox(host, MAILBOX) if m["X-Audit-Tamper"] in WATCHDOG_KINDS]


def run_watchdog(host):
    """One run of the oneshot service (systemctl start returns when it has ended)."""
    host.run_expect([0], f"systemctl start {SERVICE}")
    result = host.check_output(f"systemctl show -p Result --value {SERVICE}")
    assert result == "success", result
    return json.loads(host.file(f"{SPOOL}/watchdog.json").content_string)


def test_the_timer_is_enabled_and_active(host, kernel_audit):
    assert host.check_output(f"systemctl is-enabled {TIMER}") == "enabled"
    assert host.check_output(f"systemctl is-active {TIMER}") == "active"


def test_a_stopped_plugin_yields_one_watchdog_mail_and_none_once_continued(host, kernel_audit):
    assert watchdog_mails(host) == [], "the role's own runs gave a watchdog mail"
    pid = json.loads(host.file(f"{SPOOL}/status.json").content_string)["pid"]
    assert run_watchdog(host)["outage"] is None
    host.run_expect([0], f"kill -STOP {pid}")
    try:
        wait_for(lambda: host.check_output(f"ps -o stat= -p {pid}").startswith("T"),
                 "the plugin to stop")
        state = run_watchdog(host)
        assert state["outage"]["kind"] == "plugin-stalled" and state["outage"]["mailed"], state
        mails = wait_for(lambda: watchdog_mails(host), f"the watchdog's mail in {MAILBOX}")
        run_watchdog(host)
    finally:
        host.run_expect([0], f"kill -CONT {pid}")
    assert [m["X-Audit-Tamper"] for m in mails] == ["plugin-stalled"]
    assert f"The alert plugin (pid {pid}) runs under auditd but is stopped" in mails[0].get_content()
    # Continued: a fresh status, then a run that ends the outage without a mail.
    reads = json.loads(host.file(f"{SPOOL}/status.json").content_string)["state_reads"]
    wait_for(lambda: json.loads(host.file(f"{SPOOL}/status.json").content_string)["state_reads"] > reads,
             "the plugin's next heartbeat")
    assert run_watchdog(host)["outage"] is None
    assert [m["X-Audit-Tamper"] for m in watchdog_mails(host)] == ["plugin-stalled"]


def test_no_denials_for_the_watchdog(host, kernel_audit):
    """systemd ran the watchdog in the plugin's domain, and it read /proc and the spool and
    mailed without a denial (without SELinux, ausearch finds no AVC at all)."""
    found = host.run("ausearch -m AVC,USER_AVC --input-logs --format raw")
    assert found.rc in (0, 1), found.stderr
    assert re.findall(rf"^.*[st]context=\S*:{DOMAIN}:.*$", found.stdout, re.MULTILINE) == []
