"""Rule conditions (issue #24): match and ignore per rule, ignore for the tamper rule.
The evaluation (conditions.py) on this kernel's records (data/conditions.log, made by
capture_conditions.sh: root without a login, login uids daemon and nobody, a refused read,
a hostile program name, a relative path, a pty), the config's refusals, and the plugin
process on those logs and on crafted streams: what is mailed, what --print says on stderr,
status.json's ignored counts, and the rate limit that left-out events do not touch."""

import json
import re
from collections import Counter

import auparse
import pytest
from conftest import (
    DATA,
    delivered,
    log_bytes,
    print_messages,
    run_plugin,
    write_config,
)
from mailalert import state_watch
from mailalert.conditions import (
    AUDIT_FIELDS,
    EVERY_FIELD,
    PLAIN_FIELDS,
    event_values,
    left_out,
    record_fields,
)
from mailalert.config import CONDITION_FIELDS, HOSTNAME, Rule, Section
from mailalert.events import find_fields, read_records
from mailalert.spool import Spool
from mailalert.status import Status
from mailalert.tamper import Tamper
from mailalert.tamper_watch import TamperWatch
from test_kernel_state import (
    DEPLOYED,
    EXECVE,
    NO_CWD,
    NO_ROOT,
    OTHER,
    TMPDIR,
    WATCHED,
    state,
)
from test_state_watch import Kernel, Recorded

# Every audit field a condition can name.
ALL_FIELDS = sorted({n for f in CONDITION_FIELDS for n in AUDIT_FIELDS.get(f, (f,))})

MANY = "[limits]\nmax_mails = 1000\n"
KEY = "amx-cond"
HOSTILE_EXE = "/tmp/amx-cond/bin/ca t\n$(id)"


def captured_values():
    """(serial, event_values) of each amx-cond read in conditions.log, in log order: read
    as the plugin reads an alert's fields (find_fields), and as the tamper rule reads them
    (from records already read), which must agree."""
    au = auparse.AuParser(auparse.AUSOURCE_FILE, str(DATA / "conditions.log"))
    found = []
    while au.parse_next_event():
        records = read_records(au)
        syscall = next((r for r in records if r.type == "SYSCALL"), None)
        if syscall is not None and syscall.shown.get("comm") != "auditctl":
            values = event_values(find_fields(au, ALL_FIELDS, EVERY_FIELD, PLAIN_FIELDS))
            assert values == event_values(record_fields(records, ALL_FIELDS))
            found.append((au.get_timestamp().serial, values))
    return found


@pytest.fixture(scope="module")
def events():
    found = captured_values()
    assert len(found) == 6, "capture_conditions.sh makes six reads"
    return [values for _serial, values in found]


def test_values_are_what_auparse_interprets(events):
    root, relative, daemon, nobody, hostile, pty = events
    assert root["auid"] == ["unset", "4294967295"] and root["uid"] == ["root", "0"]
    assert root["success"] == ["yes"] and root["syscall"][0] == "openat"
    assert root["path"] == ["/tmp/amx-cond/secret"] and root["tty"] == ["(none)"]
    assert relative["path"] == ["secret", "/tmp/amx-cond/secret"]
    assert (daemon["auid"], daemon["uid"]) == (["daemon", "1"], ["root", "0"])
    assert (nobody["auid"], nobody["uid"], nobody["euid"]) == (["nobody", "65534"],) * 3
    assert nobody["gid"] == ["nogroup", "65534"] and nobody["success"] == ["no"]
    assert hostile["exe"] == [HOSTILE_EXE] and hostile["comm"] == ["ca t\n$(id)"]
    assert pty["tty"] == ["pts0"]


def conditions(text: str, many: bool):
    return Section("test.conf", "rule r", {"c": text}).conditions("c", many)


def rule(match=None, ignore=None) -> Rule:
    made = Rule("r", [KEY], ["root"], 10, 60)
    made.match = conditions(match, False)[0] if match else None
    made.ignore = conditions(ignore, True) if ignore else []
    return made


