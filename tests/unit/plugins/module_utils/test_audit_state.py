"""Parsers of auditctl and ausearch output, and the /proc process lookup."""

from __future__ import annotations

import time

from ansible_collections.linux_audit.mail_alert.plugins.module_utils import audit_state

# `auditctl -s` as audit 3.0.9 prints it.
STATUS = """enabled 1
failure 1
pid 1696
rate_limit 0
backlog_limit 8192
lost 3
backlog 0
backlog_wait_time 60000
backlog_wait_time_actual 0
loginuid_immutable 0 unlocked
"""

# `auditctl -l` with every way a key can be printed.
RULES = """-w /usr/bin/w -p x -k k1 -k k2
-a always,exit -F arch=b64 -S openat -F path=/etc/shadow -F key=k3 -F key=k4
-a always,exit -F arch=b64 -S execve -F exe=/usr/bin/id
-w /etc/passwd -p wa -k joined\x01second
"""

# `ausearch --format raw` of one event (enriched: interpreted fields after \x1d).
RAW = (
    'type=SYSCALL msg=audit(1795686245.766:24): arch=c000003e syscall=59 success=yes exit=0 '
    'items=2 ppid=5903 pid=5944 auid=4294967295 uid=0 gid=0 euid=0 comm="w" exe="/usr/bin/w" '
    'key="verifytest"\x1dARCH=x86_64 SYSCALL=execve AUID="unset" UID="root"\n'
    'type=EXECVE msg=audit(1795686245.766:24): argc=1 a0="/usr/bin/w"\n'
    'type=CWD msg=audit(1795686245.766:24): cwd="/tmp"\n'
    'type=PATH msg=audit(1795686245.766:24): item=0 name="/usr/bin/w" inode=261005\n'
    'type=PROCTITLE msg=audit(1795686245.766:24): proctitle="/usr/bin/w"\n'
    'type=SYSCALL msg=audit(1795686246.005:25): arch=c000003e syscall=59 ppid=5903 pid=5950 '
    'auid=1000 uid=1000 exe="/usr/bin/w" key="verifytest"\n'
)


def test_parse_status_reads_numbers_and_flags():
    status = audit_state.parse_status(STATUS)
    assert status["enabled"] == 1
    assert status["pid"] == 1696
    assert status["lost"] == 3
    assert status["immutable"] is False
    assert status["loginuid_immutable"] is False


def test_parse_status_enabled_2_is_immutable():
    assert audit_state.parse_status("enabled 2\npid 0\n")["immutable"] is True


def test_parse_version():
    assert audit_state.parse_version("auditctl version 3.0.9\n") == "3.0.9"
    assert audit_state.parse_version("") is None


def test_parse_rules_finds_every_key_form():
    rules = audit_state.parse_rules(RULES)
    assert [rule["keys"] for rule in rules] == [["k1", "k2"], ["k3", "k4"], [], ["joined", "second"]]
    assert rules[2]["rule"] == "-a always,exit -F arch=b64 -S execve -F exe=/usr/bin/id"
    assert audit_state.loaded_keys(rules) == ["joined", "k1", "k2", "k3", "k4", "second"]


def test_parse_rules_no_rules():
    assert audit_state.parse_rules("No rules\n") == []


def test_parse_raw_events_groups_records_by_event():
    events = audit_state.parse_raw_events(RAW)
    assert [event["id"] for event in events] == ["1795686245.766:24", "1795686246.005:25"]
    first = events[0]
    assert first["ppid"] == 5903 and first["pid"] == 5944
    assert first["auid"] == 4294967295 and first["uid"] == 0
    assert first["exe"] == "/usr/bin/w" and first["key"] == "verifytest"
    assert first["time"] == 1795686245.766 and first["serial"] == 24
    assert events[1]["uid"] == 1000


def test_normalize_event_id_pads_milliseconds_and_drops_node():
    assert audit_state.normalize_event_id("1795685868.75:7@host1") == "1795685868.075:7"
    assert audit_state.normalize_event_id("1795685868.750:7") == "1795685868.750:7"
    assert audit_state.normalize_event_id("garbage") is None
    assert audit_state.normalize_event_id(None) is None


