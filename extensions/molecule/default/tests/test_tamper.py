"""Tamper findings on the VM: `auditctl -D` and `auditctl -e 0`, run by hand, each yield
exactly one tamper mail naming the change; the role's own runs (converge, idempotence)
yielded none; and on the SELinux VM no AVC names the plugin's domain afterwards.
Runs after test_selinux.py (file order), so that its denial checks run again here."""

import json
import re

from test_alert import MAILBOX, read_mbox
from test_selinux import DOMAIN, KEY, wait_for

STATUS = "/var/spool/audisp-mailalert/status.json"


def target_time(host):
    """The target's time as its kernel stamps events (a coarse clock, up to a tick behind)."""
    return float(host.check_output("date +%s.%N")) - 0.02


def tamper_mails(host, since=0.0):
    """Tamper mails in the mailbox from events (or, without one, sent) at since or later."""
    found = []
    for message in read_mbox(host, MAILBOX):
        if message["X-Audit-Tamper"] is None:
            continue
        event = message["X-Audit-Event"]
        when = float(event.split(":")[0]) if event else message["Date"].datetime.timestamp() + 1
        if when >= since:
            found.append(message)
    return found


def tamper_sent(host):
    status = json.loads(host.file(STATUS).content_string)
    return status["rules"]["tamper"]["sent"], status["queue"]


def the_only_tamper_mail(host, since, sent_before, kind):
    """Wait for the plugin to have mailed one more finding and delivered it; then the
    mailbox must hold exactly that one since the action."""
    wait_for(lambda: tamper_sent(host) == (sent_before + 1, 0),
             f"the plugin to mail one tamper finding ({kind}); status: {tamper_sent(host)}")
    mails = wait_for(lambda: tamper_mails(host, since), f"a {kind} mail in {MAILBOX}")
    assert [m["X-Audit-Tamper"] for m in mails] == [kind], [m["Subject"] for m in mails]
    return mails[0]


def test_the_role_s_own_runs_mailed_no_tamper_finding(host, kernel_audit):
    assert [m["Subject"] for m in tamper_mails(host)] == []


def test_deleting_all_rules_yields_one_mail(host, kernel_audit):
    sent, _queue = tamper_sent(host)
    since = target_time(host)
    try:
        host.run_expect([0], "auditctl -D")
        mail = the_only_tamper_mail(host, since, sent, "rules-removed")
    finally:
        host.run_expect([0], "augenrules --load")  # by hand too, but no watched rule to remove
    assert f"Removed keys: {KEY}" in mail.get_content()
    # auditctl -l prints a watch as "-w PATH -p x -k KEY", a syscall rule with "key=KEY".
    assert re.search(rf"(-k |key=){KEY}\b", host.check_output("auditctl -l"))


def test_disabling_auditing_yields_one_mail(host, kernel_audit):
    sent, _queue = tamper_sent(host)
    since = target_time(host)
    try:
        host.run_expect([0], "auditctl -e 0")
        mail = the_only_tamper_mail(host, since, sent, "audit-disabled")
    finally:
        host.run_expect([0], "auditctl -e 1")
    assert "audit_enabled 1 -> 0" in mail.get_content()
    assert "exe=/usr/sbin/auditctl" in mail.get_content() or "exe=/sbin/auditctl" in mail.get_content()


def test_no_denials_after_the_tamper_checks(host, kernel_audit):
    """The plugin read the kernel's audit status and mailed the findings without a denial
    (on a host without SELinux, ausearch finds no AVC at all)."""
    found = host.run("ausearch -m AVC,USER_AVC --input-logs --format raw")
    assert found.rc in (0, 1), found.stderr
    assert re.findall(rf"^.*[st]context=\S*:{DOMAIN}:.*$", found.stdout, re.MULTILINE) == []
