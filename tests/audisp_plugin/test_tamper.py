"""Tamper findings from the audit stream, replayed with --print or through the spool: rule
removals (folded per burst), auditing switched off, settings that drop events, auditd's
end; hostile fields stay in the body; the tamper rule's own limit and digest; the role's
maintenance marker. The same on the host's real auditd: tests/modules/test_tamper_chain.py."""

import json
import os
import re
import subprocess

import pytest
from conftest import (
    FILES,
    PYTHON,
    delivered,
    events_with_key,
    log_bytes,
    print_messages,
    run_plugin,
    write_config,
)
from test_plugin_limits import digest_counts

KEYS = "[rule watched]\nkeys = amx-hostile, amx-exec, amx-flood, amx-multi\n"
TAMPER_ON = "[tamper]\nenabled = yes\n"
# A time and serials that no captured log uses, for the synthesized records below:
T0 = 1795686400  # 100 s after config-change.log's removals


def record(serial, body, record_type="CONFIG_CHANGE", offset=0.0):
    return f"type={record_type} msg=audit({T0 + offset:.3f}:{serial}): {body}\n".encode()


def setting(serial, name, new, old, offset=0.0):
    return record(serial, f"op=set {name}={new} old={old} auid=1000 ses=7 res=1", offset=offset)


def tampers(messages):
    return [m for m in messages if m["X-Audit-Tamper"] is not None]


def removal_serials(data):
    return [s for _t, s in events_with_key(data, "amx-hostile", "CONFIG_CHANGE")]


def test_removing_watched_rules_is_one_mail_naming_the_keys_that_went(tmp_path):
    data = log_bytes("config-change")  # adds four watches, then auditctl -D -k each
    messages = print_messages(tmp_path, KEYS + TAMPER_ON, data)
    assert len(messages) == 1, [m["Subject"] for m in messages]
    mail = messages[0]
    assert mail["X-Audit-Tamper"] == "rules-removed"
    assert mail["X-Audit-Key"] == "tamper" and mail["X-Audit-Rule"] == "tamper"
    body = mail.get_content()
    # amx-second rides on the multi-key rule, but it is not watched here.
    assert re.search(r"^Removed keys: amx-exec, amx-flood, amx-hostile, amx-multi$", body, re.MULTILINE)
    assert "Rules removed: 4 with a watched key, 0 others" in body
    # The first removal's event, and who ran it: auditctl, from its SYSCALL record.
    first = re.search(rb"msg=audit\((\d+\.\d+):(\d+)\): auid=\S+ ses=\S+ op=remove_rule", data)
    assert mail["X-Audit-Event"].startswith(f"{first.group(1).decode()}:{first.group(2).decode()}@")
    assert "exe=/usr/sbin/auditctl" in body and "auid=unset" in body
    assert mail["Subject"].startswith("[audit] tamper: audit rules removed (amx-exec, ")


def test_removing_rules_no_one_watches_is_no_finding(tmp_path):
    assert print_messages(tmp_path, "[rule other]\nkeys = not-in-the-log\n" + TAMPER_ON,
                          log_bytes("config-change")) == []


def test_adding_the_watch_is_no_finding(tmp_path):
    data = b"".join(line + b"\n" for line in log_bytes("config-change").splitlines()
                    if b"op=remove_rule" not in line)
    assert b"op=add_rule" in data
    assert print_messages(tmp_path, KEYS + TAMPER_ON, data) == []


@pytest.mark.parametrize("name, new, old, found", [
    ("audit_enabled", 0, 1, "auditing disabled"),
    ("audit_enabled", 2, 1, None),  # immutable: stronger, not weaker
    ("audit_failure", 0, 1, "failure mode 1 -> 0"),
    ("audit_failure", 2, 1, None),
    ("audit_rate_limit", 100, 0, "rate limit none -> 100"),
    ("audit_rate_limit", 50, 100, "rate limit 100 -> 50"),
    ("audit_rate_limit", 0, 100, None),
    ("audit_backlog_limit", 64, 8192, "backlog limit 8192 -> 64"),
    ("audit_backlog_limit", 8192, 8192, None),  # augenrules sets it again on every load
    ("audit_backlog_limit", 16384, 8192, None),
    ("audit_backlog_wait_time", 0, 60000, "backlog wait time 60000 -> 0"),
    ("audit_pid", 0, 4321, None),
])
def test_settings_that_let_events_be_dropped_are_findings(tmp_path, name, new, old, found):
    messages = print_messages(tmp_path, KEYS + TAMPER_ON, setting(900, name, new, old))
    if found is None:
        assert messages == []
        return
    assert len(messages) == 1
    mail = messages[0]
    assert mail["X-Audit-Tamper"] == ("audit-disabled" if name == "audit_enabled" else "audit-setting")
    assert found in (mail["Subject"] + mail.get_content())
    assert mail["X-Audit-Event"].startswith(f"{T0}.000:900@")
    assert "auid=1000" in mail.get_content() and "ses=7" in mail.get_content()


