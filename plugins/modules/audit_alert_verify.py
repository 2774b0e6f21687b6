#!/usr/bin/python
# ruff: noqa: EXE001 - ansible-test requires this shebang on a module that is not executable
# Copyright (c) audit mail alert developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

DOCUMENTATION = r"""
---
module: audit_alert_verify
short_description: Prove that an audit event on this host ends up as an alert mail
description:
  - Proves on the target host that the whole alerting chain works for one audit key
    (audit rule, kernel event, auditd, the audisp-mailalert plugin, the MTA, the mailbox).
  - Records the state of the mailbox, runs a watched O(command), finds the audit event it
    caused with C(ausearch --input-logs), and polls the mailbox (read with the Python
    C(mailbox) package) until the alert for exactly that event arrives, or O(timeout) passes.
  - Before running the command it writes a verification request
    C(<spool_dir>/verify/<pid>) for its own process id, which is the parent of the
    command it runs. The plugin marks the alert for that event with
    C(X-Audit-Verify) and never holds it back or counts it against its rate limit,
    so a verification works even while the limit holds ordinary alerts back.
    The module removes its request when it is done, also when SIGTERM or SIGHUP end it.
    The plugin honours a request only for 600 seconds after it was written and only while
    the module's process (the same one, by its start time) runs.
  - When no alert comes it fails with a message that names the first broken hop of the
    chain, and returns every hop it checked in RV(hops).
  - The command runs directly (no shell), as a child of the module process, so the
    event's C(ppid) is the module's process id.
  - With O(tamper=true) it then proves the plugin's tamper alerts too. It removes the loaded
    rules that carry O(key) and puts them back at once, and waits for the plugin's tamper
    mail for the removed rules (see O(tamper)).
  - Needs root on the target (C(become=true)), to query the kernel audit state and to
    write into the plugin's spool.
version_added: 1.0.0
requirements:
  - C(auditctl) and C(ausearch) on the target (package C(auditd) on Debian and Ubuntu,
    C(audit) on RHEL and Fedora), with auditd running.
  - The audisp-mailalert plugin deployed and registered with auditd (the role
    C(linux_audit.mail_alert.audit_mail_alert) does both).
  - C(setpriv) (util-linux) when O(run_as) is set.
  - C(mailq) of the MTA, optional; without it the C(mta_queue) hop reports that there is
    no mailq to ask.
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
      - In check mode the module only reads the audit and plugin state and reports the
        hops it can check without an event, and the command it would run. It neither runs
        the command nor writes a verification request, and it never fails because of a
        broken hop (a check-mode run of a deployment has not loaded anything yet).
      - The tamper check (O(tamper)) does not run in check mode, because it removes and
        restores audit rules; RV(tamper) says so.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  command:
    description:
      - The watched command to run, as an argument list, for example V([/usr/bin/w]).
      - It must trigger an audit rule with O(key) and exit on its own; its exit code
        does not matter (a denied access can be what the rule watches).
      - The first element is an absolute path or a program found on E(PATH).
    type: list
    elements: str
    required: true
  key:
    description:
      - The audit key the rule carries (C(-k KEY)) and the alert names in C(X-Audit-Key).
    type: str
    required: true
  mailbox:
    description:
      - The mailbox the alert is delivered to, an mbox file or a Maildir directory.
    type: path
    default: /var/mail/root
  run_as:
    description:
      - Run the command as this user (real and effective uid and gid and the user's
        groups, set with C(setpriv), which keeps the process id), so that the event and
        the alert name that user rather than root.
      - The login uid (C(auid)) of the event stays the one of the session that runs the
        module, because C(setpriv) does not change it.
    type: str
  timeout:
    description:
      - Seconds to wait for the alert after the command ran.
    type: int
    default: 30
  verify_marker:
    description:
      - Write the verification request, so that the alert is marked and exempt from
        the plugin's rate limit.
      - Set V(false) to prove the path an ordinary alert takes, rate limit included.
      - The tamper check (O(tamper)) always writes its own request.
    type: bool
    default: true
  tamper:
    description:
      - After the alert chain is proven, also prove the plugin's tamper alert for a removed
        watch. The module writes its verification request C(<spool_dir>/verify/<pid>) again,
        with a fresh token, removes each rule that C(auditctl -l -k KEY)
        lists (C(auditctl -W) for a watch, C(-d) for a syscall rule), puts each back with the
        same words at once, in a C(finally), also when it is interrupted by SIGTERM, SIGINT
        or SIGHUP, then waits up to O(timeout) seconds for the plugin's mail whose
        C(X-Audit-Key) is V(tamper), C(X-Audit-Tamper) is V(rules-removed) and
        C(X-Audit-Verify) is the token. The kernel logs the removal with the SYSCALL record
        of the auditctl the module runs, whose C(ppid) is the module's pid, so the plugin
        marks that mail and does not rate-limit it.
      - When no such mail comes it fails naming the hop that broke, C(tamper_removed),
        C(tamper_logged), C(tamper_plugin), C(tamper_delivery), C(tamper_mta_queue) or
        C(tamper_mailbox).
      - The rule is gone for the few milliseconds between the two auditctl runs; a rule put
        back with C(-a) goes to the end of its filter list.
      - The plugin mails its tamper alerts only with C([tamper] enabled = yes), the default.
        While the role's maintenance marker covers the moment (up to 5 s after a
        deployment), the plugin takes a removal for the role's own work, so the module
        first waits until it no longer does.
    type: bool
    default: false
  tamper_mailbox:
    description:
      - The mailbox the tamper mail is delivered to, when the plugin's C([tamper] to) differs
        from the alert's recipients. Default is O(mailbox).
    type: path
notes:
  - The hops, in chain order, are C(audit_enabled), C(rule_loaded), C(auditd_running),
    C(plugin_configured), C(plugin_running), C(plugin_key), C(mailbox_writable) (checked
    before the command runs; if one is broken the command is not run), then C(event_logged),
    C(plugin_alert), C(rate_limit), C(plugin_delivery) (the plugin handed the mail to
    the MTA), C(mta_queue) and C(mailbox); with O(tamper=true) then C(tamper_removed),
    C(tamper_logged) (the kernel's C(CONFIG_CHANGE op=remove_rule) record),
    C(tamper_plugin), C(tamper_delivery), C(tamper_mta_queue) and C(tamper_mailbox).
  - The module reports C(changed=false) because it changes no configuration, although
    the command it runs raises an audit event and a mail.
seealso:
  - module: linux_audit.mail_alert.audit_mail_alert_info
  - name: ausearch(8)
    description: The tool that finds the event the command caused.
    link: https://man7.org/linux/man-pages/man8/ausearch.8.html
"""

