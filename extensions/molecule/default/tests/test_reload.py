"""auditd's reloads and restarts on the VM (issue #23's done-when), whatever its audit
version (3.x to 4.1 HUP the plugin; 4.2 stops it and starts a new one): an admin's reload
mails nothing and the rate limit holds across it (max_mails 2: three events, reload, three
events give two alerts and one digest of 4 at the window's end); a restart of auditd loses
no held-back count; a deactivated plugins.d entry plus a reload gives one tamper mail; the
plugin logged no error. The config and the entry are restored after each test.

The restarts run inside a maintenance window, as the role's own restarts do: their
`auditd-stopped` finding is the role's business, not this test's. The deactivated entry's
`plugin-stopped` mail stays in the mailbox: test_tamper.py's check that the role's own runs
mailed no finding must count only the mails from before these tests."""

import contextlib
import json
import re
import time

import pytest
from test_alert import MAILBOX, read_mbox
from test_selinux import KEY, WATCHED, wait_for

CONFIG = "/etc/audit/audisp-mailalert.conf"
ENTRY = "/etc/audit/plugins.d/audisp-mailalert.conf"
SPOOL = "/var/spool/audisp-mailalert"
STATUS = f"{SPOOL}/status.json"
WINDOW = 60  # seconds: the test's window, long enough for its events on TCG


def target_time(host):
    return float(host.check_output("date +%s.%N")) - 0.02


def status(host):
    return json.loads(host.file(STATUS).content_string)


def rule_row(host):
    """The status.json row of the rule that watches KEY."""
    rows = [row for row in status(host)["rules"].values() if KEY in row["keys"]]
    return rows[0] if rows else {}


def reload_auditd(host):
    """An admin's reload: SIGHUP to auditd (the pid the kernel knows)."""
    host.run_expect([0], "kill -HUP $(auditctl -s | sed -n 's/^pid //p')")


def restart_auditd(host):
    host.run_expect([0], "systemctl restart auditd || service auditd restart")


@contextlib.contextmanager
def maintenance(host):
    """The role's maintenance window around a restart (docs/design.md, the marker), opened
    and closed as the audit_mail_alert_maintenance module does."""
    boot = host.check_output("cat /proc/sys/kernel/random/boot_id").strip()

    def write(opened, until):
        now = int(time.time())
        host.run_expect([0], f"umask 077; printf '%s\\n' '{now} {now + int(until - opened)} {boot} "
                             f"{opened:.2f} {until:.2f}' > {SPOOL}/maintenance")
    opened = uptime(host)
    write(opened, opened + 30)
    try:
        yield
    finally:
        write(opened, uptime(host))


def uptime(host):
    return float(host.check_output("cut -d' ' -f1 /proc/uptime"))


def mails(host, since, header=None):
    found = []
    for message in read_mbox(host, MAILBOX):
        event = message["X-Audit-Event"]
        when = float(event.split(":")[0]) if event else message["Date"].datetime.timestamp() + 1
        if when >= since and (header is None or message[header] is not None):
            found.append(message)
    return found


def row_shows(host, sent, held):
    row = rule_row(host)
    return row.get("sent") == sent and row.get("held") == held


def edit_in_place(host, path, sed_script):
    """Edit path keeping its inode, and so its owner, mode and SELinux label (sed -i and mv
    would leave a file labelled as new in its directory, which the plugin may not read)."""
    host.run_expect([0], f"sed '{sed_script}' {path} > /root/test-reload.edit && cat /root/test-reload.edit > {path}"
                         " && rm /root/test-reload.edit")


def put_back(host, path, saved):
    """The file's content as it was, in the same inode."""
    host.run_expect([0], f"cat /root/test-reload.saved > {path} && rm /root/test-reload.saved")
    assert host.file(path).content_string == saved


@pytest.fixture
def limited(host, kernel_audit):
    """max_mails 2 and a short window for the test; the role's config back afterwards."""
    saved = host.file(CONFIG).content_string
    host.run_expect([0], f"cp {CONFIG} /root/test-reload.saved")
    edit_in_place(host, CONFIG, f"s/^max_mails = .*/max_mails = 2/; s/^window = .*/window = {WINDOW}/")
    wait_for(lambda: rule_row(host).get("window_end") is None or rule_row(host)["window_end"] < time.time(),
             "no window of the rule left open by an earlier test")
    reload_auditd(host)
    yield
    put_back(host, CONFIG, saved)
    reload_auditd(host)


def three_events(host):
    for _run in range(3):
        host.run_expect([0], WATCHED)


def test_an_admins_reload_mails_nothing_and_the_limit_holds(host, limited):
    since = target_time(host)
    three_events(host)
    wait_for(lambda: row_shows(host, 2, 1), "status.json: sent 2, held 1")
    reload_auditd(host)
    three_events(host)
    wait_for(lambda: row_shows(host, 2, 4), "status.json after the reload: sent 2, held 4")
    digests = wait_for(lambda: mails(host, since, "X-Audit-Digest"), "the digest at the window's end")
    alerts = [m for m in mails(host, since, "X-Audit-Key") if m["X-Audit-Key"] == KEY and not m["X-Audit-Digest"]]
    assert len(alerts) == 2
    assert [re.search(r"^Held back: (\d+)$", d.get_content(), re.MULTILINE).group(1) for d in digests] == ["4"]
    assert mails(host, since, "X-Audit-Tamper") == []


def test_a_deactivated_entry_and_a_reload_is_one_tamper_mail(host, kernel_audit):
    since = target_time(host)
    saved = host.file(ENTRY).content_string
    host.run_expect([0], f"cp {ENTRY} /root/test-reload.saved")
    try:
        edit_in_place(host, ENTRY, "s/^active = .*/active = no/")
        reload_auditd(host)
        tamper = wait_for(lambda: mails(host, since, "X-Audit-Tamper"), "the plugin-stopped mail")
        assert [m["X-Audit-Tamper"] for m in tamper] == ["plugin-stopped"]
    finally:
        put_back(host, ENTRY, saved)
        with maintenance(host):
            restart_auditd(host)
    wait_for(lambda: status(host).get("running"), "the plugin started again")


def test_a_restart_of_auditd_loses_no_held_back_count(host, limited):
    three_events(host)
    wait_for(lambda: row_shows(host, 2, 1), "status.json: sent 2, held 1")
    with maintenance(host):
        restart_auditd(host)
    wait_for(lambda: status(host).get("running") and rule_row(host).get("held") == 1,
             "the new plugin with the window of the one before")
    three_events(host)
    wait_for(lambda: row_shows(host, 2, 4), "status.json after the restart: sent 2, held 4")


def test_the_plugin_logged_no_error(host, kernel_audit):
    """No ERROR line from the plugin in the converge, verify and these tests' runs."""
    found = host.run("journalctl -q -p err -t audisp-mailalert --no-pager")
    assert found.stdout.strip() == "", found.stdout