def test_a_refused_change_is_no_finding(tmp_path):
    data = record(901, "op=set audit_enabled=0 old=1 auid=1000 ses=7 res=0")
    assert print_messages(tmp_path, KEYS + TAMPER_ON, data) == []


@pytest.mark.parametrize("record_type, kind", [
    ("DAEMON_END", "auditd-stopped"),
    ("DAEMON_ABORT", "auditd-aborted"),
])
def test_auditd_ending_is_a_finding_naming_the_sender(tmp_path, record_type, kind):
    data = record(77, "op=terminate auid=1000 uid=0 ses=7 pid=4242 res=success", record_type)
    messages = print_messages(tmp_path, KEYS + TAMPER_ON, data)
    assert [m["X-Audit-Tamper"] for m in messages] == [kind]
    assert "pid=4242" in messages[0].get_content()


def test_every_change_of_one_netlink_message_is_judged(tmp_path):
    """Several changes sent in one netlink message are one event: a rule added, a watched
    rule removed and auditing disabled, in that order (the first record alone is no
    finding)."""
    body = "auid=1000 ses=7 op={} key={} list=4 res=1"
    data = (record(901, body.format("add_rule", '"amx-hostile"'))
            + record(901, body.format("remove_rule", '"amx-exec"'))
            + record(901, "op=set audit_enabled=0 old=1 auid=1000 ses=7 res=1")
            + record(901, "", "EOE"))
    messages = tampers(print_messages(tmp_path, KEYS + TAMPER_ON, data))
    assert sorted(m["X-Audit-Tamper"] for m in messages) == ["audit-disabled", "rules-removed"]
    assert all(m["X-Audit-Event"].startswith(f"{T0}.000:901@") for m in messages)


def test_a_rule_the_kernel_removed_itself_is_a_finding(tmp_path):
    """op=autoremove_rule: the kernel drops a watch whose directory went away."""
    data = record(902, 'auid=4294967295 ses=4294967295 op=autoremove_rule key="amx-hostile" list=4 res=1')
    (mail,) = tampers(print_messages(tmp_path, KEYS + TAMPER_ON, data))
    assert mail["X-Audit-Tamper"] == "rules-removed"
    assert "Removed keys: amx-hostile" in mail.get_content()


@pytest.mark.parametrize("old, mailed", [(17, True), (0, False)])
def test_the_lost_counter_reset_is_a_finding(tmp_path, old, mailed):
    """auditctl --reset-lost (op=set lost=0 old=N): the losses counted so far are hidden."""
    data = setting(903, "lost", 0, old)
    messages = tampers(print_messages(tmp_path, KEYS + TAMPER_ON, data))
    assert [m["X-Audit-Tamper"] for m in messages] == (["lost-reset"] if mailed else [])
    if mailed:
        assert f"({old} -> 0)" in messages[0].get_content()


def test_a_rule_added_to_the_exclude_list_is_a_finding(tmp_path):
    data = record(904, "auid=1000 ses=7 op=add_rule key=(null) list=5 res=1")
    (mail,) = tampers(print_messages(tmp_path, KEYS + TAMPER_ON, data))
    assert mail["X-Audit-Tamper"] == "rule-excluding"
    assert "exclude list" in mail["Subject"]


def test_another_nodes_auditd_ending_is_that_nodes(tmp_path):
    """An aggregating auditd relays other nodes' records (node=...): their DAEMON_END is
    mailed as theirs, not this host's."""
    data = b"node=web-17 " + record(905, "op=terminate auid=0 pid=77 res=success", "DAEMON_END")
    (mail,) = tampers(print_messages(tmp_path, KEYS + TAMPER_ON, data))
    assert mail["X-Audit-Tamper"] == "auditd-stopped"
    assert mail["Subject"].endswith(" on web-17")
    assert mail["X-Audit-Event"].endswith("@web-17")
    assert "Auditing on web-17 was weakened" in mail.get_content()


def test_hostile_fields_stay_escaped_inside_the_body(tmp_path):
    exe = "/tmp/x\nBcc: victim@example.com\n=?utf-8?q?x?=\u202e".encode().hex().upper()
    data = (record(902, "op=set audit_enabled=0 old=1 auid=1000 ses=7 res=1")
            + record(902, f"arch=c000003e syscall=44 success=yes exit=52 ppid=1 pid=2 auid=1000 uid=0 "
                          f"tty=pts0 ses=7 comm=\"x\" exe={exe} key=(null)", "SYSCALL"))
    messages = print_messages(tmp_path, KEYS + TAMPER_ON, data)
    assert len(messages) == 1
    mail = messages[0]
    assert mail["Bcc"] is None
    body = mail.get_content()
    assert "exe=/tmp/x\\x0aBcc: victim@example.com\\x0a=?utf-8?q?x?=\\u202e" in body
    assert "tty=pts0" in body


