"""mailalert.kernel_state on hand-built states: each kind of finding, the widening that is
none, the lost counter between two reads, the JSON form, and the rendering's corners that a
live kernel does not show (test_audit_netlink.py compares the rest with auditctl -l)."""

import json

import pytest
from mailalert import kernel_state as ks
from mailalert.audit_netlink import RuleData

UID = 1  # field numbers kernel_state has no name for
NAMES = ks.Names(host_arch=0xC000003E)  # x86_64, whatever this host is
B64 = (ks.ARCH, "=", 0xC000003E)
ALL = [0xFFFFFFFF] * 64
STATUS = {"mask": 0, "enabled": 1, "failure": 1, "pid": 4242, "rate_limit": 0,
          "backlog_limit": 8192, "lost": 3, "backlog": 0, "feature_bitmap": 0x7F,
          "backlog_wait_time": 60000, "backlog_wait_time_actual": 0}
WATCHED = ["k1", "k2", "kdir"]


def mask(*numbers: int) -> list[int]:
    words = [0] * 64
    for number in numbers:
        words[number // 32] |= 1 << number % 32
    return words


def watch(path: str, perm: int, key: str, field: int = ks.WATCH) -> ks.Rule:
    return ks.Rule(ks.FILTER_EXIT, ks.ALWAYS, ALL,
                   [(field, "=", path), (ks.PERM, "=", perm), (ks.FILTERKEY, "=", key)])


def syscall_rule(action: int, syscalls: list[int], *fields: tuple,
                 listnr: int = ks.FILTER_EXIT) -> ks.Rule:
    return ks.Rule(listnr, action, mask(*syscalls) if syscalls else ALL, fields)


PASSWD = watch("/etc/passwd", 2 | 8, "k1")  # -p wa
TMPDIR = watch("/srv/data", 4 | 2 | 1 | 8, "kdir", ks.DIR)
EXECVE = syscall_rule(ks.ALWAYS, [59], B64, (ks.LOGINUID, ">=", 1000),
                      (ks.LOGINUID, "!=", 0xFFFFFFFF), (ks.FILTERKEY, "=", "k2"))
OTHER = syscall_rule(ks.ALWAYS, [90], B64, (ks.FILTERKEY, "=", "not-watched"))  # chmod
NO_ROOT = syscall_rule(ks.NEVER, [], B64, (ks.LOGINUID, "=", 4294967294))
NO_CWD = syscall_rule(ks.ALWAYS, [], (ks.MSGTYPE, "=", 1307), listnr=ks.FILTER_EXCLUDE)
EXECVE_TEXT = "-a always,exit -F arch=b64 -S execve -F auid>=1000 -F auid!=-1 -F key=k2"
DEPLOYED_RULES = [PASSWD, TMPDIR, EXECVE, OTHER, NO_ROOT, NO_CWD]


def state(rules: tuple = tuple(DEPLOYED_RULES), **status: int) -> ks.KernelState:
    return ks.KernelState(dict(STATUS, **status), rules)


DEPLOYED = state()


def findings(now: ks.KernelState, deployed: ks.KernelState = DEPLOYED) -> list:
    return ks.losses(deployed, now, WATCHED, NAMES)


def test_the_deployed_state_has_no_finding():
    assert findings(state()) == []


@pytest.mark.parametrize("now", [
    state(DEPLOYED_RULES + [watch("/etc/shadow", 2, "k1")]),  # an admin's extra watch
    state(DEPLOYED_RULES + [syscall_rule(ks.ALWAYS, [2, 257], B64, (ks.FILTERKEY, "=", "x"))]),
    state([PASSWD, TMPDIR, EXECVE, OTHER]),  # excluding rules removed: more is recorded
    state(backlog_limit=65536, backlog_wait_time=120000, failure=2, enabled=2),
    state(pid=1),  # auditd restarted
], ids=["extra-watch", "extra-syscall-rule", "excluding-removed", "tightened", "pid"])
def test_widening_is_no_finding(now):
    assert findings(now) == []


def test_a_rate_limit_removed_is_no_finding():
    assert findings(state(rate_limit=0), state(rate_limit=100)) == []


def test_a_watched_rule_removed():
    found = findings(state([TMPDIR, EXECVE, OTHER, NO_ROOT, NO_CWD]))
    assert found == [ks.Finding("rules-removed", "1 rule(s) removed, keys k1",
                                ("-w /etc/passwd -p wa -k k1",), (), ("k1",))]


def test_all_rules_removed_is_one_finding():
    (found,) = findings(state([]))
    assert found.kind == "rules-removed"
    assert found.summary == "3 rule(s) removed, keys k1, k2, kdir"
    assert found.keys == ("k1", "k2", "kdir")
    assert found.before == ("-w /etc/passwd -p wa -k k1", "-w /srv/data -p rwxa -k kdir",
                            EXECVE_TEXT)


def test_a_rule_without_watched_key_removed_is_no_finding():
    assert findings(state([PASSWD, TMPDIR, EXECVE, NO_ROOT, NO_CWD])) == []


def test_a_watched_rule_changed():
    narrower = syscall_rule(ks.ALWAYS, [59], B64, (ks.LOGINUID, ">=", 100000),
                            (ks.LOGINUID, "!=", 0xFFFFFFFF), (ks.FILTERKEY, "=", "k2"))
    found = findings(state([PASSWD, TMPDIR, narrower, OTHER, NO_ROOT, NO_CWD]))
    assert found == [ks.Finding(
        "rule-changed", "1 rule(s) changed, keys k2",
        ("-a always,exit -F arch=b64 -S execve -F auid>=1000 -F auid!=-1 -F key=k2",),
        ("-a always,exit -F arch=b64 -S execve -F auid>=100000 -F auid!=-1 -F key=k2",), ("k2",))]


def test_a_watch_with_fewer_permissions_is_a_change():
    found = findings(state([watch("/etc/passwd", 8, "k1")] + DEPLOYED_RULES[1:]))
    assert [(f.kind, f.before, f.after) for f in found] == [
        ("rule-changed", ("-w /etc/passwd -p wa -k k1",), ("-w /etc/passwd -p a -k k1",))]


@pytest.mark.parametrize("added, text", [
    (syscall_rule(ks.ALWAYS, [], (ks.MSGTYPE, "=", 1305), listnr=ks.FILTER_EXCLUDE),
     "-a always,exclude -F msgtype=CONFIG_CHANGE"),
    (syscall_rule(ks.NEVER, [], (ks.MSGTYPE, "=", 1300), listnr=ks.FILTER_EXCLUDE),
     "-a never,exclude -F msgtype=SYSCALL"),
    (syscall_rule(ks.NEVER, [], B64, (ks.LOGINUID, "=", 0)),
     "-a never,exit -F arch=b64 -S all -F auid=0"),
    (syscall_rule(ks.NEVER, [], (UID, "=", 0), listnr=ks.FILTER_TASK), "-a never,task -F uid=0"),
])
def test_an_excluding_rule_added(added, text):
    for rules in ([added] + DEPLOYED_RULES, DEPLOYED_RULES + [added]):  # -A or -a
        assert findings(state(rules)) == [ks.Finding(
            "rule-excluding", "rule(s) keeping events from being recorded: 1 new", (), (text,))]


def test_a_never_rule_moved_ahead():
    """Deleted and prepended again (-A): the same rule, now before the ones it followed."""
    found = findings(state([PASSWD, TMPDIR, NO_ROOT, EXECVE, OTHER, NO_CWD]))
    text = "-a never,exit -F arch=b64 -S all -F auid=-2"
    assert found == [ks.Finding("rule-excluding", "rule(s) keeping events from being recorded: "
                                "1 moved ahead of rules they followed", (text,), (text,))]


def test_auditing_disabled():
    assert findings(state(enabled=0)) == [
        ks.Finding("audit-disabled", "auditing disabled (enabled 1 -> 0)", (), ())]


@pytest.mark.parametrize("deployed, now, summary", [
    ({"failure": 1}, {"failure": 0}, "failure 1 -> 0"),
    ({"failure": 2}, {"failure": 1}, "failure 2 -> 1"),
    ({"rate_limit": 0}, {"rate_limit": 100}, "rate_limit 0 -> 100"),
    ({"rate_limit": 200}, {"rate_limit": 100}, "rate_limit 200 -> 100"),
    ({"backlog_limit": 8192}, {"backlog_limit": 64}, "backlog_limit 8192 -> 64"),
    ({"backlog_wait_time": 60000}, {"backlog_wait_time": 0}, "backlog_wait_time 60000 -> 0"),
])
def test_a_setting_weakened(deployed, now, summary):
    assert findings(state(**now), state(**deployed)) == [
        ks.Finding("audit-setting", summary, (), ())]


def test_a_field_the_kernel_does_not_return_is_passed_over():
    newer = ("feature_bitmap", "backlog_wait_time", "backlog_wait_time_actual")
    old_kernel = {name: value for name, value in STATUS.items() if name not in newer}
    assert findings(ks.KernelState(old_kernel, DEPLOYED_RULES), state(backlog_wait_time=1)) == []


def test_events_lost_and_the_counter_reset():
    assert ks.losses(DEPLOYED, state(lost=10), WATCHED, NAMES) == []  # read to read only
    assert ks.counter_losses(STATUS, dict(STATUS, lost=10)) == [
        ks.Finding("events-lost", "the kernel lost 7 events (lost counter 3 -> 10)", (), ())]
    assert [f.kind for f in ks.counter_losses(STATUS, dict(STATUS, lost=0))] == ["lost-reset"]
    assert ks.counter_losses(STATUS, dict(STATUS)) == []


def test_json_both_ways():
    odd = watch("/srv/caf\udce9", 2, "k1\x01k9")  # not UTF-8; two keys
    original = state(DEPLOYED_RULES + [odd])
    text = json.dumps(original.to_json())
    again = ks.KernelState.from_json(json.loads(text))
    assert again == original
    assert again.rules[-1].keys == ["k1", "k9"]
    assert again.rules[-1].text(NAMES) == "-w /srv/caf\udce9 -p w -k k1 -k k9"


@pytest.mark.parametrize("damage", [
    lambda data: data["rules"][0]["fields"][0].__setitem__(2, 5),  # a path that is a number
    lambda data: data["rules"][0]["fields"][1].__setitem__(2, "wa"),  # perm as a string
    lambda data: data["rules"][0]["mask"].append([64, 1]),
    lambda data: data["rules"][0].__setitem__("action", True),
    lambda data: data["status"].__setitem__("lost", -1),
    lambda data: data.pop("rules"),
])
def test_json_that_to_json_does_not_write_is_refused(damage):
    before = DEPLOYED.to_json()
    data = DEPLOYED.to_json()
    damage(data)
    with pytest.raises((ValueError, TypeError, KeyError)):
        ks.KernelState.from_json(data)
    assert DEPLOYED.to_json() == before, "the damage reached the state it came from"


def test_from_data_takes_the_strings_in_order():
    data = RuleData(ks.FILTER_EXIT, ks.ALWAYS, tuple(mask(2)), (
        (ks.ARCH, 0x40000000, 0xC000003E), (ks.EXE, 0x40000000, 8),
        (UID, 0x30000000, 0), (15, 0x40000000, 13), (ks.FILTERKEY, 0x40000000, 5)),
        b"/bin/cat" b"unconfined_t" b"k1\x01k2")  # subj_type 12 bytes: one too many
    with pytest.raises(ValueError):
        ks.Rule.from_data(data)
    good = data._replace(fields=data.fields[:3] + ((15, 0x40000000, 12),) + data.fields[4:])
    rule = ks.Rule.from_data(good)
    assert rule.text(NAMES) == ("-a always,exit -F arch=b64 -S open -F exe=/bin/cat -F uid!=0 "
                                "-F subj_type=unconfined_t -F key=k1 -F key=k2")
    assert rule.keys == ["k1", "k2"]


def test_rendering_corners():
    odd = syscall_rule(ks.ALWAYS, [59, 999], (ks.ARCH, "=", 0x1234), (999, "=", 7),
                       (ks.MSGTYPE, "=", 1999), (ks.FIELD_COMPARE, "!=", 5),
                       (ks.EXIT, "=", 0xFFFFFFFF - 1), (ks.FSTYPE, "=", 0x64626720))
    # an unknown arch in hex (its syscalls as numbers), an unknown field and message type
    # as numbers, -C, exit -2 by its errno name, fstype by name
    assert odd.text(NAMES) == ("-a always,exit -F arch=0x1234 -S 59,999 f999=7 -F msgtype=1999"
                               " -C auid!=obj_uid -F exit=-ENOENT -F fstype=debugfs")
    no_arch = syscall_rule(ks.ALWAYS, [59, 62], (ks.FILTERKEY, "=", "k"))
    assert no_arch.text(NAMES) == "-a always,exit -S execve,kill -F key=k"  # the host's arch
    plain = ks.Names(host_arch=0xC000003E)
    plain.auparse = None  # no auparse: numbers
    assert no_arch.text(plain) == "-a always,exit -S 59,62 -F key=k"
