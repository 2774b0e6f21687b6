"""The verdicts of audit_alert_verify on plain data: each hop's judgement, with no host."""

from __future__ import annotations

import pytest
from ansible_collections.linux_audit.mail_alert.plugins.module_utils import verify_hops

KEY = "watch_w"
CONF = {"file": "/etc/audit/plugins.d/audisp-mailalert.conf", "exists": True, "active": True,
        "path": "/sbin/audisp-mailalert", "args": ["--config", "/etc/x.conf"],
        "format": "string", "error": None}
CONFIG = {"file": "/etc/x.conf", "rules": {"exec": [KEY]}, "spool_dir": "/spool",
          "tamper": True, "error": None}
MAILBOX_BEFORE = {"kind": "mbox", "exists": True, "size": 100, "mtime": 1.0}
MAILBOX_AFTER = {"kind": "mbox", "exists": True, "size": 100, "mtime": 1.0}


def before(**changes) -> dict:
    seen = {"key": KEY, "status": {"enabled": 1, "pid": 1696}, "status_error": "",
            "rules": [{"rule": f"-w /usr/bin/w -p x -k {KEY}", "keys": [KEY]}],
            "rules_error": "", "auditd_name": "auditd", "conf": CONF, "config": CONFIG,
            "program_executable": True,
            "processes": [{"pid": 2000, "ppid": 1696, "cmdline": ["/sbin/audisp-mailalert"]}],
            "spool_dir": "/spool", "spool_exists": True, "mailbox": "/var/mail/root",
            "mailbox_problem": None}
    return dict(seen, **changes)


def after(**changes) -> dict:
    seen = {"key": KEY, "command": ["/usr/bin/w"], "rc": 0, "started": 1000.0, "token": "tok",
            "events": [{"id": "1000.250:7"}], "search": f"ausearch --input-logs -k {KEY} -pp 9",
            "status": {"rules": {"exec": {"keys": [KEY], "held": 2}}, "last_delivery": 990.0,
                       "last_error": None},
            "status_error": None, "held_before": {"exec": 2}, "spool_dir": "/spool",
            "queued": [], "mail_queue_before": {"ids": ["old"], "error": None},
            "mail_queue": {"ids": ["old"], "error": None}, "mailbox": "/var/mail/root",
            "messages": [], "mailbox_before": MAILBOX_BEFORE, "mailbox_after": MAILBOX_AFTER}
    return dict(seen, **changes)


def first_broken(hops: list[dict]) -> str:
    return next(item["name"] for item in hops if not item["ok"])


def test_a_working_host_passes_every_hop_before_the_command():
    hops = verify_hops.before_command(before())
    assert [item["name"] for item in hops] == [
        "audit_enabled", "rule_loaded", "auditd_running", "plugin_configured",
        "plugin_running", "plugin_key", "mailbox_writable"]
    assert all(item["ok"] for item in hops), hops
    assert hops[1]["detail"] == f"auditctl -l: -w /usr/bin/w -p x -k {KEY}"


@pytest.mark.parametrize("changes, hop, words", [
    ({"status": None, "status_error": "auditctl is not installed"}, "audit_enabled",
     "auditctl is not installed"),
    ({"status": {"enabled": 0, "pid": 1696}}, "audit_enabled", "enabled 0"),
    ({"rules": []}, "rule_loaded", f"lists no rule with key {KEY}"),
    ({"rules": None, "rules_error": "auditctl -l failed (rc 1): x"}, "rule_loaded", "rc 1"),
    ({"status": {"enabled": 1, "pid": 0}}, "auditd_running", "no audit daemon registered"),
    ({"auditd_name": None}, "auditd_running", "not a running process"),
    ({"conf": dict(CONF, exists=False)}, "plugin_configured", "does not exist"),
    ({"conf": dict(CONF, active=False)}, "plugin_configured", "active is not yes"),
    ({"program_executable": False}, "plugin_configured", "is not an executable file"),
    ({"conf": dict(CONF, format="binary")}, "plugin_configured", "format is binary"),
    ({"config": dict(CONFIG, error="cannot read /etc/x.conf: bad")}, "plugin_configured",
     "cannot read /etc/x.conf"),
    ({"spool_exists": False}, "plugin_configured", "spool directory /spool does not exist"),
    ({"processes": []}, "plugin_running", "no process runs /sbin/audisp-mailalert"),
    ({"processes": [{"pid": 2000, "ppid": 1}]}, "plugin_running", "not as a child of auditd"),
    ({"config": dict(CONFIG, rules={"exec": ["other"]})}, "plugin_key", f"lists key {KEY}"),
    ({"mailbox_problem": "/var/mail/root is immutable (chattr +i)"}, "mailbox_writable",
     "is immutable"),
])
def test_each_hop_before_the_command_breaks_alone(changes, hop, words):
    hops = verify_hops.before_command(before(**changes))
    assert first_broken(hops) == hop
    broken = [item for item in hops if not item["ok"]]
    assert words in broken[0]["detail"], broken[0]
    message = verify_hops.failure_message(hops)
    assert message.startswith(f"{verify_hops.BROKEN[hop]} (hop {hop}): ")


def test_the_key_as_a_plugin_argument_counts():
    conf = dict(CONF, args=["--config", "/etc/x.conf", KEY])
    config = dict(CONFIG, rules={})
    assert verify_hops.plugin_key(KEY, conf, config)["ok"]


def test_no_event_stops_the_diagnosis_at_event_logged():
    hops = verify_hops.after_command(after(events=[], rc=3))
    assert hops == [verify_hops.hop(
        "event_logged", False, f"ausearch --input-logs -k {KEY} -pp 9 found no event since the "
        "command ran (rc 3); does /usr/bin/w trigger the rule, and does auditd write its log?")]