@pytest.mark.parametrize("match, ignore, mailed", [
    (None, None, [1, 1, 1, 1, 1, 1]),
    ('{"success": "no"}', None, [0, 0, 0, 1, 0, 0]),
    ('{"success": "yes"}', None, [1, 1, 1, 0, 1, 1]),
    (None, '[{"auid": "unset"}]', [0, 0, 1, 1, 0, 0]),
    (None, '[{"auid": "4294967295"}]', [0, 0, 1, 1, 0, 0]),
    (None, '[{"auid": ["daemon", "nobody"]}]', [1, 1, 0, 0, 1, 1]),
    (None, '[{"uid": "nobody"}]', [1, 1, 1, 0, 1, 1]),
    (None, '[{"uid": "0"}]', [0, 0, 0, 1, 0, 0]),
    (None, '[{"euid": "root"}]', [0, 0, 0, 1, 0, 0]),
    (None, '[{"gid": "nogroup"}]', [1, 1, 1, 0, 1, 1]),
    (None, '[{"exe": "/usr/bin/cat"}]', [0, 0, 0, 0, 1, 0]),
    (None, '[{"exe": "/tmp/amx-cond/bin/ca t*"}]', [1, 1, 1, 1, 0, 1]),
    (None, '[{"comm": "ca?t*"}]', [1, 1, 1, 1, 0, 1]),
    (None, '[{"syscall": "openat"}]', [0, 0, 0, 0, 0, 0]),
    (None, '[{"tty": "pts0"}]', [1, 1, 1, 1, 1, 0]),
    (None, '[{"path": "/tmp/amx-cond/sec*"}]', [0, 0, 0, 0, 0, 0]),
    (None, '[{"path": "secret"}]', [1, 0, 1, 1, 1, 1]),
    (None, '[{"node": "elsewhere"}]', [1, 1, 1, 1, 1, 1]),
    # every field of one entry must fit; any entry may
    (None, '[{"auid": "daemon", "success": "no"}]', [1, 1, 1, 1, 1, 1]),
    (None, '[{"auid": "nobody", "success": "no"}, {"tty": "pts0"}]', [1, 1, 1, 0, 1, 0]),
    # match and ignore together: the login users' reads, but not daemon's
    ('{"auid": ["daemon", "nobody"]}', '[{"auid": "daemon"}]', [0, 0, 0, 1, 0, 0]),
])
def test_match_and_ignore_on_captured_events(events, match, ignore, mailed):
    subject = rule(match, ignore)
    assert [int(left_out(subject, values) is None) for values in events] == mailed


def test_the_reason_names_the_condition_and_the_value(events):
    assert left_out(rule('{"success": "no"}'), events[0]) == 'match {"success": "no"}: success is yes'
    reason = left_out(rule(None, '[{"tty": "pts9"}, {"auid": "daemon"}]'), events[2])
    assert reason == 'ignore[1] {"auid": "daemon"}'


@pytest.mark.parametrize("key, text, message", [
    ("ignore", '[{"user": "x"}]', '[rule r] ignore: [0] unknown field \'user\''),
    ("match", '{"success": "false"}', '[rule r] match: success: must be "yes" or "no", not "false"'),
    ("match", '{"success": false}', '[rule r] match: success: a value is a string'),
    ("ignore", '[{"auid": []}]', "[rule r] ignore: [0] auid: an empty list fits no event"),
    ("match", '{"uid": "ro*"}', "[rule r] match: uid: takes no glob"),
    ("match", '{"tty": "pts[0-9]"}', "[rule r] match: tty: takes no glob"),
    ("match", "{}", "[rule r] match: must be a mapping of fields"),
    ("match", '[{"auid": "x"}]', "[rule r] match: must be a mapping of fields"),
    ("ignore", '{"auid": "x"}', "[rule r] ignore: must be a JSON list of mappings"),
    ("ignore", '["auid=x"]', "[rule r] ignore: [0] must be a mapping of fields"),
    ("ignore", "auid=x", "[rule r] ignore: not JSON"),
    ("match", '{"auid": ""}', "[rule r] match: auid: a value is a string of 1-4096"),
])
def test_bad_conditions_are_refused_naming_file_section_key_and_field(tmp_path, key, text, message):
    config = write_config(tmp_path, f"[rule r]\nkeys = {KEY}\n{key} = {text}\n")
    result = run_plugin(["--config", config, "--print"])
    assert result.returncode == 2
    assert f"bad config: {config}: {message}" in result.stderr.decode()


def test_the_tamper_rule_refuses_a_bad_ignore_and_takes_no_match(tmp_path):
    for text, message in [("ignore = [{\"who\": \"x\"}]", "[tamper] ignore: [0] unknown field 'who'"),
                          ("match = {\"auid\": \"x\"}", "[tamper] match: unknown key")]:
        config = write_config(tmp_path, f"[rule r]\nkeys = {KEY}\n[tamper]\n{text}\n")
        result = run_plugin(["--config", config, "--print"])
        assert result.returncode == 2 and message in result.stderr.decode(), result.stderr


def serials(messages):
    return [int(re.match(r"[\d.]+:(\d+)@", m["X-Audit-Event"]).group(1)) for m in messages]


