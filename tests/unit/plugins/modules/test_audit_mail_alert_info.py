"""audit_mail_alert_info with run_command and get_bin_path mocked (see conftest.py)."""

from __future__ import annotations

from ansible_collections.linux_audit.mail_alert.plugins.modules import (
    audit_mail_alert_info,
)
from ansible_collections.linux_audit.mail_alert.tests.unit.plugins.modules.fake_host import (
    AUDITD_PID,
    KEY,
)


def info(run_module, host, check_mode=False, **args):
    outcome = run_module(audit_mail_alert_info.main,
                         dict({"plugin_conf": str(host.plugin_conf)}, **args), check_mode=check_mode)
    assert not outcome.failed, outcome.result.get("msg")
    assert outcome.result["changed"] is False
    return outcome.result["audit_mail_alert"]


def test_reports_audit_state(host, run_module):
    host.status_text = "enabled 2\nfailure 1\npid 1696\nlost 7\nbacklog 3\nbacklog_limit 8192\n"
    host.rules_text = f"-w /usr/bin/w -p x -k {KEY} -k second\n-a always,exit -S execve\n"
    audit = info(run_module, host)["audit"]
    assert audit["version"] == "3.0.9"
    assert audit["enabled"] == 2 and audit["immutable"] is True
    assert audit["lost"] == 7 and audit["backlog"] == 3
    assert audit["auditd_pid"] == AUDITD_PID and audit["auditd_running"] is True
    assert audit["rule_keys"] == ["second", KEY]
    assert audit["rules"][1] == {"rule": "-a always,exit -S execve", "keys": []}
    assert audit["error"] is None


def test_reports_plugin_state(host, run_module):
    host.write_plugin_conf(keys="extra")
    host.write_status(held=2)
    state = info(run_module, host)
    plugin = state["plugin"]
    assert plugin["conf"]["active"] is True and plugin["conf"]["path"] == host.plugin
    assert plugin["config"]["file"] == str(host.config)  # from --config in the args
    assert plugin["config"]["rules"] == {"exec": [KEY]}
    assert plugin["alert_keys"] == ["extra", KEY]
    assert plugin["running"] is True
    assert plugin["processes"][0]["ppid"] == AUDITD_PID
    assert state["status"]["rules"]["exec"]["held"] == 2
    assert state["status_error"] is None


def test_plugin_stopped_and_status_missing(host, run_module):
    host.plugin_running = False
    host.write_plugin_conf()
    state = info(run_module, host, config=str(host.config))
    assert state["plugin"]["running"] is False and state["plugin"]["processes"] == []
    assert state["status"] is None


def test_auditctl_failure_is_reported_not_raised(host, run_module):
    host.status_text = None

    def refuse(args, **_kwargs):
        if args[1] == "-s":
            return 1, "", "Error sending status request (Operation not permitted)\n"
        return 0, "auditctl version 3.0.9\n", ""

    host.run_command = refuse
    audit = info(run_module, host)["audit"]
    assert "Operation not permitted" in audit["error"]
    assert audit["auditd_running"] is False


def test_check_mode_reads_the_same(host, run_module):
    assert info(run_module, host, check_mode=True) == info(run_module, host)