def test_ausearch_start_uses_c_locale_date_and_time():
    moment = time.mktime((2026, 11, 26, 9, 44, 4, 0, 0, -1))
    assert audit_state.ausearch_start(moment) == ["--start", "11/26/26", "09:44:04"]


def make_process(proc, pid, argv, ppid, comm="python3"):
    directory = proc / str(pid)
    directory.mkdir()
    (directory / "cmdline").write_bytes(b"\0".join(arg.encode() for arg in argv) + b"\0")
    # comm may hold blanks and parentheses: the parser must cut at the last ")".
    (directory / "stat").write_text(f"{pid} ({comm}) S {ppid} {pid} {pid} 0 -1\n")
    (directory / "comm").write_text(comm + "\n")


def test_find_processes_matches_program_or_script_under_python(tmp_path):
    make_process(tmp_path, 10, ["/sbin/audisp-mailalert"], 1)
    make_process(tmp_path, 11, ["/usr/bin/python3", "/sbin/audisp-mailalert", "--config", "x"], 7,
                 comm="odd) name (x")
    make_process(tmp_path, 12, ["/usr/bin/vim", "/sbin/audisp-mailalert"], 1)
    make_process(tmp_path, 13, ["/sbin/auditd"], 1, comm="auditd")
    (tmp_path / "self").mkdir()
    found = audit_state.find_processes("/sbin/audisp-mailalert", proc=str(tmp_path))
    assert [(process["pid"], process["ppid"]) for process in found] == [(10, 1), (11, 7)]
    assert found[1]["cmdline"][2:] == ["--config", "x"]
    assert audit_state.process_name(13, proc=str(tmp_path)) == "auditd"
    assert audit_state.process_name(99, proc=str(tmp_path)) is None


# CONFIG_CHANGE records as ausearch --format raw prints them on audit 3.0.9 (the interpreted
# part after \x1d), a failed removal (res=0), and two keys on one rule (hex, \x01 between).
RULE_CHANGES = (
    'type=CONFIG_CHANGE msg=audit(1796235376.83:717): auid=4294967295 ses=4294967295 '
    'op=remove_rule key="watch_w" list=4 res=1\x1dAUID="unset"\n'
    'type=SYSCALL msg=audit(1796235376.83:717): arch=c000003e syscall=44 ppid=1 pid=2 '
    'key=(null)\n'
    'type=CONFIG_CHANGE msg=audit(1796235377.100:718): auid=0 ses=3 op=remove_rule '
    'key="watch_w" list=4 res=0\n'
    'type=CONFIG_CHANGE msg=audit(1796235378.100:719): auid=0 ses=3 op=add_rule '
    'key=6B31016B32 list=4 res=1\n'
    'type=CONFIG_CHANGE msg=audit(1796235379.100:720): auid=0 ses=3 op=set audit_enabled=0 '
    'old=1 res=1\n'
    'type=CONFIG_CHANGE msg=audit(1796235380.100:721): auid=0 ses=3 op=remove_rule '
    'key=(null) list=4 res=1\n'
)


def test_parse_rule_changes():
    assert audit_state.parse_rule_changes(RULE_CHANGES) == [
        {"id": "1796235376.083:717", "op": "remove_rule", "keys": ["watch_w"], "ok": True},
        {"id": "1796235377.100:718", "op": "remove_rule", "keys": ["watch_w"], "ok": False},
        {"id": "1796235378.100:719", "op": "add_rule", "keys": ["k1", "k2"], "ok": True},
        {"id": "1796235380.100:721", "op": "remove_rule", "keys": [], "ok": True},
    ]
    assert audit_state.parse_rule_changes("<no matches>\n") == []


def test_deletion_argv_turns_each_rule_into_its_removal():
    assert audit_state.deletion_argv("-w /usr/bin/w -p x -k watch_w") == [
        "-W", "/usr/bin/w", "-p", "x", "-k", "watch_w"]
    assert audit_state.deletion_argv("-a always,exit -F arch=b64 -S execve -F key=x") == [
        "-d", "always,exit", "-F", "arch=b64", "-S", "execve", "-F", "key=x"]
    assert audit_state.deletion_argv("No rules") is None
    assert audit_state.deletion_argv("") is None