def test_print_mails_what_fits_and_says_why_the_rest_is_left_out(tmp_path):
    data = log_bytes("conditions")
    config = write_config(tmp_path, MANY + f'[rule failed]\nkeys = {KEY}\nmatch = {{"success": "no"}}\n'
                          f'[rule humans]\nkeys = {KEY}\nignore = [{{"auid": "unset"}}, {{"exe": "/usr/bin/c?t",'
                          f' "auid": "daemon"}}]\n')
    result = run_plugin(["--config", config, "--print"], data)
    assert result.returncode == 0, result.stderr
    from conftest import parse_mbox
    messages = parse_mbox(result.stdout, tmp_path)
    reads = [serial for serial, _values in captured_values()]
    by_rule = {name: serials([m for m in messages if m["X-Audit-Rule"] == name]) for name in ("failed", "humans")}
    assert by_rule == {"failed": [reads[3]], "humans": [reads[3]]}
    said = [line for line in result.stderr.decode().splitlines() if line.startswith("not mailed:")]
    assert len(said) == 10  # six reads for each rule, one mailed by each
    assert any(re.fullmatch(rf"not mailed: event [\d.]+:{reads[2]}@\S+ key {KEY} rule humans: "
                            r'ignore\[1\] \{"exe": "/usr/bin/c\?t", "auid": "daemon"\}', line) for line in said), said
    assert any(re.fullmatch(rf"not mailed: event [\d.]+:{reads[4]}@\S+ key {KEY} rule failed: "
                            r'match \{"success": "no"\}: success is yes', line) for line in said), said
    hostile = [line for line in said if f":{reads[4]}@" in line and "rule humans" in line]
    assert hostile and "\n" not in hostile[0]


def test_hostile_names_fit_globs_on_the_decoded_value(tmp_path):
    """hostile.log's file names (a newline, a CR, bytes that are not UTF-8) as auparse
    decodes them: a glob sees the decoded name."""
    messages = print_messages(tmp_path, MANY + '[rule r]\nkeys = amx-hostile\n'
                              'ignore = [{"path": "*/evil\\nSubject: pwned"}, {"path": "*/cr\\rBcc*"}]\n',
                              log_bytes("hostile"))
    everything = print_messages(tmp_path, MANY + "[rule r]\nkeys = amx-hostile\n", log_bytes("hostile"))
    assert len(messages) == len(everything) - 2
    assert not any("pwned" in m.get_content() or "victim@" in m.get_content() for m in messages)


def test_node_of_an_aggregating_auditd(tmp_path):
    """A crafted stream: the same records as another node's auditd forwards them."""
    data = b"".join(b"node=web1 " + line + b"\n" for line in log_bytes("conditions").splitlines())
    base = MANY + f"[rule r]\nkeys = {KEY}\n"
    assert print_messages(tmp_path, base + 'ignore = [{"node": "web1"}]\n', data) == []
    kept = print_messages(tmp_path, base + 'ignore = [{"node": "web2"}]\n', data)
    assert len(kept) == 6 and {m["X-Audit-Event"].rsplit("@", 1)[1] for m in kept} == {"web1"}


def test_a_user_space_event_result_is_its_success(tmp_path):
    """A crafted USER_AUTH event (one record, res=failed) under a watched key."""
    line = ('type=USER_AUTH msg=audit(1795686500.000:990): pid=1 uid=0 auid=1 ses=3 '
            "msg='op=PAM:authentication grantors=? acct=\"root\" exe=\"/usr/bin/su\" hostname=? addr=? "
            f"terminal=pts/1 res=failed' key=\"{KEY}\"\n")
    base = MANY + f"[rule r]\nkeys = {KEY}\n"
    data = line.encode()
    assert len(print_messages(tmp_path, base + 'match = {"success": "no"}\n', data)) == 1
    assert print_messages(tmp_path, base + 'match = {"success": "yes"}\n', data) == []


def test_left_out_events_are_counted_and_take_no_place_in_the_rate_limit(tmp_path, fake_sendmail):
    """Under a limit of one mail, the failed read comes fourth: the three left out before
    it neither use the window's mail nor land in a digest; status.json counts them."""
    program, out = fake_sendmail
    spool = tmp_path / "spool"
    config = write_config(tmp_path, f"[mail]\nsendmail = {program}\ntimeout = 10\n[spool]\ndir = {spool}\n"
                          f"[limits]\nmax_mails = 1\nwindow = 3600\n"
                          f'[rule failed]\nkeys = {KEY}\nmatch = {{"success": "no"}}\n'
                          f"[rule all]\nkeys = {KEY}\n")
    result = run_plugin(["--config", config], log_bytes("conditions"))
    assert result.returncode == 0, result.stderr
    mails = [message for _argv, message in delivered(out)]
    failed = [m for m in mails if m["X-Audit-Rule"] == "failed"]
    assert len(failed) == 1 and "X-Audit-Digest" not in failed[0]
    assert serials(failed) == [captured_values()[3][0]]
    assert [m["X-Audit-Digest"] for m in mails if m["X-Audit-Digest"]] == ["all"]
    rows = json.loads((spool / "status.json").read_text())["rules"]
    assert (rows["failed"]["ignored"], rows["failed"]["sent"], rows["failed"]["held"]) == (5, 1, 0)
    assert (rows["all"]["ignored"], rows["all"]["sent"]) == (0, 1)