def test_a_flood_of_findings_is_limited_with_an_exact_digest(tmp_path):
    total = 30
    data = b"".join(setting(1000 + i, "audit_enabled", 0, 1, offset=i) for i in range(total))
    messages = print_messages(tmp_path, KEYS + "[tamper]\nmax_mails = 3\n", data)
    mails = tampers(messages)
    digests = [m for m in messages if m["X-Audit-Digest"] is not None]
    assert len(mails) == 3 and len(digests) == 1
    assert digests[0]["X-Audit-Digest"] == "tamper"
    held, groups = digest_counts(digests[0])
    assert held == total - 3 and sum(groups) == held
    assert len(mails) + held == total


def test_tamper_mail_has_its_own_recipients(tmp_path):
    messages = print_messages(tmp_path, "[mail]\nto = ops@example.com\n" + KEYS
                              + "[tamper]\nto = secops@example.com, root\n",
                              setting(903, "audit_enabled", 0, 1))
    assert [m["To"] for m in messages] == ["secops@example.com, root"]


def test_tamper_alerts_can_be_switched_off(tmp_path):
    assert print_messages(tmp_path, KEYS + "[tamper]\nenabled = no\n",
                          log_bytes("config-change") + setting(904, "audit_enabled", 0, 1)) == []


@pytest.mark.parametrize("text, message", [
    ("[tamper]\nenabled = maybe\n", "[tamper] enabled: must be yes or no, not 'maybe'"),
    ("[tamper]\nmax_mails = 0\n", "[tamper] max_mails: 0 is out of range"),
    ("[tamper]\nto = a b\n", "[tamper] to: not a plain mail address"),
    ("[tamper]\nkeys = x\n", "[tamper] keys: unknown key"),
    ("[rule tamper]\nkeys = x\n", "[rule tamper]: a rule name is"),
])
def test_a_bad_tamper_section_is_refused_naming_the_key(tmp_path, text, message):
    result = run_plugin(["--config", write_config(tmp_path, KEYS + text), "--print"])
    assert result.returncode == 2
    assert message in result.stderr.decode()


# -- The role's maintenance marker (through the spool: --print has none).

def spool_config(tmp_path, sendmail):
    spool = tmp_path / "spool"
    config = write_config(tmp_path, f"[mail]\nsendmail = {sendmail}\n[spool]\ndir = {spool}\n"
                                    + KEYS + TAMPER_ON)
    return spool, config


def run_with_marker(tmp_path, fake_sendmail, marker, mode=0o600, owner=None):
    program, out = fake_sendmail
    spool, config = spool_config(tmp_path, program)
    spool.mkdir(mode=0o700, exist_ok=True)
    path = spool / "maintenance"
    if marker is not None:
        path.write_text(marker)
        path.chmod(mode)
        if owner is not None:
            os.chown(path, owner, owner)
    data = log_bytes("config-change") + setting(905, "audit_enabled", 0, 1, offset=0)
    result = run_plugin(["--config", config], data)
    assert result.returncode == 0, result.stderr.decode()
    status = json.loads((spool / "status.json").read_text())
    return [m for _argv, m in delivered(out)], status, result.stderr.decode()


def boot_clock() -> float:
    with open("/proc/uptime") as handle:
        return float(handle.read().split()[0])


def this_boot() -> str:
    with open("/proc/sys/kernel/random/boot_id") as handle:
        return handle.read().strip()


def marker(opened_ago: float, until_in: float, boot: str = "", start: int = 0, end: int = 0) -> str:
    """A marker (docs/design.md): its window on the boot clock, from opened_ago seconds ago
    to until_in seconds from now; START END as given (for people only)."""
    now = boot_clock()
    return f"{start} {end} {boot or this_boot()} {now - opened_ago:.2f} {now + until_in:.2f}\n"


def test_findings_while_the_window_is_open_are_counted_not_mailed(tmp_path, fake_sendmail):
    """The removals are the role's kind of work; auditing disabled never is."""
    mails, status, _log = run_with_marker(tmp_path, fake_sendmail, marker(5, 60))
    assert [m["X-Audit-Tamper"] for m in mails] == ["audit-disabled"]
    assert status["tamper_suppressed"] == 4  # the four removals


