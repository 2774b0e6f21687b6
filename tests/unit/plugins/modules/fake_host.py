"""A fake host for the module unit tests: auditctl, ausearch and mailq answer through a
mocked AnsibleModule.run_command; the plugin's files, spool and the mailbox are real files
under tmp_path. Tests then break one part of the chain at a time."""

from __future__ import annotations

import json
import mailbox
import os
import time

AUDITD_PID = 1696
KEY = "watch_w"
BINARIES = {"auditctl": "/sbin/auditctl", "ausearch": "/sbin/ausearch", "mailq": "/usr/bin/mailq",
            "setpriv": "/usr/bin/setpriv"}


class ModuleExit(Exception):
    """exit_json or fail_json was called; `result` holds its arguments."""

    def __init__(self, failed: bool, result: dict):
        super().__init__(result)
        self.failed = failed
        self.result = result


class FakeHost:
    """What the mocked commands answer, and what the watched command sets off."""

    def __init__(self, tmp_path):
        self.spool = tmp_path / "spool"
        (self.spool / "queue").mkdir(parents=True)
        self.plugin_conf = tmp_path / "plugins.d-audisp-mailalert.conf"
        self.config = tmp_path / "audisp-mailalert.conf"
        self.mailbox = str(tmp_path / "root.mbox")
        self.watched = tmp_path / "watched"
        self.plugin = str(tmp_path / "audisp-mailalert")
        for program in (self.watched, self.plugin):
            with open(program, "w") as handle:
                handle.write("#!/bin/sh\n")
            os.chmod(program, 0o755)
        self.write_plugin_conf()
        self.config.write_text(f"[spool]\ndir = {self.spool}\n[rule exec]\nkeys = {KEY}\n")
        self.status_text = f"enabled 1\nfailure 1\npid {AUDITD_PID}\nlost 0\nbacklog 0\n"
        self.rules_text = f"-w /usr/bin/w -p x -k {KEY}\n"
        self.plugin_running = True
        self.log_events = True  # auditd writes the command's event to its log
        self.deliver = True  # the plugin and the MTA put the alert in the mailbox
        self.mail_token = None  # None: the token of the verify request; "": no header
        # successive mailq answers: the output, or (rc, stdout, stderr)
        self.mail_queue = ["Mail queue is empty\n"]
        self.on_command = []  # more effects of the watched command: f(host)
        self.calls: list[list[str]] = []
        self.event_id = None
        self.request_seen = None  # the verify request content when the command ran
        # The tamper path: what auditctl -W/-d and -w/-a do, and what follows a removal.
        self.removal_fails = False  # auditctl -W exits 1
        self.restore_fails = False  # auditctl -w exits 1
        self.log_removals = True  # the kernel logs CONFIG_CHANGE op=remove_rule
        self.tamper_deliver = True  # the plugin mails the removal, with the request's token
        self.tamper_token = None  # None: the token of the verify request; "": no header
        self.on_removal = []  # more effects of a removal: f(host)
        self.removals: list[str] = []  # CONFIG_CHANGE raw records of the removals
        self.tamper_request_seen = None

    def write_plugin_conf(self, active="yes", keys=""):
        """The plugins.d file; it names the config with --config, as the role does."""
        self.plugin_conf.write_text(f"active = {active}\ndirection = out\npath = {self.plugin}\n"
                                    f"type = always\nformat = string\n"
                                    f"args = --config {self.config} {keys}\n")

    def run_command(self, args, **_kwargs):
        self.calls.append(list(args))
        program = os.path.basename(args[0])
        if program == "auditctl":
            if args[1] in ("-W", "-d", "-w", "-a"):
                return self.change_rule(args[1:])
            return {"-s": (0, self.status_text, ""), "-l": (0, self.rules_text, ""),
                    "-v": (0, "auditctl version 3.0.9\n", "")}[args[1]]
        if program == "ausearch" and "CONFIG_CHANGE" in args:
            if not self.removals:
                return 1, "", "<no matches>\n"
            return 0, "".join(self.removals), ""
        if program == "ausearch":
            if not (self.log_events and self.event_id):
                return 1, "", "<no matches>\n"
            return 0, (f"type=SYSCALL msg=audit({self.event_id}): syscall=59 ppid={os.getpid()} "
                       f'pid=4711 auid=0 uid=0 exe="{self.watched}" key="{KEY}"\n'), ""
        if program == "mailq":
            answer = self.mail_queue.pop(0) if len(self.mail_queue) > 1 else self.mail_queue[0]
            return answer if isinstance(answer, tuple) else (0, answer, "")
        return self.run_watched(args)

    def run_watched(self, args):
        now = time.time()
        self.event_id = f"{int(now)}.{int(now * 1000) % 1000:03d}:{len(self.calls)}"
        request = self.spool / "verify" / str(os.getpid())
        # "TOKEN START": the token, and the module's start time (the plugin's same-process test)
        self.request_seen = request.read_text().split()[0] if request.exists() else None
        for effect in self.on_command:
            effect(self)
        if self.deliver:
            token = self.request_seen if self.mail_token is None else self.mail_token
            self.add_mail(self.alert(token))
        return 0, "", ""

    def change_rule(self, words):
        """auditctl -W/-d (remove) or -w/-a (add) of a rule as auditctl -l prints it."""
        rule = " ".join([{"-W": "-w", "-d": "-a"}.get(words[0], words[0]), *words[1:]])
        lines = [line for line in self.rules_text.splitlines() if line.startswith("-")]
        if words[0] in ("-w", "-a"):
            if self.restore_fails:
                return 1, "", "Error sending add rule data request (Rule exists)\n"
            self.rules_text = "\n".join([*lines, rule]) + "\n"
            return 0, "", ""
        if self.removal_fails or rule not in lines:
            return 1, "", "Error sending delete rule data request (No such file or directory)\n"
        lines.remove(rule)
        self.rules_text = "\n".join(lines) + "\n" if lines else "No rules\n"
        now = time.time()
        record_id = f"{int(now)}.{int(now * 1000) % 1000:03d}:{900 + len(self.removals)}"
        if self.log_removals:
            self.removals.append(f'type=CONFIG_CHANGE msg=audit({record_id}): auid=0 ses=1 '
                                 f'op=remove_rule key="{KEY}" list=4 res=1\n')
        request = self.spool / "verify" / str(os.getpid())  # auditctl's parent: the module
        self.tamper_request_seen = request.read_text().split()[0] if request.exists() else None
        for effect in self.on_removal:
            effect(self, record_id)
        if self.tamper_deliver:
            token = self.tamper_request_seen if self.tamper_token is None else self.tamper_token
            self.add_mail(self.tamper_mail(record_id, token))
        return 0, "", ""

    def tamper_mail(self, record_id, token):
        text = (f"From: root@host\nTo: root\nSubject: [audit] tamper: rules removed on host\n"
                f"Message-ID: <t{record_id}@host>\nX-Audit-Key: tamper\nX-Audit-Rule: tamper\n"
                f"X-Audit-Tamper: rules-removed\nX-Audit-Event: {record_id}@host\n")
        if token:
            text += f"X-Audit-Verify: {token}\n"
        return text + f"\nRemoved keys: {KEY}\n"

    def alert(self, token):
        text = (f"From: root@host\nTo: root\nSubject: [audit] {KEY} on host\n"
                f"Message-ID: <{self.event_id}@host>\nX-Audit-Key: {KEY}\n"
                f"X-Audit-Rule: exec\nX-Audit-Event: {self.event_id}@host\n")
        if token:
            text += f"X-Audit-Verify: {token}\n"
        return text + "\nalert body\n"

    def add_mail(self, text):
        box = (mailbox.Maildir(self.mailbox) if os.path.isdir(self.mailbox)
               else mailbox.mbox(self.mailbox))
        box.add(text)
        box.close()

    def write_status(self, held=0, last_delivery=None, last_error=None):
        (self.spool / "status.json").write_text(json.dumps({
            "pid": 2000, "updated": time.time(), "queue": 0, "last_error": last_error,
            "last_delivery": last_delivery,
            "rules": {"exec": {"keys": [KEY], "window_end": time.time() + 300, "sent": 10,
                               "held": held}}}))

    def args(self, **extra):
        return dict({"command": [str(self.watched)], "key": KEY, "mailbox": self.mailbox,
                     "plugin_conf": str(self.plugin_conf), "timeout": 2}, **extra)

    def auditctl_changes(self):
        """The auditctl runs that removed or added a rule, as argument lists."""
        return [call[1:] for call in self.calls if os.path.basename(call[0]) == "auditctl"
                and call[1] in ("-W", "-d", "-w", "-a")]

    def watched_runs(self):
        tools = ("auditctl", "ausearch", "mailq")
        return [call for call in self.calls if os.path.basename(call[0]) not in tools]

    def processes(self, program, proc="/proc"):
        if not self.plugin_running or program != self.plugin:
            return []
        return [{"pid": 2000, "ppid": AUDITD_PID, "cmdline": ["/usr/bin/python3", self.plugin]}]
