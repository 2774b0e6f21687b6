#!/usr/bin/python
# ruff: noqa: EXE001 - ansible-test requires this shebang on a module that is not executable
# Copyright (c) audit mail alert developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

DOCUMENTATION = r"""
---
module: audit_mail_alert_info
short_description: Read the state of the audit system and of the audisp-mailalert plugin
description:
  - Reports, without changing anything, the kernel audit status (C(auditctl -s)), the
    audit version, the loaded rules and their keys (C(auditctl -l)), the plugins.d file
    and the configuration of the audisp-mailalert plugin, its running processes (from
    C(/proc)), and the plugin's C(status.json).
  - Needs root on the target (C(become=true)) for C(auditctl); without it the audit part
    holds the error instead of the state.
version_added: 1.0.0
requirements:
  - C(auditctl) on the target (package C(auditd) on Debian and Ubuntu, C(audit) on RHEL
    and Fedora), for the audit part; without it that part holds the error.
  - Root on the target (C(become=true)).
author:
  - Audit mail alert developers (@linux-audit)
extends_documentation_fragment:
  - linux_audit.mail_alert.plugin_paths
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details:
      - The module only reads, so it runs the same in check mode.
  diff_mode:
    support: none
  platform:
    platforms: posix
seealso:
  - module: linux_audit.mail_alert.audit_alert_verify
"""

EXAMPLES = r"""
- name: Read the audit and plugin state
  linux_audit.mail_alert.audit_mail_alert_info:
  become: true
  register: audit_info

- name: Require the rule for watch_w and a running plugin
  ansible.builtin.assert:
    that:
      - "'watch_w' in audit_info.audit_mail_alert.audit.rule_keys"
      - audit_info.audit_mail_alert.plugin.running
    fail_msg: "The watch_w rule is not loaded, or the plugin does not run"

- name: Warn about lost audit events
  ansible.builtin.debug:
    msg: "The kernel lost {{ audit_info.audit_mail_alert.audit.lost }} audit events"
  when: audit_info.audit_mail_alert.audit.lost | int > 0
"""

RETURN = r"""
audit_mail_alert:
  description: The state, in three parts.
  returned: always
  type: dict
  contains:
    audit:
      description: The kernel audit system and auditd.
      type: dict
      contains:
        installed:
          description: Whether C(auditctl) is installed.
          type: bool
          sample: true
        version:
          description: The audit userspace version (C(auditctl -v)).
          type: str
          sample: 3.0.9
        error:
          description: Why the status or rules could not be read, else null.
          type: str
          sample: null
        enabled:
          description: C(0) disabled, C(1) enabled, C(2) enabled and locked (immutable).
          type: int
          sample: 1
        immutable:
          description: Whether the rules are locked until reboot (C(enabled) is 2).
          type: bool
          sample: false
        failure:
          description: The failure mode (0 silent, 1 printk, 2 panic).
          type: int
          sample: 1
        lost:
          description: Events the kernel lost since boot.
          type: int
          sample: 0
        backlog:
          description: Events waiting in the kernel for auditd.
          type: int
          sample: 0
        backlog_limit:
          description: The kernel backlog limit.
          type: int
          sample: 8192
        rate_limit:
          description: The kernel rate limit in messages per second (0 is none).
          type: int
          sample: 0
        auditd_pid:
          description: The pid of the audit daemon the kernel talks to (0 if none).
          type: int
          sample: 1696
        auditd_running:
          description: Whether that pid is a running auditd.
          type: bool
          sample: true
        rules:
          description: The loaded rules, as C(auditctl -l) prints them, with their keys.
          type: list
          elements: dict
          sample: [{rule: "-w /usr/bin/w -p x -k watch_w", keys: [watch_w]}]
        rule_keys:
          description: The keys of the loaded rules, sorted, each once.
          type: list
          elements: str
          sample: [watch_w]
    plugin:
      description: The audisp-mailalert plugin.
      type: dict
      contains:
        conf:
          description: The plugins.d file, parsed.
          type: dict
          sample:
            file: /etc/audit/plugins.d/audisp-mailalert.conf
            exists: true
            active: true
            path: /sbin/audisp-mailalert
            args: []
            format: string
            type: always
            direction: out
            error: null
        config:
          description: The plugin configuration (its rules and their keys, its spool, and
            whether its tamper alerts are on, C([tamper] enabled), on by default).
          type: dict
          sample:
            file: /etc/audit/audisp-mailalert.conf
            exists: true
            rules: {watch: [watch_w]}
            spool_dir: /var/spool/audisp-mailalert
            tamper: true
            error: null
        processes:
          description: The processes running the plugin's program, with their parents.
          type: list
          elements: dict
          sample: [{pid: 1702, ppid: 1696, cmdline: [/usr/bin/python3, /sbin/audisp-mailalert]}]
        running:
          description: Whether a process runs the plugin as a child of auditd.
          type: bool
          sample: true
        alert_keys:
          description: The audit keys the plugin mails alerts for (config rules and arguments).
          type: list
          elements: str
          sample: [watch_w]
    status:
      description: The plugin's C(status.json) (see docs/design.md), or null if absent.
      type: dict
      sample: {pid: 1702, queue: 0, last_error: null, last_delivery: 1795685868.9,
               rules: {watch: {keys: [watch_w], window_end: 1795686168, sent: 1, held: 0}}}
    status_error:
      description: Why C(status.json) could not be read, else null.
      type: str
      sample: null
"""

