"""audit_alert_verify with run_command and get_bin_path mocked (see conftest.py): the
happy path, check mode, bad input, and one test per broken hop."""

from __future__ import annotations

import mailbox
import os
import signal
import time

import pytest
from ansible_collections.linux_audit.mail_alert.plugins.module_utils import (
    alert_plugin,
    mail_store,
)
from ansible_collections.linux_audit.mail_alert.plugins.modules import (
    audit_alert_verify,
)
from ansible_collections.linux_audit.mail_alert.tests.unit.plugins.modules.fake_host import (
    KEY,
)


def verify(run_module, args, check_mode=False):
    return run_module(audit_alert_verify.main, args, check_mode=check_mode)


def hop_states(result):
    return {item["name"]: item["ok"] for item in result["hops"]}


def test_alert_found_returns_event_mail_and_latency(host, run_module):
    outcome = verify(run_module, host.args())
    assert not outcome.failed, outcome.result.get("msg")
    result = outcome.result
    assert result["changed"] is False
    assert result["event"] == host.event_id
    assert result["message_id"] == f"<{host.event_id}@host>"
    assert result["subject"] == f"[audit] {KEY} on host"
    assert 0 <= result["latency"] < 2
    assert result["rc"] == 0
    assert all(item["ok"] for item in result["hops"])
    # The command ran once, directly (no shell), while the verify request named our pid.
    assert host.watched_runs() == [[str(host.watched)]]
    assert host.request_seen == result["token"]
    assert not os.path.exists(host.spool / "verify" / str(os.getpid()))


def test_ausearch_asks_for_our_key_and_our_pid_as_parent(host, run_module):
    verify(run_module, host.args())
    search = next(call for call in host.calls if call[0].endswith("ausearch"))
    assert search[:6] == ["/sbin/ausearch", "--input-logs", "-k", KEY, "-pp", str(os.getpid())]
    assert search[-2:] == ["--format", "raw"]


def test_alert_in_a_maildir(host, run_module):
    host.mailbox = str(host.spool.parent / "Maildir")
    mailbox.Maildir(host.mailbox).close()
    outcome = verify(run_module, host.args())
    assert not outcome.failed, outcome.result.get("msg")
    assert outcome.result["event"] == host.event_id


def test_alert_with_another_token_is_not_ours(host, run_module):
    host.mail_token = "someone-else"
    outcome = verify(run_module, host.args(timeout=1))
    assert_broken(outcome, "plugin_alert", "with X-Audit-Verify someone-else instead of")


def test_old_alert_for_another_event_is_ignored(host, run_module):
    host.deliver = False
    host.event_id = "1000000000.000:1"
    host.add_mail(host.alert(token=None))
    host.event_id = None
    outcome = verify(run_module, host.args(timeout=1))
    assert outcome.failed


def test_without_marker_no_request_is_written_and_a_plain_alert_counts(host, run_module):
    host.mail_token = ""
    outcome = verify(run_module, host.args(verify_marker=False))
    assert not outcome.failed, outcome.result.get("msg")
    assert host.request_seen is None
    assert "token" not in outcome.result


def test_run_as_runs_the_command_through_setpriv(host, run_module):
    outcome = verify(run_module, host.args(run_as="nobody"))
    assert not outcome.failed, outcome.result.get("msg")
    import pwd
    nobody = pwd.getpwnam("nobody")
    assert host.watched_runs() == [["/usr/bin/setpriv", f"--reuid={nobody.pw_uid}",
                                    f"--regid={nobody.pw_gid}", "--init-groups", "--",
                                    str(host.watched)]]


def test_check_mode_reports_and_runs_nothing(host, run_module):
    outcome = verify(run_module, host.args(), check_mode=True)
    assert not outcome.failed
    assert outcome.result["command"] == [str(host.watched)]
    assert [item["name"] for item in outcome.result["hops"]] == [
        "audit_enabled", "rule_loaded", "auditd_running", "plugin_configured",
        "plugin_running", "plugin_key", "mailbox_writable"]
    assert host.watched_runs() == []
    assert all(call[0].endswith("auditctl") for call in host.calls)
    assert not (host.spool / "verify").exists()