EXAMPLES = r"""
- name: Prove that running w raises a mail alert with key watch_w
  linux_audit.mail_alert.audit_alert_verify:
    command: [/usr/bin/w]
    key: watch_w
  become: true
  register: alert_check

- name: Show how long the alert took
  ansible.builtin.debug:
    msg: "{{ alert_check.event }} arrived after {{ alert_check.latency }} s"

- name: Verify as a login user, into a Maildir, waiting at most a minute
  linux_audit.mail_alert.audit_alert_verify:
    command: [/usr/bin/cat, /etc/shadow]
    key: shadow_read
    run_as: alice
    mailbox: /root/Maildir
    timeout: 60
  become: true

- name: Prove the alert, then that removing the watch raises a tamper mail
  linux_audit.mail_alert.audit_alert_verify:
    command: [/usr/bin/w]
    key: watch_w
    tamper: true
  become: true
  register: tamper_check

- name: Show how long the tamper mail took
  ansible.builtin.debug:
    msg: "{{ tamper_check.tamper.message_id }} arrived after {{ tamper_check.tamper.latency }} s"

- name: Prove that an ordinary alert, not exempt from the rate limit, gets through now
  linux_audit.mail_alert.audit_alert_verify:
    command: [/usr/bin/w]
    key: watch_w
    verify_marker: false
  become: true
"""