import os
from typing import Optional

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.linux_audit.mail_alert.plugins.module_utils import (
    alert_plugin,
    audit_state,
)
from ansible_collections.linux_audit.mail_alert.plugins.module_utils.audit_state import (
    C_LOCALE,
)


def audit_info(module: AnsibleModule) -> dict:
    """The kernel audit status, version and rules, from auditctl."""
    auditctl = module.get_bin_path("auditctl")
    info = {"installed": bool(auditctl), "version": None, "error": None, "enabled": None,
            "immutable": None, "failure": None, "lost": None, "backlog": None,
            "backlog_limit": None, "rate_limit": None, "auditd_pid": None,
            "auditd_running": False, "rules": [], "rule_keys": []}
    if not auditctl:
        info["error"] = "auditctl is not installed"
        return info
    outputs = {}
    for option in ("-v", "-s", "-l"):
        rc, out, err = module.run_command([auditctl, option], environ_update=C_LOCALE)
        if rc != 0:
            info["error"] = f"auditctl {option} failed (rc {rc}): {err.strip()}"
            return info
        outputs[option] = out
    # auditctl -v prints to stdout or stderr depending on the version; only stdout is kept.
    info["version"] = audit_state.parse_version(outputs["-v"])
    status = audit_state.parse_status(outputs["-s"])
    for name in ("enabled", "immutable", "failure", "lost", "backlog", "backlog_limit",
                 "rate_limit"):
        info[name] = status.get(name)
    pid = status.get("pid") or 0
    info["auditd_pid"] = pid
    info["auditd_running"] = bool(pid) and audit_state.process_name(pid) == "auditd"
    info["rules"] = audit_state.parse_rules(outputs["-l"])
    info["rule_keys"] = audit_state.loaded_keys(info["rules"])
    return info


def plugin_info(located: dict, auditd_pid: Optional[int]) -> dict:
    """The plugin's plugins.d file, configuration and processes (LOCATED: alert_plugin.locate)."""
    conf, config = located["conf"], located["config"]
    processes = audit_state.find_processes(conf["path"]) if conf["path"] else []
    keys = {key for rule_keys in config["rules"].values() for key in rule_keys}
    keys.update(alert_plugin.keys_from_args(conf["args"]))
    return {
        "conf": conf,
        "config": config,
        "processes": processes,
        "running": any(process["ppid"] == auditd_pid for process in processes)
        if auditd_pid else False,
        "alert_keys": sorted(keys),
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec=alert_plugin.PATH_OPTIONS,
        supports_check_mode=True,
    )
    audit = audit_info(module)
    located = alert_plugin.locate(module.params)
    plugin = plugin_info(located, audit["auditd_pid"])
    spool_dir = located["spool_dir"]
    status, status_error = alert_plugin.read_status(spool_dir)
    if not os.path.isdir(spool_dir):
        status_error = f"spool directory {spool_dir} does not exist"
    module.exit_json(changed=False, audit_mail_alert={
        "audit": audit, "plugin": plugin, "status": status, "status_error": status_error})


if __name__ == "__main__":
    main()
