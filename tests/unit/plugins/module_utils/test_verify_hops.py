"""The verdicts of audit_alert_verify on plain data: each hop's judgement, with no host."""

from __future__ import annotations

import pytest
from ansible_collections.linux_audit.mail_alert.plugins.module_utils import (
    alert_plugin,
    verify_hops,
)

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


# -- the tamper path -----------------------------------------------------------------------

REMOVAL = {"id": "1000.500:9", "op": "remove_rule", "keys": [KEY], "ok": True}


def tamper(**changes) -> dict:
    seen = {"key": KEY, "token": "tt", "started": 1000.0, "changes": [REMOVAL],
            "search": f"ausearch --input-logs -m CONFIG_CHANGE -k {KEY}",
            "status_before": {"tamper_suppressed": 1, "last_delivery": 990.0},
            "status": {"tamper_suppressed": 1, "last_delivery": 990.0, "last_error": None},
            "status_error": None, "spool_dir": "/spool", "queued": [],
            "mail_queue_before": {"ids": [], "error": None},
            "mail_queue": {"ids": [], "error": None}, "mailbox": "/var/mail/root",
            "messages": [], "mailbox_before": MAILBOX_BEFORE, "mailbox_after": MAILBOX_AFTER}
    return dict(seen, **changes)


def test_tamper_before_refuses_what_cannot_be_proven():
    rules = [f"-w /usr/bin/w -p x -k {KEY}"]
    assert verify_hops.tamper_before(KEY, rules, 1, CONFIG) == []
    [locked] = verify_hops.tamper_before(KEY, rules, 2, CONFIG)
    assert locked["name"] == "tamper_removed" and "locked until reboot" in locked["detail"]
    [none] = verify_hops.tamper_before(KEY, [], 1, CONFIG)
    assert none["name"] == "tamper_removed" and f"-l -k {KEY} lists no rule" in none["detail"]
    [off] = verify_hops.tamper_before(KEY, rules, 1, dict(CONFIG, tamper=False))
    assert off == verify_hops.hop("tamper_plugin", False, "[tamper] enabled = no in /etc/x.conf: "
                                  "the plugin mails no tamper alert")


def test_tamper_removal_not_logged_stops_at_tamper_logged():
    failed = dict(REMOVAL, ok=False)
    other_key = dict(REMOVAL, keys=["other"])
    added = dict(REMOVAL, op="add_rule")
    for changes in ([], [failed], [other_key], [added]):
        hops = verify_hops.tamper_after(tamper(changes=changes))
        assert [item["name"] for item in hops] == ["tamper_logged"]
        assert not hops[0]["ok"]
        assert "finds no op=remove_rule record for key watch_w" in hops[0]["detail"]


def test_tamper_no_trace_names_the_plugin():
    hops = verify_hops.tamper_after(tamper())
    assert [item["name"] for item in hops] == [
        "tamper_logged", "tamper_plugin", "tamper_delivery", "tamper_mta_queue",
        "tamper_mailbox"]
    assert hops[0] == verify_hops.hop("tamper_logged", True,
                                      "CONFIG_CHANGE op=remove_rule: 1000.500:9")
    assert first_broken(hops) == "tamper_plugin"
    assert "no trace of a tamper alert" in hops[1]["detail"]
    assert verify_hops.failure_message(hops).startswith(
        "plugin raised no tamper alert for the removed rule (hop tamper_plugin): ")
    assert hops[-1]["detail"] == ("no tamper mail with X-Audit-Verify tt in /var/mail/root "
                                  "(mbox, size 100 then 100)")


def test_tamper_suppressed_as_the_roles_work_names_the_plugin():
    status = dict(tamper()["status"], tamper_suppressed=2)
    hops = verify_hops.tamper_after(tamper(status=status))
    assert first_broken(hops) == "tamper_plugin"
    assert "tamper_suppressed +1" in hops[1]["detail"] and "/spool/maintenance" in hops[1]["detail"]