RETURN = r"""
command:
  description: The argument list run (or, in check mode, that would run), including
    the C(setpriv) prefix when O(run_as) is set.
  returned: always
  type: list
  elements: str
  sample: [/usr/bin/w]
rc:
  description: Exit code of the command.
  returned: when the command ran
  type: int
  sample: 0
token:
  description: The verification token the alert must carry in C(X-Audit-Verify).
  returned: when the command ran and O(verify_marker=true)
  type: str
  sample: 7d0c5c3e-5d0e-4d4a-9e0b-6b1f1b6f5c11
latency:
  description: Seconds from running the command to the alert in the mailbox
    (the mtime of the mbox file, or the delivery time of the Maildir message).
  returned: success, when the command ran
  type: float
  sample: 0.412
event:
  description: The audit event the command caused and the alert names, as C(TIME:SERIAL).
  returned: success, when the command ran
  type: str
  sample: "1795685868.750:7"
message_id:
  description: The C(Message-ID) of the alert mail.
  returned: success, when the command ran
  type: str
  sample: "<6b07ff02.16000c.2e5a93f4@host1>"
subject:
  description: The subject of the alert mail.
  returned: success, when the command ran
  type: str
  sample: "audit alert: watch_w on host1"
hops:
  description:
    - The hops of the chain the module checked, in chain order, each ok or not.
    - On failure the first one that is not ok is the one the message names.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The hop, for example C(rule_loaded) or C(mta_queue).
      type: str
    ok:
      description: Whether the hop works.
      type: bool
    detail:
      description: What was checked and found.
      type: str
  sample:
    - {name: rule_loaded, ok: true, detail: "auditctl -l: -w /usr/bin/w -p x -k watch_w"}
tamper:
  description: The tamper check (O(tamper)).
  returned: when O(tamper=true)
  type: dict
  contains:
    checked:
      description: Whether the rules were removed and restored. V(false) in check mode and
        when the alert chain is broken.
      type: bool
      sample: true
    skipped:
      description: Why the tamper check did not run.
      returned: when RV(tamper.checked=false)
      type: str
      sample: "check mode: the tamper check removes and restores audit rules"
    rules:
      description: The rules with the key, as C(auditctl -l -k KEY) printed them, removed
        and put back in this order.
      returned: when RV(tamper.checked=true)
      type: list
      elements: str
      sample: ["-w /usr/bin/w -p x -k watch_w"]
    waited:
      description: Seconds the module waited before the removal, because the role's
        maintenance marker in the spool still covered that moment (just after a
        deployment), in which the plugin takes a removal for the role's own work.
      returned: when it waited
      type: float
      sample: 4.2
    token:
      description: The token the tamper mail must carry in C(X-Audit-Verify).
      returned: when the rules were removed
      type: str
      sample: 0b6f1c0e-3a43-4f53-9d0a-3c1f5c7e9a21
    event:
      description: The audit record the tamper mail names in C(X-Audit-Event), as
        C(TIME:SERIAL).
      returned: when the tamper mail arrived
      type: str
      sample: "1795685870.120:9"
    message_id:
      description: The C(Message-ID) of the tamper mail.
      returned: when the tamper mail arrived
      type: str
      sample: "<6b07ff03.16000d.2e5a93f4@host1>"
    subject:
      description: The subject of the tamper mail.
      returned: when the tamper mail arrived
      type: str
      sample: "[audit] tamper: rules removed on host1"
    latency:
      description: Seconds from the removal to the tamper mail in the mailbox.
      returned: when the tamper mail arrived
      type: float
      sample: 1.204
"""

import contextlib
import os
import pwd
import re
import time
import uuid
from typing import List, Optional, Tuple

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.linux_audit.mail_alert.plugins.module_utils import (
    alert_plugin,
    audit_state,
    mail_store,
    verify_hops,
    verify_tamper,
)
from ansible_collections.linux_audit.mail_alert.plugins.module_utils.audit_state import (
    C_LOCALE,
)

MAILBOX_POLL = 0.1  # seconds between two looks at the mailbox (a stat; parsed on change)
AUSEARCH_POLL_MAX = 1.0  # longest pause between two ausearch runs while the event is missing