def test_check_mode_does_not_fail_on_a_broken_hop(host, run_module):
    host.rules_text = "No rules\n"
    outcome = verify(run_module, host.args(), check_mode=True)
    assert not outcome.failed
    assert hop_states(outcome.result)["rule_loaded"] is False


@pytest.mark.parametrize("args, field", [
    ({"key": "has space"}, "key:"),
    ({"key": ""}, "key:"),
    ({"timeout": 0}, "timeout:"),
    ({"command": []}, "command:"),
    ({"command": ["/nonexistent/program"]}, "command:"),
    ({"command": ["no-such-program-on-path"]}, "command:"),
    ({"run_as": "no-such-user-here"}, "run_as:"),
])
def test_bad_input_is_refused_naming_the_field_before_anything_runs(host, run_module, args, field):
    outcome = verify(run_module, host.args(**args))
    assert outcome.failed
    assert outcome.result["msg"].startswith(field)
    assert host.calls == []


def test_not_root_is_refused(host, run_module, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    outcome = verify(run_module, host.args())
    assert outcome.failed and "needs root" in outcome.result["msg"]


# -- one test per broken hop: the message names it, and the command does not run when the
# -- hop is one that can be seen before.

def assert_broken(outcome, name, words):
    assert outcome.failed
    message = outcome.result["msg"]
    assert f"(hop {name})" in message, message
    assert words in message, message
    first_broken = next(item["name"] for item in outcome.result["hops"] if not item["ok"])
    assert first_broken == name


def test_audit_disabled(host, run_module):
    host.status_text = host.status_text.replace("enabled 1", "enabled 0")
    outcome = verify(run_module, host.args())
    assert_broken(outcome, "audit_enabled", "kernel auditing is disabled")
    assert host.watched_runs() == []


def test_rule_not_loaded(host, run_module):
    host.rules_text = "-w /etc/passwd -p wa -k other\n"
    outcome = verify(run_module, host.args())
    assert_broken(outcome, "rule_loaded", f"audit rule not loaded (hop rule_loaded): auditctl -l "
                                          f"lists no rule with key {KEY}")
    assert host.watched_runs() == []


def test_auditd_not_running(host, run_module):
    host.status_text = host.status_text.replace("pid 1696", "pid 0")
    outcome = verify(run_module, host.args())
    assert_broken(outcome, "auditd_running", "auditd not running")
    assert host.watched_runs() == []


def test_plugin_conf_inactive(host, run_module):
    host.write_plugin_conf(active="no")
    outcome = verify(run_module, host.args())
    assert_broken(outcome, "plugin_configured", "active is not yes")


def test_plugin_conf_binary_format(host, run_module):
    host.plugin_conf.write_text(host.plugin_conf.read_text().replace("format = string",
                                                                     "format = binary"))
    outcome = verify(run_module, host.args())
    assert_broken(outcome, "plugin_configured", "format is binary")


def test_plugin_not_running(host, run_module):
    host.plugin_running = False
    outcome = verify(run_module, host.args())
    assert_broken(outcome, "plugin_running", "plugin not running")
    assert host.watched_runs() == []


def test_plugin_not_configured_for_the_key(host, run_module):
    host.config.write_text(f"[spool]\ndir = {host.spool}\n[rule exec]\nkeys = other\n")
    outcome = verify(run_module, host.args())
    assert_broken(outcome, "plugin_key", "plugin not configured for the key")
    assert host.watched_runs() == []


def test_plugin_key_from_plugin_arguments(host, run_module):
    host.config.write_text(f"[spool]\ndir = {host.spool}\n")
    host.write_plugin_conf(keys=KEY)
    outcome = verify(run_module, host.args())
    assert not outcome.failed, outcome.result.get("msg")


def test_mailbox_immutable(host, run_module, monkeypatch):
    monkeypatch.setattr(mail_store, "_immutable", lambda path: path == host.mailbox)
    host.add_mail("From: x\n\nan older mail\n")
    outcome = verify(run_module, host.args())
    assert_broken(outcome, "mailbox_writable", "is immutable")
    assert host.watched_runs() == []


def test_event_not_logged(host, run_module):
    host.log_events = False
    host.deliver = False
    outcome = verify(run_module, host.args(timeout=1))
    assert_broken(outcome, "event_logged", "event not logged")
    assert len(host.watched_runs()) == 1


def test_rate_limit_held_the_alert_back(host, run_module):
    host.deliver = False
    host.write_status(held=3)
    host.on_command.append(lambda fake: fake.write_status(held=4))
    outcome = verify(run_module, host.args(timeout=1))
    assert_broken(outcome, "rate_limit", "exec (+1)")
    assert "although the verification request was in place" in outcome.result["msg"]


def test_alert_stuck_in_the_plugin_spool(host, run_module):
    host.deliver = False

    def spool_the_alert(fake):
        (fake.spool / "queue" / "0001.eml").write_text(fake.alert(fake.request_seen))
        fake.write_status(last_error="0001.eml: sendmail exited with 75")

    host.on_command.append(spool_the_alert)
    outcome = verify(run_module, host.args(timeout=1))
    assert_broken(outcome, "plugin_delivery", "mail not handed to the MTA")
    assert "sendmail exited with 75" in outcome.result["msg"]


def test_mail_still_in_the_mta_queue(host, run_module):
    host.deliver = False
    host.mail_queue = ["Mail queue is empty\n", "ID\t: 16000c.555729782f20\nFrom\t: root@vm\n"]
    outcome = verify(run_module, host.args(timeout=1))
    assert_broken(outcome, "mta_queue", "16000c.555729782f20")


def test_mta_down_is_named_with_what_mailq_said(host, run_module):
    # postfix's mailq when its daemon is not running: exit 69, the queue read directly.
    host.deliver = False
    listing = ("-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------\n"
               "7AC9129F3      1852 Thu Nov 26 13:50:43  root@testvm\n")
    complaint = ("postqueue: warning: Mail system is down -- accessing queue directly\n"
                 "postqueue: fatal: malformed showq server response\n")
    down = (69, listing, complaint)
    host.mail_queue = [down]
    host.on_command.append(lambda fake: fake.write_status(last_delivery=time.time()))
    outcome = verify(run_module, host.args(timeout=1))
    assert_broken(outcome, "mta_queue", "Mail system is down")
    assert "mailq exited 69" in outcome.result["msg"]


def test_mailbox_not_written(host, run_module):
    host.deliver = False
    host.on_command.append(lambda fake: fake.write_status(last_delivery=time.time()))
    outcome = verify(run_module, host.args(timeout=1))
    assert_broken(outcome, "mailbox", "mailbox not written")
    assert host.mailbox in outcome.result["msg"]


def test_no_trace_of_an_alert(host, run_module):
    host.deliver = False
    outcome = verify(run_module, host.args(timeout=1))
    assert_broken(outcome, "plugin_alert", "no trace of an alert")


def test_alert_without_the_verify_header(host, run_module):
    host.mail_token = ""
    outcome = verify(run_module, host.args(timeout=1))
    assert_broken(outcome, "plugin_alert", "arrived without X-Audit-Verify: the plugin ignored")


# -- the tamper check (option tamper): the rule removed and put back, the tamper mail ----

RULE = f"-w /usr/bin/w -p x -k {KEY}"
REQUEST = str(os.getpid())  # the module's pid: the parent of the auditctl it runs


def assert_rule_put_back(host):
    assert host.rules_text == RULE + "\n"
    assert host.auditctl_changes() == [["-W", *RULE.split()[1:]], RULE.split()]


def test_tamper_proves_the_tamper_mail_and_puts_the_rule_back(host, run_module):
    outcome = verify(run_module, host.args(tamper=True))
    assert not outcome.failed, outcome.result.get("msg")
    tamper = outcome.result["tamper"]
    assert tamper["checked"] is True
    assert tamper["rules"] == [RULE]
    assert host.tamper_request_seen == tamper["token"]  # the request was there at removal
    assert tamper["event"] == host.removals[0].split("(")[1].split(")")[0]
    assert tamper["message_id"] == f"<t{tamper['event']}@host>"
    assert tamper["subject"] == "[audit] tamper: rules removed on host"
    assert 0 <= tamper["latency"] < 2
    assert_rule_put_back(host)
    assert not (host.spool / "verify" / REQUEST).exists()
    names = [item["name"] for item in outcome.result["hops"]]
    assert names[-3:] == ["tamper_removed", "tamper_logged", "tamper_mailbox"]
    assert all(item["ok"] for item in outcome.result["hops"])
    # The alert chain was proven first, as without the option.
    assert outcome.result["event"] == host.event_id


def test_tamper_is_off_by_default(host, run_module):
    outcome = verify(run_module, host.args())
    assert not outcome.failed
    assert "tamper" not in outcome.result and host.auditctl_changes() == []


def test_tamper_mail_in_another_mailbox(host, run_module):
    elsewhere = str(host.spool.parent / "secops.mbox")
    host.tamper_deliver = False
    host.on_removal.append(lambda fake, record: mailbox.mbox(elsewhere).add(
        fake.tamper_mail(record, fake.tamper_request_seen)))
    outcome = verify(run_module, host.args(tamper=True, tamper_mailbox=elsewhere))
    assert not outcome.failed, outcome.result.get("msg")
    assert elsewhere in outcome.result["hops"][-1]["detail"]


def test_tamper_is_not_run_in_check_mode(host, run_module):
    outcome = verify(run_module, host.args(tamper=True), check_mode=True)
    assert not outcome.failed
    assert outcome.result["tamper"] == {
        "checked": False, "skipped": "check mode: the tamper check removes and restores audit rules"}
    assert host.auditctl_changes() == []


def test_tamper_is_not_run_when_the_chain_is_broken(host, run_module):
    host.deliver = False
    outcome = verify(run_module, host.args(tamper=True, timeout=1))
    assert_broken(outcome, "plugin_alert", "no trace of an alert")
    assert outcome.result["tamper"]["checked"] is False
    assert host.auditctl_changes() == []


def test_tamper_off_in_the_plugin_config_removes_nothing(host, run_module):
    host.config.write_text(host.config.read_text() + "[tamper]\nenabled = no\n")
    outcome = verify(run_module, host.args(tamper=True))
    assert_broken(outcome, "tamper_plugin", "[tamper] enabled = no in")
    assert host.auditctl_changes() == []


def test_tamper_with_locked_rules_removes_nothing(host, run_module):
    host.status_text = host.status_text.replace("enabled 1", "enabled 2")
    outcome = verify(run_module, host.args(tamper=True))
    assert_broken(outcome, "tamper_removed", "locked until reboot")
    assert host.auditctl_changes() == []


def test_tamper_removal_refused(host, run_module):
    host.removal_fails = True
    outcome = verify(run_module, host.args(tamper=True))
    assert_broken(outcome, "tamper_removed", "auditctl -W /usr/bin/w -p x -k watch_w failed (rc 1)")
    assert host.rules_text == RULE + "\n"
    assert not (host.spool / "verify" / REQUEST).exists()


def test_tamper_rule_that_cannot_be_put_back_fails_loudly(host, run_module):
    host.restore_fails = True
    outcome = verify(run_module, host.args(tamper=True))
    assert outcome.failed
    assert outcome.result["msg"].startswith(f"tamper: could not put back the audit rule(s) {RULE}")
    assert not (host.spool / "verify" / REQUEST).exists()


def test_tamper_signal_during_the_removal_waits_for_the_rule_to_be_back(host, run_module):
    host.on_removal.append(lambda fake, record: os.kill(os.getpid(), signal.SIGTERM))
    outcome = verify(run_module, host.args(tamper=True))
    assert outcome.failed
    assert outcome.result["msg"] == (f"tamper: interrupted by signal {int(signal.SIGTERM)} after "
                                     "the rules were put back")
    assert_rule_put_back(host)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_tamper_removal_not_logged(host, run_module):
    host.log_removals = False
    host.tamper_deliver = False
    outcome = verify(run_module, host.args(tamper=True, timeout=1))
    assert_broken(outcome, "tamper_logged", "the kernel logged no removal of the rule")
    assert_rule_put_back(host)


def test_tamper_no_trace_names_the_plugin(host, run_module):
    host.tamper_deliver = False
    outcome = verify(run_module, host.args(tamper=True, timeout=1))
    assert_broken(outcome, "tamper_plugin", "no trace of a tamper alert")
    assert_rule_put_back(host)
    assert not (host.spool / "verify" / REQUEST).exists()


def test_tamper_mail_without_the_token_names_the_plugin(host, run_module):
    host.tamper_token = ""
    outcome = verify(run_module, host.args(tamper=True, timeout=1))
    assert_broken(outcome, "tamper_plugin", "arrived without X-Audit-Verify")


def test_tamper_mail_stuck_in_the_plugin_spool(host, run_module):
    host.tamper_deliver = False

    def spool_it(fake, record):
        (fake.spool / "queue" / "0002.eml").write_text(
            fake.tamper_mail(record, fake.tamper_request_seen))

    host.on_removal.append(spool_it)
    outcome = verify(run_module, host.args(tamper=True, timeout=1))
    assert_broken(outcome, "tamper_delivery", "0002.eml")


def test_tamper_mail_in_the_mta_queue(host, run_module):
    host.tamper_deliver = False
    host.mail_queue = ["Mail queue is empty\n", "Mail queue is empty\n",
                       "ID\t: 16000c.77\nFrom\t: root@vm\n"]
    outcome = verify(run_module, host.args(tamper=True, timeout=1))
    assert_broken(outcome, "tamper_mta_queue", "16000c.77")


def write_marker(host, opened, until):
    """A marker of this boot whose window runs from OPENED to UNTIL seconds from now (the
    boot clock; START and END the same on the epoch clock)."""
    now, uptime = int(time.time()), alert_plugin.read_uptime()
    marker = host.spool / "maintenance"
    marker.write_text(alert_plugin.format_maintenance(alert_plugin.Maintenance(
        now + opened, now + until, alert_plugin.read_boot_id(), uptime + opened, uptime + until)))
    marker.chmod(0o600)


def test_tamper_waits_out_the_roles_maintenance_window(host, run_module):
    if os.geteuid() != 0:
        pytest.skip("the plugin trusts only a marker of root's; the tests do not run as root")
    write_marker(host, -60, -3)  # a deployment that ended 3 s ago
    until = alert_plugin.read_maintenance(str(host.spool)).until
    removed_at = []
    host.on_removal.append(lambda fake, record: removed_at.append(alert_plugin.read_uptime()))
    outcome = verify(run_module, host.args(tamper=True, timeout=10))
    assert not outcome.failed, outcome.result.get("msg")
    assert 0 < outcome.result["tamper"]["waited"] <= 4
    assert removed_at[0] > until + 5  # after the plugin's window, UNTIL + 5 on the boot clock


def test_tamper_during_the_roles_work_removes_nothing(host, run_module):
    if os.geteuid() != 0:
        pytest.skip("the plugin trusts only a marker of root's; the tests do not run as root")
    write_marker(host, -10, 20)  # the role at work
    outcome = verify(run_module, host.args(tamper=True))
    assert_broken(outcome, "tamper_plugin", "maintenance window")
    assert host.auditctl_changes() == []


def test_tamper_second_removal_refused_puts_the_first_back(host, run_module):
    second = "-a always,exit -F arch=b64 -S execve -F key=watch_w"
    host.rules_text = f"{RULE}\n{second}\n"
    original = host.change_rule

    def refuse_the_syscall_rule(words):
        if words[0] == "-d":
            return 1, "", "Error sending delete rule data request (No such file or directory)\n"
        return original(words)

    host.change_rule = refuse_the_syscall_rule
    outcome = verify(run_module, host.args(tamper=True))
    assert_broken(outcome, "tamper_removed", f"auditctl -d {second[3:]} failed (rc 1)")
    assert host.rules_text == f"{second}\n{RULE}\n"  # the watch is back (at the end)
    assert host.auditctl_changes()[-1] == RULE.split()