def test_tamper_mail_without_our_token_names_the_plugin():
    mail = {"event": "1000.500:9", "verify": None}
    hops = verify_hops.tamper_after(tamper(messages=[mail]))
    assert first_broken(hops) == "tamper_plugin"
    assert "arrived without X-Audit-Verify" in hops[1]["detail"]
    # A tamper mail for another removal is not ours, with or without a token.
    hops = verify_hops.tamper_after(tamper(messages=[dict(mail, event="999.000:1")]))
    assert "no trace" in hops[1]["detail"]


def test_tamper_mail_in_the_spool_names_the_delivery():
    queued = [{"key": "watch_w", "event": "1000.500:9", "verify": "tt", "file": "/spool/queue/a.eml"},
              {"key": "tamper", "event": "1000.500:9", "verify": "xx", "file": "/spool/queue/b.eml"},
              {"key": "tamper", "event": "1000.500:9", "verify": "tt", "file": "/spool/queue/c.eml"}]
    status = dict(tamper()["status"], last_error="c.eml: sendmail exited with 75")
    hops = verify_hops.tamper_after(tamper(queued=queued, status=status))
    assert hops[1]["ok"]
    assert first_broken(hops) == "tamper_delivery"
    assert hops[2]["detail"] == ("the tamper alert waits in /spool/queue/c.eml; the plugin's "
                                 "last error: c.eml: sendmail exited with 75")
    assert verify_hops.failure_message(hops).startswith(
        "tamper mail not handed to the MTA (hop tamper_delivery): ")


def test_tamper_mail_in_the_mta_queue_names_it():
    hops = verify_hops.tamper_after(tamper(mail_queue={"ids": ["16000c.2"], "error": None}))
    assert first_broken(hops) == "tamper_mta_queue"
    assert hops[3]["detail"] == "mailq lists mail queued since the rule was removed: 16000c.2"


def test_tamper_mail_delivered_elsewhere_names_the_mailbox():
    status = dict(tamper()["status"], last_delivery=1000.7)
    hops = verify_hops.tamper_after(tamper(status=status))
    assert first_broken(hops) == "tamper_mailbox"
    assert verify_hops.failure_message(hops).startswith(
        "tamper mail not in the mailbox (hop tamper_mailbox): no tamper mail with "
        "X-Audit-Verify tt in /var/mail/root")


BOOT = "7753bc49-7a4f-4b9c-ad47-65cc2f987fa6"


def test_maintenance_pause_waits_out_the_roles_window():
    def window(opened, until, boot=BOOT):
        return alert_plugin.Maintenance(1000, 1030, boot, opened, until)

    assert verify_hops.maintenance_pause(None, BOOT, 1000.0, 30, "/spool") == (0.0, None)
    # Before OPENED - 2 and after UNTIL + 5 (boot clock) the plugin mails a removal: no wait.
    assert verify_hops.maintenance_pause(window(1000, 1010), BOOT, 997.9, 30, "/spool") == (0.0, None)
    assert verify_hops.maintenance_pause(window(900, 990), BOOT, 995.1, 30, "/spool") == (0.0, None)
    # A marker of another boot counts for nothing.
    other = "0b7a2f4e-1c3d-4e5f-8a9b-0c1d2e3f4a5b"
    assert verify_hops.maintenance_pause(window(990, 1010, other), BOOT, 1000.0, 30, "/spool") == (0.0, None)
    # Just after a deployment: wait until a second past UNTIL + 5.
    assert verify_hops.maintenance_pause(window(900, 998), BOOT, 1000.0, 30, "/spool") == (4.0, None)
    assert verify_hops.maintenance_pause(window(1000, 1010), BOOT, 998.0, 30, "/spool") == (18.0, None)
    # Open longer than the timeout (the role at work, a lease of 30 s): the plugin hop, no wait.
    pause, broken = verify_hops.maintenance_pause(window(1000, 1030), BOOT, 1000.0, 30, "/spool")
    assert pause == 0.0 and broken["name"] == "tamper_plugin" and not broken["ok"]
    assert "/spool/maintenance" in broken["detail"] and "36 s more" in broken["detail"]
    # A far UNTIL counts only up to OPENED + 900, as the plugin caps it.
    pause, broken = verify_hops.maintenance_pause(window(1000, 99999), BOOT, 1000.0, 2000, "/spool")
    assert (pause, broken) == (906.0, None)
