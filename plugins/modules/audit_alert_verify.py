#!/usr/bin/python
# ruff: noqa: EXE001 - ansible-test requires this shebang on a module that is not executable
# Copyright (c) audit mail alert developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

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
    The module removes its request when it is done.
  - When no alert comes it fails with a message that names the first broken hop of the
    chain, and returns every hop it checked in RV(hops).
  - The command runs directly (no shell), as a child of the module process, so the
    event's C(ppid) is the module's process id.
  - Needs root on the target (C(become=true)), to query the kernel audit state and to
    write into the plugin's spool.
version_added: 0.1.0
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
    type: bool
    default: true
notes:
  - The hops, in chain order, are C(audit_enabled), C(rule_loaded), C(auditd_running),
    C(plugin_configured), C(plugin_running), C(plugin_key), C(mailbox_writable) (checked
    before the command runs; if one is broken the command is not run), then C(event_logged),
    C(plugin_alert), C(rate_limit), C(plugin_delivery) (the plugin handed the mail to
    the MTA), C(mta_queue) and C(mailbox).
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
"""

import os
import pwd
import re
import time
import uuid

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.linux_audit.mail_alert.plugins.module_utils import (
    alert_plugin,
    audit_state,
    mail_store,
)

DEFAULT_CONFIG = "/etc/audit/audisp-mailalert.conf"
# What a broken hop means, for the failure message.
BROKEN = {
    "audit_enabled": "kernel auditing is disabled",
    "rule_loaded": "audit rule not loaded",
    "auditd_running": "auditd not running",
    "plugin_configured": "plugin not configured in auditd",
    "plugin_running": "plugin not running",
    "plugin_key": "plugin not configured for the key",
    "mailbox_writable": "mailbox not writable",
    "event_logged": "event not logged",
    "plugin_alert": "plugin raised no alert for the event",
    "rate_limit": "plugin rate limit held the alert back",
    "plugin_delivery": "mail not handed to the MTA",
    "mta_queue": "mail still in the MTA queue, or the MTA down",
    "mailbox": "mailbox not written",
}
MAILBOX_POLL = 0.1  # seconds between two looks at the mailbox (a stat; parsed on change)
AUSEARCH_POLL_MAX = 1.0  # longest pause between two ausearch runs while the event is missing
C_LOCALE = {"LC_ALL": "C", "LANG": "C"}  # ausearch --start parses dates by locale


def hop(name: str, ok: bool, detail: str) -> dict:
    return {"name": name, "ok": bool(ok), "detail": detail}


def alert_matches(alert: dict, event_ids: list[str], token: str | None) -> bool:
    """An alert is ours if it names one of our events (and carries our token, if any)."""
    if audit_state.normalize_event_id(alert.get("event") or "") not in event_ids:
        return False
    return token is None or alert.get("verify") == token


class Verification:
    """One verification: checks before the command, the command, the wait, the diagnosis."""

    def __init__(self, module: AnsibleModule):
        self.module = module
        self.params = module.params
        self.key = module.params["key"]
        self.mailbox = module.params["mailbox"]
        self.hops: list[dict] = []
        self.result: dict = {"changed": False}
        self.validate()
        self.auditctl = module.get_bin_path("auditctl")
        self.conf = alert_plugin.read_plugin_conf(self.params["plugin_conf"])
        self.config_path = (self.params["config"] or alert_plugin.config_from_args(self.conf["args"])
                            or DEFAULT_CONFIG)
        self.config = alert_plugin.read_plugin_config(self.config_path)
        self.spool_dir = self.params["spool_dir"] or self.config["spool_dir"]
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

    def command_argv(self) -> list[str]:
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

    # -- hops checked before the command runs --------------------------------------------

    def auditctl_output(self, option: str) -> tuple[str | None, str]:
        """(stdout of `auditctl OPTION`, or None and the reason why not)."""
        if not self.auditctl:
            return None, "auditctl is not installed"
        rc, out, err = self.module.run_command([self.auditctl, option], environ_update=C_LOCALE)
        if rc != 0:
            return None, f"auditctl {option} failed (rc {rc}): {err.strip()}"
        return out, ""

    def static_hops(self) -> list[dict]:
        """The hops that can be checked without an event, in chain order."""
        out, error = self.auditctl_output("-s")
        status = audit_state.parse_status(out) if out is not None else {}
        if out is None:
            enabled = hop("audit_enabled", False, error)
        else:
            enabled = hop("audit_enabled", status.get("enabled") in (1, 2),
                          f"auditctl -s: enabled {status.get('enabled')}")
        auditd_pid = status.get("pid") or 0
        return [enabled, self.rule_hop(), self.auditd_hop(auditd_pid), self.plugin_configured_hop(),
                self.plugin_running_hop(auditd_pid), self.plugin_key_hop(), self.mailbox_hop()]

    def rule_hop(self) -> dict:
        out, error = self.auditctl_output("-l")
        if out is None:
            return hop("rule_loaded", False, error)
        matching = [rule["rule"] for rule in audit_state.parse_rules(out) if self.key in rule["keys"]]
        if not matching:
            return hop("rule_loaded", False, f"auditctl -l lists no rule with key {self.key}")
        return hop("rule_loaded", True, f"auditctl -l: {'; '.join(matching)}")

    def auditd_hop(self, pid: int) -> dict:
        if not pid:
            return hop("auditd_running", False, "auditctl -s: no audit daemon registered (pid 0)")
        name = audit_state.process_name(pid)
        return hop("auditd_running", name == "auditd",
                   f"auditctl -s: pid {pid}, which is {name or 'not a running process'}")

    def plugin_configured_hop(self) -> dict:
        conf, where = self.conf, self.conf["file"]
        program = conf["path"]
        if not conf["exists"]:
            problem = f"{where} does not exist"
        elif conf["error"]:
            problem = conf["error"]
        elif not conf["active"]:
            problem = f"{where}: active is not yes"
        elif not program or not os.access(program, os.X_OK):
            problem = f"{where}: path {program} is not an executable file"
        elif conf["format"] != "string":
            problem = f"{where}: format is {conf['format']}; the plugin reads format = string"
        elif self.config["error"]:
            problem = self.config["error"]
        elif not os.path.isdir(self.spool_dir):
            problem = f"spool directory {self.spool_dir} does not exist"
        else:
            args = " ".join(conf["args"]) or "none"
            return hop("plugin_configured", True,
                       f"{where}: active, path {program}, args {args}; spool {self.spool_dir}")
        return hop("plugin_configured", False, problem)

    def plugin_running_hop(self, auditd_pid: int) -> dict:
        program = self.conf["path"]
        if not program:
            return hop("plugin_running", False, "no plugin path is configured")
        processes = audit_state.find_processes(program)
        if not processes:
            return hop("plugin_running", False, f"no process runs {program}")
        described = ", ".join(f"pid {process['pid']} (parent {process['ppid']})"
                              for process in processes)
        if auditd_pid and not any(process["ppid"] == auditd_pid for process in processes):
            return hop("plugin_running", False, f"{program} runs ({described}) but not as a "
                       f"child of auditd (pid {auditd_pid}), so it gets no events")
        return hop("plugin_running", True, f"{program}: {described}")

    def plugin_key_hop(self) -> dict:
        args_keys = alert_plugin.keys_from_args(self.conf["args"])
        rules = alert_plugin.rules_for_key(self.key, self.config["rules"], args_keys)
        if rules:
            return hop("plugin_key", True, f"key {self.key} is watched by plugin rule(s) "
                       f"{', '.join(rules)} ({self.config_path})")
        return hop("plugin_key", False, f"no [rule] in {self.config_path} and no argument in "
                   f"{self.conf['file']} lists key {self.key}")

    def mailbox_hop(self) -> dict:
        problem = mail_store.mailbox_unwritable(self.mailbox)
        if problem:
            return hop("mailbox_writable", False, f"the MTA cannot write {self.mailbox}: {problem}")
        return hop("mailbox_writable", True, f"{self.mailbox} can be written")

    # -- the run -------------------------------------------------------------------------

    def fail(self) -> None:
        broken = next(item for item in self.hops if not item["ok"])
        self.module.fail_json(msg=f"{BROKEN[broken['name']]} (hop {broken['name']}): "
                                  f"{broken['detail']}", hops=self.hops, **self.result)

    def run(self) -> None:
        self.hops = self.static_hops()
        if self.module.check_mode:
            self.module.exit_json(hops=self.hops, **self.result)
        if not all(item["ok"] for item in self.hops):
            self.fail()

        before = self.snapshot()
        token = str(uuid.uuid4()) if self.params["verify_marker"] else None
        request = self.write_request(token) if token else None
        try:
            started = time.time()
            rc, _out, _err = self.module.run_command(self.argv)
            self.result["rc"] = rc
            events, alert = self.wait_for_alert(started, token)
        finally:
            if request:
                alert_plugin.remove_verify_request(request)

        if alert is None:
            self.hops.extend(self.diagnose(started, token, events, before))
            self.fail()
        self.hops.append(hop("event_logged", True, f"event {alert['event']}"))
        self.hops.append(hop("mailbox", True, f"alert {alert['message_id']} for event "
                             f"{alert['event']} in {self.mailbox}"))
        self.module.exit_json(hops=self.hops, latency=round(alert["latency"], 3),
                              event=alert["event"], message_id=alert["message_id"],
                              subject=alert["subject"], **self.result)

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

    def find_events(self, started: float) -> list[dict]:
        """Events with our key whose parent is this process, since just before STARTED."""
        ausearch = self.module.get_bin_path("ausearch", required=True)
        argv = [ausearch, "--input-logs", "-k", self.key, "-pp", str(os.getpid()),
                *audit_state.ausearch_start(started - 1), "--format", "raw"]
        rc, out, _err = self.module.run_command(argv, environ_update=C_LOCALE)
        if rc != 0:  # rc 1, "<no matches>", until auditd has written the event
            return []
        return [event for event in audit_state.parse_raw_events(out)
                if event.get("ppid") == os.getpid() and event["time"] >= int(started) - 1]

    def wait_for_alert(self, started: float, token: str | None) -> tuple[list[dict], dict | None]:
        """Poll the audit log (for our event) and the mailbox (for its alert) until the
        alert is there or the timeout passed. Returns (events, alert or None)."""
        deadline = started + self.params["timeout"]
        events: list[dict] = []
        messages: list[dict] = []
        seen = None
        next_search, search_pause = 0.0, 0.05
        while True:
            now = time.time()
            if not events and now >= next_search:
                events = self.find_events(started)
                search_pause = min(search_pause * 2, AUSEARCH_POLL_MAX)
                next_search = now + search_pause
            state = mail_store.mailbox_state(self.mailbox)
            if (state["size"], state["mtime"]) != seen:
                seen = (state["size"], state["mtime"])
                messages = mail_store.alert_messages(self.mailbox, self.key)
            event_ids = [event["id"] for event in events]
            for message in messages:
                if alert_matches(message, event_ids, token):
                    # Maildir: the message file's time; mbox: the file's last write.
                    delivered = message["delivered"] or state["mtime"] or now
                    return events, dict(message, latency=max(0.0, delivered - started))
            if now >= deadline:
                return events, None
            time.sleep(MAILBOX_POLL)

    # -- diagnosis when no alert came ----------------------------------------------------

    def mail_queue(self) -> dict | None:
        """The MTA's queue (mailq): {"ids": queue ids, "error": why mailq failed or None};
        None when there is no mailq to ask. A failing mailq still lists what it read: postfix's
        exits 69 with "Mail system is down" and shows the queue when its daemon is not running."""
        mailq = self.module.get_bin_path("mailq")
        if not mailq:
            return None
        rc, out, err = self.module.run_command([mailq], environ_update=C_LOCALE)
        error = None
        if rc != 0:
            error = f"mailq exited {rc}: {' '.join(err.split())[:300] or 'no message'}"
        return {"ids": mail_store.parse_mail_queue(out), "error": error}

    def snapshot(self) -> dict:
        """What the plugin, the MTA and the mailbox hold before the command runs."""
        status, _error = alert_plugin.read_status(self.spool_dir)
        return {"held": alert_plugin.held_counts(status, self.key),
                "mail_queue": self.mail_queue(),
                "mailbox": mail_store.mailbox_state(self.mailbox)}

    def diagnose(self, started: float, token: str | None, events: list[dict],
                 before: dict) -> list[dict]:
        """The hops after the command, in chain order, from what each part recorded."""
        if not events:
            return [hop("event_logged", False, f"ausearch --input-logs -k {self.key} -pp "
                        f"{os.getpid()} found no event since the command ran (rc "
                        f"{self.result.get('rc')}); does {' '.join(self.params['command'])} "
                        "trigger the rule, and does auditd write its log?")]
        event_ids = [event["id"] for event in events]
        hops = [hop("event_logged", True, f"event(s) {', '.join(event_ids)}")]

        status, status_error = alert_plugin.read_status(self.spool_dir)
        held = {name: count - before["held"].get(name, 0)
                for name, count in alert_plugin.held_counts(status, self.key).items()
                if count > before["held"].get(name, 0)}
        queued = [alert for alert in alert_plugin.queued_alerts(self.spool_dir)
                  if alert_matches(alert, event_ids, token)]
        mail_queue = self.mail_queue()
        new_in_mta = sorted(set((mail_queue or {}).get("ids", []))
                            - set((before["mail_queue"] or {}).get("ids", [])))
        last_delivery = (status or {}).get("last_delivery")
        delivered_since = isinstance(last_delivery, (int, float)) and last_delivery >= started
        unmarked = [message for message in mail_store.alert_messages(self.mailbox, self.key)
                    if token and message["event"] in event_ids and message["verify"] != token]

        if unmarked:
            seen = unmarked[0]["verify"]
            header = f"with X-Audit-Verify {seen} instead of {token}" if seen else "without X-Audit-Verify"
            hops.append(hop("plugin_alert", False, f"the alert for event {unmarked[0]['event']} "
                            f"arrived {header}: the plugin ignored the verification request"))
        elif held or queued or new_in_mta or delivered_since:
            hops.append(hop("plugin_alert", True, "the plugin handled the event"))
        else:
            hops.append(hop("plugin_alert", False, "no trace of an alert for the event: nothing "
                            f"held back, nothing in {self.spool_dir}/queue, nothing new in the "
                            "MTA queue, no delivery in status.json since the command ran"
                            + (f"; {status_error}" if status_error else "")))

        if held:
            rules = ", ".join(f"{name} (+{count})" for name, count in sorted(held.items()))
            why = ("although the verification request was in place" if token
                   else "(an ordinary alert: verify_marker is false)")
            hops.append(hop("rate_limit", False, f"status.json: rule(s) {rules} held alerts "
                            f"back since the command ran, {why}"))
        else:
            hops.append(hop("rate_limit", True, "status.json: nothing held back since the "
                            "command ran"))

        if queued:
            hops.append(hop("plugin_delivery", False, f"the alert waits in {queued[0]['file']}; "
                            f"the plugin's last error: {(status or {}).get('last_error')}"))
        else:
            hops.append(hop("plugin_delivery", True, "no alert for the event waits in "
                            f"{self.spool_dir}/queue"))

        if mail_queue is None:
            hops.append(hop("mta_queue", True, "no mailq on this host to ask"))
        elif mail_queue["error"] or new_in_mta:
            found = [f"{mail_queue['error']} (is the MTA running?)"] if mail_queue["error"] else []
            if new_in_mta:
                found.append("mailq lists mail queued since the command ran: " + ", ".join(new_in_mta))
            hops.append(hop("mta_queue", False, "; ".join(found)))
        else:
            hops.append(hop("mta_queue", True, "mailq lists no mail queued since the command ran"))

        after = mail_store.mailbox_state(self.mailbox)
        found = (f"{after['kind']}, size {before['mailbox']['size']} then {after['size']}"
                 if after["exists"] else "it does not exist")
        hops.append(hop("mailbox", False, f"no alert for event(s) {', '.join(event_ids)} in "
                        f"{self.mailbox} ({found})"))
        return hops


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "command": {"type": "list", "elements": "str", "required": True},
            "key": {"type": "str", "required": True, "no_log": False},
            "mailbox": {"type": "path", "default": "/var/mail/root"},
            "run_as": {"type": "str"},
            "timeout": {"type": "int", "default": 30},
            "verify_marker": {"type": "bool", "default": True},
            **alert_plugin.PATH_OPTIONS,
        },
        supports_check_mode=True,
    )
    Verification(module).run()


if __name__ == "__main__":
    main()