def test_no_trace_names_plugin_alert():
    hops = verify_hops.after_command(after())
    assert [item["name"] for item in hops] == [
        "event_logged", "plugin_alert", "rate_limit", "plugin_delivery", "mta_queue", "mailbox"]
    assert first_broken(hops) == "plugin_alert"
    assert "no trace of an alert" in hops[1]["detail"]
    # The last hop is never ok here: the module only diagnoses when no alert came.
    assert hops[-1] == verify_hops.hop("mailbox", False, "no alert for event(s) 1000.250:7 in "
                                       "/var/mail/root (mbox, size 100 then 100)")


def test_a_status_error_is_added_to_no_trace():
    hops = verify_hops.after_command(after(status=None, status_error="cannot read x: y"))
    assert hops[1]["detail"].endswith("; cannot read x: y")


def test_held_back_names_the_rate_limit_and_counts_the_growth():
    status = {"rules": {"exec": {"keys": [KEY], "held": 5}, "other": {"keys": ["x"], "held": 9}}}
    hops = verify_hops.after_command(after(status=status))
    assert hops[1]["ok"]  # holding it back is handling it
    assert first_broken(hops) == "rate_limit"
    assert "exec (+3)" in hops[2]["detail"]
    assert "although the verification request was in place" in hops[2]["detail"]
    plain = verify_hops.after_command(after(status=status, token=None))
    assert "verify_marker is false" in plain[2]["detail"]


def test_our_alert_in_the_spool_names_plugin_delivery():
    queued = [{"event": "1000.250:7@h", "verify": "other", "file": "/spool/queue/0.eml"},
              {"event": "1000.250:7@h", "verify": "tok", "file": "/spool/queue/1.eml"}]
    status = dict(after()["status"], last_error="1.eml: sendmail exited with 75")
    hops = verify_hops.after_command(after(queued=queued, status=status))
    assert first_broken(hops) == "plugin_delivery"
    assert hops[3]["detail"] == ("the alert waits in /spool/queue/1.eml; the plugin's last "
                                 "error: 1.eml: sendmail exited with 75")


def test_someone_elses_alert_in_the_spool_is_not_ours():
    queued = [{"event": "999.000:1@h", "verify": "tok", "file": "/spool/queue/1.eml"}]
    hops = verify_hops.after_command(after(queued=queued))
    assert first_broken(hops) == "plugin_alert"


def test_new_mail_in_the_mta_queue_names_mta_queue():
    queue = {"ids": ["old", "16000c.1"], "error": None}
    hops = verify_hops.after_command(after(mail_queue=queue))
    assert first_broken(hops) == "mta_queue"
    assert hops[4]["detail"] == "mailq lists mail queued since the command ran: 16000c.1"


def test_mailq_failing_names_mta_queue_with_its_words():
    queue = {"ids": [], "error": "mailq exited 69: Mail system is down"}
    hops = verify_hops.after_command(after(mail_queue=queue, mail_queue_before=None,
                                           status=dict(after()["status"], last_delivery=1001.0)))
    assert first_broken(hops) == "mta_queue"
    assert "Mail system is down (is the MTA running?)" in hops[4]["detail"]


def test_no_mailq_is_not_a_broken_queue():
    assert verify_hops.mta_queue(None, [])["ok"]


def test_delivered_but_not_in_the_mailbox_names_the_mailbox():
    status = dict(after()["status"], last_delivery=1000.5)
    hops = verify_hops.after_command(after(status=status, mailbox_after=dict(
        MAILBOX_AFTER, size=900)))
    assert first_broken(hops) == "mailbox"
    assert hops[-1]["detail"].endswith("(mbox, size 100 then 900)")
    gone = verify_hops.after_command(after(status=status, mailbox_after=dict(
        MAILBOX_AFTER, exists=False)))
    assert gone[-1]["detail"].endswith("(it does not exist)")


def test_an_alert_without_our_token_names_plugin_alert():
    messages = [{"event": "1000.250:7", "verify": None}]
    hops = verify_hops.after_command(after(messages=messages))
    assert first_broken(hops) == "plugin_alert"
    assert "arrived without X-Audit-Verify: the plugin ignored" in hops[1]["detail"]
    other = verify_hops.after_command(after(messages=[{"event": "1000.250:7", "verify": "x"}]))
    assert "with X-Audit-Verify x instead of tok" in other[1]["detail"]


def test_alert_matches_by_event_and_token():
    alert = {"event": "1000.25:7@host", "verify": "tok"}  # 25 ms, as auparse writes it
    assert verify_hops.alert_matches(alert, ["1000.250:7"], "tok") is False
    alert = {"event": "1000.250:7@host", "verify": "tok"}
    assert verify_hops.alert_matches(alert, ["1000.250:7"], "tok") is True
    assert verify_hops.alert_matches(alert, ["1000.250:7"], "other") is False
    assert verify_hops.alert_matches(alert, ["1000.250:7"], None) is True
    assert verify_hops.alert_matches(alert, None, "tok") is True  # any event, our token
    assert verify_hops.alert_matches(alert, [], None) is False


def test_held_growth_and_new_queue_ids():
    assert verify_hops.held_growth({"a": 1, "b": 2}, {"a": 1, "b": 4, "c": 1}) == {"b": 2, "c": 1}
    assert verify_hops.new_in_queue(None, {"ids": ["b", "a"]}) == ["a", "b"]
    assert verify_hops.new_in_queue({"ids": ["a"]}, None) == []
    assert verify_hops.delivered_since({"last_delivery": 5.0}, 5.0) is True
    assert verify_hops.delivered_since({"last_delivery": None}, 5.0) is False
