"""audit_mail_alert_info against the real chain (conftest.py): what it reports is what the
kernel, auditd and the plugin really hold."""

from __future__ import annotations

from host_auditd import auditd_pid
from realchain import PLUGINS_D, run, wait_for


def test_info_reports_the_running_chain(chain):
    result = chain.module("audit_mail_alert_info", {"plugin_conf": str(PLUGINS_D)})
    assert not result["failed"], result.get("msg")
    state = result["audit_mail_alert"]
    audit = state["audit"]
    assert audit["version"] == run("auditctl", "-v").stdout.split()[-1]
    assert audit["enabled"] in (1, 2) and audit["auditd_running"] is True
    assert audit["auditd_pid"] == auditd_pid()
    assert chain.key in audit["rule_keys"]
    plugin = state["plugin"]
    assert plugin["conf"]["active"] is True and plugin["conf"]["path"] == str(chain.plugin)
    assert plugin["config"]["file"] == str(chain.config)
    assert plugin["running"] is True
    assert [process["pid"] for process in plugin["processes"]] == chain.plugin_pids()
    assert plugin["alert_keys"] == [chain.key]
    assert state["status"]["pid"] == chain.plugin_pids()[0]
    assert state["status"]["rules"]["modtest"]["keys"] == [chain.key]


def test_info_after_the_plugin_is_deactivated(chain):
    chain.write_plugins_d(active="no")
    chain.restart_auditd()
    wait_for(lambda: not chain.plugin_pids(), what="the plugin to be gone")
    result = chain.module("audit_mail_alert_info", {"plugin_conf": str(PLUGINS_D)},
                          check_mode=True)
    assert not result["failed"], result.get("msg")
    plugin = result["audit_mail_alert"]["plugin"]
    assert plugin["conf"]["active"] is False
    assert plugin["running"] is False and plugin["processes"] == []
    assert chain.key not in result["audit_mail_alert"]["audit"]["rule_keys"]  # restart dropped it