class Verification:
    """One verification: checks before the command, the command, the wait, the diagnosis."""

    def __init__(self, module: AnsibleModule):
        self.module = module
        self.params = module.params
        self.key = module.params["key"]
        self.mailbox = module.params["mailbox"]
        self.hops: List[dict] = []
        self.result: dict = {"changed": False}
        self.validate()
        self.auditctl = module.get_bin_path("auditctl")
        self.located = alert_plugin.locate(self.params)
        self.conf, self.config, self.spool_dir = (self.located["conf"], self.located["config"],
                                                  self.located["spool_dir"])
        self.argv = self.command_argv()
        self.result["command"] = self.argv

    # -- input ---------------------------------------------------------------------------

    def validate(self) -> None:
        """Refuse bad input, naming the option, before anything on the host changes."""
        params = self.params
        if not re.match(r"^[!-~]{1,255}$", self.key):
            self.module.fail_json(msg=f"key: {self.key!r} is not an audit key (1 to 255 "
                                      "printable characters, no blanks)")
        if not params["command"] or not params["command"][0]:
            self.module.fail_json(msg="command: give the program to run and its arguments, "
                                      "for example [/usr/bin/w]")
        if not 1 <= params["timeout"] <= 3600:
            self.module.fail_json(msg=f"timeout: {params['timeout']} is out of range "
                                      "(1 to 3600 seconds)")
        if params["run_as"] is not None:
            try:
                pwd.getpwnam(params["run_as"])
            except KeyError:
                self.module.fail_json(msg=f"run_as: there is no user {params['run_as']!r} "
                                          "on this host")
        if os.geteuid() != 0:
            self.module.fail_json(msg="audit_alert_verify needs root (become: true) to query "
                                      "the kernel audit state and write the plugin's spool")

    def command_argv(self) -> List[str]:
        """The argument list to run: the program resolved to a path, setpriv for run_as."""
        command = list(self.params["command"])
        program = command[0]
        if os.path.isabs(program):
            if not (os.path.isfile(program) and os.access(program, os.X_OK)):
                self.module.fail_json(msg=f"command: {program} is not an executable file")
        else:
            resolved = self.module.get_bin_path(program)
            if not resolved:
                self.module.fail_json(msg=f"command: {program!r} is not found on PATH")
            command[0] = resolved
        user = self.params["run_as"]
        if user is None:
            return command
        entry = pwd.getpwnam(user)
        # setpriv changes the ids and execs in place: the pid, so the event's ppid, stay.
        setpriv = self.module.get_bin_path("setpriv", required=True)
        return [setpriv, f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups",
                "--", *command]

    # -- the evidence before the command runs -------------------------------------------

    def auditctl_output(self, option: str) -> Tuple[Optional[str], str]:
        """(stdout of `auditctl OPTION`, or None and the reason why not)."""
        if not self.auditctl:
            return None, "auditctl is not installed"
        rc, out, err = self.module.run_command([self.auditctl, option], environ_update=C_LOCALE)
        if rc != 0:
            return None, f"auditctl {option} failed (rc {rc}): {err.strip()}"
        return out, ""

    def look_before(self) -> dict:
        """What verify_hops.before_command judges: the kernel's audit status and rules,
        auditd's and the plugin's processes, the plugin's files, the mailbox."""
        status_out, status_error = self.auditctl_output("-s")
        rules_out, rules_error = self.auditctl_output("-l")
        status = audit_state.parse_status(status_out) if status_out is not None else None
        auditd_pid = (status or {}).get("pid") or 0
        program = self.conf["path"]
        return {
            "key": self.key, "status": status, "status_error": status_error,
            "rules": audit_state.parse_rules(rules_out) if rules_out is not None else None,
            "rules_error": rules_error,
            "auditd_name": audit_state.process_name(auditd_pid) if auditd_pid else None,
            "conf": self.conf, "config": self.config,
            "program_executable": bool(program) and os.access(program, os.X_OK),
            "processes": audit_state.find_processes(program) if program else [],
            "spool_dir": self.spool_dir, "spool_exists": os.path.isdir(self.spool_dir),
            "mailbox": self.mailbox, "mailbox_problem": mail_store.mailbox_unwritable(self.mailbox),
        }

    # -- the run -------------------------------------------------------------------------

    def fail(self) -> None:
        if self.params["tamper"] and "tamper" not in self.result:
            self.result["tamper"] = {"checked": False,
                                     "skipped": "the alert chain is broken: not checked"}
        self.module.fail_json(msg=verify_hops.failure_message(self.hops), hops=self.hops,
                              **self.result)

    def run(self) -> None:
        self.hops = verify_hops.before_command(self.look_before())
        if self.module.check_mode:
            if self.params["tamper"]:
                self.result["tamper"] = {"checked": False, "skipped": "check mode: the tamper "
                                         "check removes and restores audit rules"}
            self.module.exit_json(hops=self.hops, **self.result)
        if not all(item["ok"] for item in self.hops):
            self.fail()
        alert = self.prove_alert()
        if self.params["tamper"]:
            mailbox = self.params["tamper_mailbox"] or self.mailbox
            hops, self.result["tamper"] = verify_tamper.TamperCheck(
                self.module, self.auditctl, self.key, self.located, mailbox).run()
            self.hops.extend(hops)
            if not all(item["ok"] for item in hops):
                self.fail()
        self.module.exit_json(hops=self.hops, latency=round(alert["latency"], 3),
                              event=alert["event"], message_id=alert["message_id"],
                              subject=alert["subject"], **self.result)

    def prove_alert(self) -> dict:
        """Run the command and wait for its alert; the alert, or fail naming the hop."""
        before = self.snapshot()
        token = str(uuid.uuid4()) if self.params["verify_marker"] else None
        with contextlib.ExitStack() as request:
            if token:
                request.enter_context(alert_plugin.request_removed_at_end(self.write_request(token)))
            started = time.time()
            rc, _out, _err = self.module.run_command(self.argv)
            self.result["rc"] = rc
            events, alert = self.wait_for_alert(started, token)

        if alert is None:
            self.hops.extend(verify_hops.after_command(
                self.look_after(started, token, events, before)))
            self.fail()
        self.hops.append(verify_hops.hop("event_logged", True, f"event {alert['event']}"))
        self.hops.append(verify_hops.hop("mailbox", True, f"alert {alert['message_id']} for "
                                         f"event {alert['event']} in {self.mailbox}"))
        return alert

    def write_request(self, token: str) -> str:
        """Ask the plugin to mark, and not rate-limit, the alerts of our command."""
        try:
            request = alert_plugin.write_verify_request(self.spool_dir, os.getpid(), token)
        except OSError as error:
            self.module.fail_json(msg=f"spool_dir: cannot write the verification request into "
                                      f"{self.spool_dir}/verify: {error}",
                                  hops=self.hops, **self.result)
        self.result["token"] = token
        return request

    def find_events(self, started: float) -> List[dict]:
        """Events with our key whose parent is this process, since just before STARTED."""
        ausearch = self.module.get_bin_path("ausearch", required=True)
        argv = [ausearch, "--input-logs", "-k", self.key, "-pp", str(os.getpid()),
                *audit_state.ausearch_start(started - 1), "--format", "raw"]
        rc, out, _err = self.module.run_command(argv, environ_update=C_LOCALE)
        if rc != 0:  # rc 1, "<no matches>", until auditd has written the event
            return []
        return [event for event in audit_state.parse_raw_events(out)
                if event.get("ppid") == os.getpid() and event["time"] >= int(started) - 1]

    def wait_for_alert(self, started: float, token: Optional[str]) -> Tuple[List[dict], Optional[dict]]:
        """Poll the audit log (for our event) and the mailbox (for its alert) until the
        alert is there or the timeout passed. Returns (events, alert or None)."""
        deadline = started + self.params["timeout"]
        events: List[dict] = []
        watch = mail_store.MailboxWatch(self.mailbox, self.key)
        next_search, search_pause = 0.0, 0.05
        while True:
            now = time.time()
            if not events and now >= next_search:
                events = self.find_events(started)
                search_pause = min(search_pause * 2, AUSEARCH_POLL_MAX)
                next_search = now + search_pause
            messages, state = watch.look()
            event_ids = [event["id"] for event in events]
            for message in messages:
                if verify_hops.alert_matches(message, event_ids, token):
                    # Maildir: the message file's time; mbox: the file's last write.
                    delivered = message["delivered"] or state["mtime"] or now
                    return events, dict(message, latency=max(0.0, delivered - started))
            if now >= deadline:
                return events, None
            time.sleep(MAILBOX_POLL)

    # -- the evidence when no alert came -------------------------------------------------

    def snapshot(self) -> dict:
        """What the plugin, the MTA and the mailbox hold before the command runs."""
        status, _error = alert_plugin.read_status(self.spool_dir)
        return {"held": alert_plugin.held_counts(status, self.key),
                "mail_queue": mail_store.mail_queue(self.module),
                "mailbox": mail_store.mailbox_state(self.mailbox)}

    def look_after(self, started: float, token: Optional[str], events: List[dict],
                   before: dict) -> dict:
        """What verify_hops.after_command judges: what each part after the command holds
        now, next to the snapshot BEFORE."""
        status, status_error = alert_plugin.read_status(self.spool_dir)
        return {
            "key": self.key, "command": self.params["command"], "rc": self.result.get("rc"),
            "started": started, "token": token, "events": events,
            "search": f"ausearch --input-logs -k {self.key} -pp {os.getpid()}",
            "status": status, "status_error": status_error, "held_before": before["held"],
            "spool_dir": self.spool_dir, "queued": alert_plugin.queued_alerts(self.spool_dir),
            "mail_queue_before": before["mail_queue"], "mail_queue": mail_store.mail_queue(self.module),
            "mailbox": self.mailbox, "messages": mail_store.alert_messages(self.mailbox, self.key),
            "mailbox_before": before["mailbox"],
            "mailbox_after": mail_store.mailbox_state(self.mailbox),
        }


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "command": {"type": "list", "elements": "str", "required": True},
            "key": {"type": "str", "required": True, "no_log": False},
            "mailbox": {"type": "path", "default": "/var/mail/root"},
            "run_as": {"type": "str"},
            "timeout": {"type": "int", "default": 30},
            "verify_marker": {"type": "bool", "default": True},
            "tamper": {"type": "bool", "default": False},
            "tamper_mailbox": {"type": "path"},
            **alert_plugin.PATH_OPTIONS,
        },
        supports_check_mode=True,
    )
    Verification(module).run()


if __name__ == "__main__":
    main()