def test_conditions_cost_nothing_to_events_of_other_keys(tmp_path, monkeypatch):
    """Only an event whose key matched a rule with conditions is read for them."""
    from mailalert.config import load_config
    from mailalert.log import Log
    from mailalert.plugin import Plugin

    calls = []
    import mailalert.conditions as conditions_module
    original = conditions_module.find_fields
    monkeypatch.setattr(conditions_module, "find_fields",
                        lambda au, names, *rest: calls.append(sorted(names)) or original(au, names, *rest))
    path = write_config(tmp_path, MANY + f'[spool]\ndir = {tmp_path}/spool\n[rule r]\nkeys = {KEY}\n'
                        'ignore = [{"auid": "unset"}]\n[rule other]\nkeys = amx-flood\n')
    plugin = Plugin(load_config(str(path), [], True), Log(), True, [])
    plugin.outbox.put = lambda message: None
    plugin.framer.feed(log_bytes("flood", "hostile", "conditions"))
    plugin.finish_input()
    assert calls == [["auid", "node"]] * 6  # and of those events, only the fields named (node: --print)


def test_the_tamper_rules_ignore_excuses_its_actor(tmp_path):
    """config-change.log: root without a login (auid unset) removes the watched rules.
    Excused by its auid, nothing is mailed and the log says why; another auid is mailed."""
    keys = "[rule watched]\nkeys = amx-hostile, amx-exec, amx-flood, amx-multi\n"
    data = log_bytes("config-change")
    config = write_config(tmp_path, keys + '[tamper]\nignore = [{"auid": "unset", "exe": "/usr/sbin/auditctl"}]\n')
    result = run_plugin(["--config", config, "--print"], data)
    assert result.returncode == 0 and result.stdout == b"", result.stderr
    assert re.search(r"tamper finding rules-removed \(event [\d.]+:\d+@\S+\) not mailed: rule tamper: "
                     r'ignore\[0\] \{"auid": "unset", "exe": "/usr/sbin/auditctl"\}', result.stderr.decode())
    other = print_messages(tmp_path, keys + '[tamper]\nignore = [{"auid": "daemon"}]\n', data)
    assert [m["X-Audit-Tamper"] for m in other] == ["rules-removed"]


@pytest.mark.parametrize("excused", [False, True])
def test_an_excused_removal_excuses_the_states_finding_of_it_too(tmp_path, monkeypatch, excused):
    """TamperWatch with the kernel's state read from hand-built states (as in
    test_state_watch.py; on the real kernel: tests/role/test_role_conditions.py). The
    state shows the watched rule gone; the removal's record, excused by the tamper rule's
    ignore, keeps the state's finding out of the mail, now and at the reads after; without
    the excuse the same change is mailed once."""
    kernel = Kernel(DEPLOYED)
    monkeypatch.setattr(state_watch, "read_kernel", kernel.read)
    spool = Spool(str(tmp_path / "spool"))
    spool.prepare()
    reported, status, log = [], Status(), Recorded()
    watch = TamperWatch(reported.append, spool, status, False, True, log)
    watch.state = state_watch.StateWatch(spool, log, WATCHED, netlink=None)
    watch.state.start()
    kernel.now = state((TMPDIR, EXECVE, OTHER, NO_ROOT, NO_CWD))  # the k1 watch removed
    removal = Tamper("rules-removed", "", [], "auid=unset exe=/usr/sbin/auditctl", 0.0)
    removal.removed, removal.node, removal.event_id = Counter({"k1": 1}), HOSTNAME, "1.000:1@" + HOSTNAME
    if excused:
        watch._excused(removal, 'ignore[0] {"auid": "unset"}')
    watch._check_state()
    watch._check_state()  # the read after: a finding held back for its records comes now
    watch._check_state()
    assert [t.kind for t in reported] == ([] if excused else ["rules-removed"])
    assert status.ignored == ({"tamper": 1} if excused else {})
    assert any("not mailed: rule tamper" in line for line in log.lines) == excused
