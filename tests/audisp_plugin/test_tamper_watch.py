"""TamperWatch on hand-built kernel states (as in test_state_watch.py): a removal that the
tamper rule's ignore excuses stays excused when somebody else removes another watched rule
later (the state's finding is every loss since the deployed state), and the records of a
change that the role's window held back join the state's finding once the window closed.
On the real kernel: tests/role/test_role_conditions.py."""

from collections import Counter

import pytest
from mailalert import state_watch
from mailalert.config import HOSTNAME
from mailalert.spool import Spool
from mailalert.status import Status
from mailalert.tamper import Tamper
from mailalert.tamper_watch import TamperWatch, rule_keys, without_keys
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

DAEMON = "auid=daemon(1) uid=root(0) exe=/usr/sbin/auditctl"


@pytest.fixture
def kernel(monkeypatch):
    found = Kernel(DEPLOYED)
    monkeypatch.setattr(state_watch, "read_kernel", found.read)
    return found


@pytest.fixture
def watch(tmp_path, kernel):
    spool = Spool(str(tmp_path / "spool"))
    spool.prepare()
    log = Recorded()
    watcher = TamperWatch(None, spool, Status(), False, True, log)
    watcher.mailed = []
    watcher.report = watcher.mailed.append
    watcher.window = False
    watcher.window_open = lambda: watcher.window
    watcher.state = state_watch.StateWatch(spool, log, WATCHED, netlink=None)
    watcher.state.start()
    return watcher


def removal(key, who, serial):
    tamper = Tamper("rules-removed", f"audit rules removed ({key})", [f"Removed keys: {key}"], who, 0.0)
    tamper.removed, tamper.node = Counter({key: 1}), HOSTNAME
    tamper.event_id = f"1.000:{serial}@{HOSTNAME}"
    return tamper


def reads(watch, count=3):
    for _read in range(count):
        watch._check_state()


def excuse_k1(watch, kernel):
    kernel.now = state((TMPDIR, EXECVE, OTHER, NO_ROOT, NO_CWD))  # the k1 watch removed
    watch._excused(removal("k1", "auid=unset (no login session) exe=/usr/sbin/auditctl", 1),
                   'ignore[0] {"auid": "unset"}')
    reads(watch)


def remove_kdir_as_daemon(watch, kernel):
    kernel.now = state((EXECVE, OTHER, NO_ROOT, NO_CWD))  # then the kdir watch too
    watch.observe(removal("kdir", DAEMON, 2))
    watch._end_burst()
    reads(watch)


def test_a_later_removal_by_another_actor_is_mailed_without_the_excused_key(watch, kernel):
    excuse_k1(watch, kernel)
    assert watch.mailed == []
    remove_kdir_as_daemon(watch, kernel)
    assert [t.kind for t in watch.mailed] == ["rules-removed"]
    mail = watch.mailed[0]
    assert mail.who == DAEMON
    assert "k1" not in mail.summary and "Removed keys: kdir" in mail.what, mail.what
    deployed = mail.what[mail.what.index("Rules deployed (as auditctl -l prints them):") + 1:]
    assert [line for line in deployed if line.startswith("  ")] == ["  -w /srv/data -p rwxa -k kdir"]
    assert mail.what[-1].endswith("(not mailed): keys k1"), mail.what


def test_the_roles_window_keeps_neither_the_excuse_nor_the_actor_from_the_mail(watch, kernel):
    """The role's window (and its margin of MAINTENANCE_LATE seconds) was open while both
    removals came: the state held its finding back, the excused record was used up and
    daemon's record was only counted; once the window closed, both keys were mailed with
    "who: unknown"."""
    watch.window = True
    excuse_k1(watch, kernel)
    kernel.now = state((EXECVE, OTHER, NO_ROOT, NO_CWD))
    watch.observe(removal("kdir", DAEMON, 2))  # the window's: counted, not mailed
    reads(watch)
    assert watch.mailed == [] and watch.status.tamper_suppressed == 1
    watch.window = False
    reads(watch)
    assert [(t.kind, t.who, t.summary) for t in watch.mailed] == \
        [("rules-removed", DAEMON, "audit rules removed (kdir)")]


def test_an_excused_key_that_comes_back_is_forgotten(watch, kernel):
    excuse_k1(watch, kernel)
    kernel.now = DEPLOYED  # put back
    reads(watch, 1)
    assert watch.excused_keys == set()
    kernel.now = state((TMPDIR, EXECVE, OTHER, NO_ROOT, NO_CWD))  # removed again, no record
    reads(watch)
    assert [t.summary for t in watch.mailed] == ["1 rule(s) removed, keys k1"]


def test_rule_keys_and_a_finding_without_them():
    assert rule_keys("-w /etc/passwd -p wa -k k1") == ["k1"]
    assert rule_keys("-a always,exit -F arch=b64 -S execve -F key=k2") == ["k2"]
    finding = state_watch.losses(DEPLOYED, state((OTHER, NO_ROOT, NO_CWD)), WATCHED)[0]
    assert without_keys(finding, {"x"}) is finding
    assert without_keys(finding, {"k1", "k2", "kdir"}) is None
    rest = without_keys(finding, {"k1"})
    assert rest.keys == ("k2", "kdir") and len(rest.before) == 2, rest
    assert not any("k1" in rule_keys(text) for text in rest.before)