def test_findings_after_the_window_closed_are_mailed(tmp_path, fake_sendmail):
    # Closed 6 s ago: the 5 s of slack do not reach now.
    mails, status, _log = run_with_marker(tmp_path, fake_sendmail, marker(30, -6))
    assert sorted(m["X-Audit-Tamper"] for m in mails) == ["audit-disabled", "rules-removed"]
    assert status["tamper_suppressed"] == 0


def test_a_window_is_capped_at_fifteen_minutes(tmp_path, fake_sendmail):
    # UNTIL would cover now; capped at OPENED + 900 (+ 5 s of slack) it ended 95 s ago.
    mails, status, _log = run_with_marker(tmp_path, fake_sendmail, marker(1000, 60))
    assert sorted(m["X-Audit-Tamper"] for m in mails) == ["audit-disabled", "rules-removed"]
    assert status["tamper_suppressed"] == 0


def test_a_marker_of_another_boot_is_no_window(tmp_path, fake_sendmail):
    other = "00000000-0000-4000-8000-000000000000"
    assert other != this_boot()
    mails, status, _log = run_with_marker(tmp_path, fake_sendmail, marker(5, 60, boot=other))
    assert sorted(m["X-Audit-Tamper"] for m in mails) == ["audit-disabled", "rules-removed"]
    assert status["tamper_suppressed"] == 0


def test_a_marker_written_before_the_clock_was_set_back_is_no_window(tmp_path, fake_sendmail):
    """A marker of an earlier day whose START END hold the events' times, as they would
    after the clock was set back to that day: its window on the boot clock is over."""
    first = min(float(t) for t, _s in events_with_key(log_bytes("config-change"), "amx-hostile",
                                                      "CONFIG_CHANGE"))
    text = marker(86400, -86000, start=int(first) - 10, end=T0 + 10)
    mails, status, _log = run_with_marker(tmp_path, fake_sendmail, text)
    assert sorted(m["X-Audit-Tamper"] for m in mails) == ["audit-disabled", "rules-removed"]
    assert status["tamper_suppressed"] == 0


def test_a_marker_that_only_holds_wall_clock_times_is_no_window(tmp_path, fake_sendmail):
    """The old marker, START END on the wall clock alone: setting the clock back to its
    day would open its window again, so it is ignored (and the log says so)."""
    first = min(float(t) for t, _s in events_with_key(log_bytes("config-change"), "amx-hostile",
                                                      "CONFIG_CHANGE"))
    mails, status, log = run_with_marker(tmp_path, fake_sendmail, f"{int(first) - 10} {T0 + 10}\n")
    assert sorted(m["X-Audit-Tamper"] for m in mails) == ["audit-disabled", "rules-removed"]
    assert status["tamper_suppressed"] == 0
    assert "maintenance marker" in log and "ignored" in log


@pytest.mark.parametrize("how", ["writable by others", "not root's", "garbage", "symbolic link"])
def test_a_marker_anyone_else_could_write_is_ignored(tmp_path, fake_sendmail, how):
    text = marker(5, 60)
    if how == "symbolic link":
        real = tmp_path / "elsewhere"
        real.write_text(text)
        real.chmod(0o600)
        (tmp_path / "spool").mkdir(mode=0o700)
        (tmp_path / "spool" / "maintenance").symlink_to(real)
        text = None
    mode = 0o622 if how == "writable by others" else 0o600
    owner = 65534 if how == "not root's" else None
    mails, status, log = run_with_marker(tmp_path, fake_sendmail,
                                         "1796000000 1796000900\n" if how == "garbage" else text,
                                         mode=mode, owner=owner)
    assert sorted(m["X-Audit-Tamper"] for m in mails) == ["audit-disabled", "rules-removed"]
    assert status["tamper_suppressed"] == 0
    assert "maintenance marker" in log and "ignored" in log


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop a capability from the bounding set")
def test_a_sender_whose_proc_entry_may_not_be_read_is_not_said_to_have_exited():
    """The kernel checks ptrace access before /proc/PID/exe is read: SELinux denies it for a
    sender's domain the policy does not list (docs/selinux.md), and so does a reader without
    CAP_SYS_PTRACE whose target holds more capabilities, as here: the reader holds none (a
    container's root lacks CAP_SYS_PTRACE already, so dropping that one alone is not
    enough there). The sender is alive: its description says that exe was not readable,
    not that the sender has exited."""
    sender = subprocess.Popen(["sleep", "60"])
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from mailalert.tamper import sender_description; "
            "print(sender_description(int(sys.argv[2]), 0))")
    try:
        described = subprocess.run(["setpriv", "--bounding-set=-all", PYTHON, "-c", code, str(FILES),
                                    str(sender.pid)], capture_output=True, text=True, check=True).stdout
    finally:
        sender.kill()
        sender.wait()
    assert described.startswith(f"pid={sender.pid} uid=root(0) exe=(not readable)"), described
    assert "exited" not in described
