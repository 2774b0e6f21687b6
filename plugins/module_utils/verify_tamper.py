# Copyright (c) audit mail alert developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The tamper check of audit_alert_verify (option tamper): remove the loaded rules that
carry the key, put them back at once, and wait for the plugin's tamper mail
(`X-Audit-Tamper: rules-removed`) marked with the token of the verification request
<spool>/verify/<pid>: auditctl runs as the module's child, and the kernel attaches the
SYSCALL record with its ppid to the CONFIG_CHANGE record (docs/design.md). When the mail
does not come, the evidence goes to verify_hops.tamper_after, which names the hop."""

import contextlib
import os
import signal
import time
import uuid
from typing import List, Optional, Tuple

from ansible_collections.linux_audit.mail_alert.plugins.module_utils import (
    alert_plugin,
    audit_state,
    mail_store,
    verify_hops,
)
from ansible_collections.linux_audit.mail_alert.plugins.module_utils.audit_state import (
    C_LOCALE,
)

MAILBOX_POLL = 0.1


class Interrupted(Exception):
    """A signal that ends the module arrived while a rule was removed."""


@contextlib.contextmanager
def signals_held():
    """Hold SIGTERM, SIGINT and SIGHUP while the rules are removed: each is noted and acted
    on (Interrupted) only once the rules are back, so a task cancelled meanwhile does not
    leave the watch removed. (SIGKILL cannot be held: the window is a few auditctl runs.)"""
    arrived: List[int] = []
    previous = {number: signal.signal(number, lambda caught, _frame: arrived.append(caught))
                for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if arrived:
        raise Interrupted(f"signal {arrived[0]}")


class TamperCheck:
    """One tamper check for KEY, run after the alert chain was proven."""

    def __init__(self, module, auditctl: str, key: str, located: dict, mailbox: str):
        self.module, self.auditctl, self.key = module, auditctl, key
        self.config, self.spool_dir = located["config"], located["spool_dir"]
        self.mailbox = mailbox
        self.result: dict = {"checked": True}

    def auditctl_run(self, args: List[str]) -> Tuple[int, str, str]:
        return self.module.run_command([self.auditctl, *args], environ_update=C_LOCALE)

    def run(self) -> Tuple[List[dict], dict]:
        """(the tamper hops, the `tamper` result)."""
        refused = self.read_rules()
        if refused:
            return refused, self.result
        rules = self.result["rules"]
        before = self.look_mail()
        token = str(uuid.uuid4())
        request = alert_plugin.write_verify_request(self.spool_dir, os.getpid(), token)
        self.result["token"] = token
        with alert_plugin.request_removed_at_end(request):
            started = time.time()
            error = self.remove_and_restore(rules)
            if error:
                return [verify_hops.hop("tamper_removed", False, error)], self.result
            removed = verify_hops.hop("tamper_removed", True, "removed and put back: "
                                      + "; ".join(rules))
            message = self.wait_for_mail(started, token)
        if message is None:
            hops = verify_hops.tamper_after(self.look_after(started, token, before))
            return [removed, *hops], self.result
        self.result.update(event=message["event"], message_id=message["message_id"],
                           subject=message["subject"], latency=round(message["latency"], 3))
        return [removed, verify_hops.hop("tamper_logged", True, f"event {message['event']}"),
                verify_hops.hop("tamper_mailbox", True, f"tamper mail {message['message_id']} "
                                f"in {self.mailbox}")], self.result

    def read_rules(self) -> List[dict]:
        """Note the loaded rules with the key in the result; the hop that forbids removing
        them, or []."""
        rc, out, err = self.auditctl_run(["-l", "-k", self.key])
        if rc != 0:
            return [verify_hops.hop("tamper_removed", False,
                                    f"auditctl -l -k {self.key} failed (rc {rc}): {err.strip()}")]
        self.result["rules"] = [rule["rule"] for rule in audit_state.parse_rules(out)
                                if self.key in rule["keys"]]
        _rc, status, _err = self.auditctl_run(["-s"])
        enabled = audit_state.parse_status(status).get("enabled")
        refused = verify_hops.tamper_before(self.key, self.result["rules"], enabled, self.config)
        if refused:
            return refused
        # Just after a deployment the role's marker may still cover the next seconds.
        pause, broken = verify_hops.maintenance_pause(
            alert_plugin.read_maintenance(self.spool_dir), alert_plugin.read_boot_id(),
            alert_plugin.read_uptime(), self.module.params["timeout"], self.spool_dir)
        if pause:
            self.result["waited"] = round(pause, 3)
            time.sleep(pause)  # a deadline on the clock, no event to wait for
        return [broken] if broken else []

    def remove_and_restore(self, rules: List[str]) -> Optional[str]:
        """Delete each rule, then add back each one deleted, even on an error or a signal.
        Returns why a deletion failed, or None. A rule that cannot be put back, or a signal,
        fails the module once the others are back, naming it."""
        removed: List[str] = []
        error = interrupted = None
        try:
            with signals_held():
                try:
                    for rule in rules:
                        error = self.delete(rule)
                        if error:
                            break
                        removed.append(rule)
                finally:
                    lost = [rule for rule in removed if self.auditctl_run(rule.split())[0] != 0]
        except Interrupted as signalled:
            interrupted = str(signalled)
        if lost:
            self.module.fail_json(msg="tamper: could not put back the audit rule(s) "
                                      f"{'; '.join(lost)}: load them again (auditctl RULE, or "
                                      "augenrules --load)", tamper=self.result)
        if interrupted:
            self.module.fail_json(msg=f"tamper: interrupted by {interrupted} after the rules "
                                      "were put back", tamper=self.result)
        return error

    def delete(self, rule: str) -> Optional[str]:
        """Delete one rule as `auditctl -l` printed it; why that failed, or None."""
        argv = audit_state.deletion_argv(rule)
        if argv is None:
            return f"{rule}: not a rule that auditctl -d or -W deletes"
        rc, _out, err = self.auditctl_run(argv)
        return f"auditctl {' '.join(argv)} failed (rc {rc}): {err.strip()}" if rc != 0 else None

    def wait_for_mail(self, started: float, token: str) -> Optional[dict]:
        """The tamper mail with our token in the mailbox, or None at the timeout."""
        deadline = started + self.module.params["timeout"]
        watch = mail_store.MailboxWatch(self.mailbox, alert_plugin.TAMPER_KEY)
        while True:
            now = time.time()
            messages, state = watch.look()
            for message in messages:
                if message["tamper"] == alert_plugin.TAMPER_RULES_REMOVED and message["verify"] == token:
                    delivered = message["delivered"] or state["mtime"] or now
                    return dict(message, latency=max(0.0, delivered - started))
            if now >= deadline:
                return None
            time.sleep(MAILBOX_POLL)

    # -- the evidence when no tamper mail came ---------------------------------------------

    def look_mail(self) -> dict:
        """What the plugin, the MTA and the mailbox hold before the removal."""
        status, _error = alert_plugin.read_status(self.spool_dir)
        return {"status": status, "mail_queue": mail_store.mail_queue(self.module),
                "mailbox": mail_store.mailbox_state(self.mailbox)}

    def look_after(self, started: float, token: str, before: dict) -> dict:
        """What verify_hops.tamper_after judges."""
        ausearch = self.module.get_bin_path("ausearch", required=True)
        argv = [ausearch, "--input-logs", "-m", "CONFIG_CHANGE", "-k", self.key,
                *audit_state.ausearch_start(started - 1), "--format", "raw"]
        rc, out, _err = self.module.run_command(argv, environ_update=C_LOCALE)
        status, status_error = alert_plugin.read_status(self.spool_dir)
        return {
            "key": self.key, "token": token, "started": started,
            "search": f"ausearch --input-logs -m CONFIG_CHANGE -k {self.key}", "changes": audit_state.parse_rule_changes(
                out if rc == 0 else ""),
            "status_before": before["status"], "status": status,
            "status_error": status_error, "spool_dir": self.spool_dir,
            "queued": alert_plugin.queued_alerts(self.spool_dir),
            "mail_queue_before": before["mail_queue"], "mail_queue": mail_store.mail_queue(self.module),
            "mailbox": self.mailbox, "messages": mail_store.alert_messages(self.mailbox, alert_plugin.TAMPER_KEY),
            "mailbox_before": before["mailbox"],
            "mailbox_after": mail_store.mailbox_state(self.mailbox),
        }
