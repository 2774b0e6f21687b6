"""StateWatch on hand-built kernel states (the kernel itself: tests/modules/test_tamper_chain.py
and test_audit_netlink.py): the deployed state from the spool or the first read, each loss
reported once until it is undone, the role's kinds held back while its window is open and
judged against the state it then recorded, the lost counter from read to read, a failed
read logged once."""

import json
import os
from pathlib import Path

import pytest
from mailalert import state_watch
from mailalert.log import Log
from mailalert.spool import Spool
from test_kernel_state import (
    DEPLOYED,
    EXECVE,
    NO_CWD,
    NO_ROOT,
    OTHER,
    PASSWD,
    TMPDIR,
    WATCHED,
    state,
)

WITHOUT_PASSWD = [TMPDIR, EXECVE, OTHER, NO_ROOT, NO_CWD]


class Kernel:
    """What read_kernel returns next: a state, or an OSError to raise."""

    def __init__(self, now):
        self.now = now

    def read(self, _netlink):
        if isinstance(self.now, OSError):
            raise self.now
        return self.now


class Recorded(Log):
    def __init__(self):
        super().__init__()
        self.lines = []

    def _emit(self, priority, message):
        self.lines.append(message)


@pytest.fixture
def kernel(monkeypatch):
    found = Kernel(DEPLOYED)
    monkeypatch.setattr(state_watch, "read_kernel", found.read)
    return found


@pytest.fixture
def spool(tmp_path):
    spool = Spool(str(tmp_path / "spool"))
    spool.prepare()
    return spool


def watch(spool, log=None):
    log = log or Recorded()
    watcher = state_watch.StateWatch(spool, log, WATCHED, netlink=None)
    watcher.start()
    assert watcher.deployed is not None, log.lines
    return watcher


def kinds(found):
    return [finding.kind for finding in found]


def test_without_a_recorded_state_the_first_read_is_deployed_and_kept(kernel, spool):
    log = Recorded()
    watch(spool, log)
    recorded = json.loads(Path(spool.deployed_path).read_text())
    assert recorded["state"] == DEPLOYED.to_json()
    assert any("taken as deployed" in line for line in log.lines)


def test_a_recorded_state_is_the_deployed_one(kernel, spool):
    spool.write_deployed(json.dumps({"state": state(WITHOUT_PASSWD).to_json()}).encode())
    watcher = watch(spool)
    assert watcher.check(window_open=False) == []  # PASSWD is more than was deployed


def test_a_loss_is_reported_once_until_it_is_undone(kernel, spool):
    watcher = watch(spool)
    kernel.now = state(WITHOUT_PASSWD)
    assert kinds(watcher.check(False)) == ["rules-removed"]
    assert watcher.check(False) == []  # still so: no second mail
    kernel.now = DEPLOYED
    assert watcher.check(False) == []  # undone: nothing to say
    kernel.now = state(WITHOUT_PASSWD)
    assert kinds(watcher.check(False)) == ["rules-removed"]  # removed again


def test_the_roles_kinds_wait_for_the_window_and_are_judged_against_what_it_recorded(kernel, spool):
    watcher = watch(spool)
    changed = state([PASSWD, TMPDIR, OTHER, NO_ROOT, NO_CWD], failure=0)  # EXECVE gone, -f 0
    kernel.now = changed
    assert watcher.check(window_open=True) == []
    assert sorted(kinds(watcher.current)) == ["audit-setting", "rules-removed"]
    state_watch.record_state(spool, netlink=None)  # the role, after its load
    assert watcher.check(window_open=False) == []


def test_what_the_role_never_does_is_reported_in_its_window(kernel, spool):
    watcher = watch(spool)
    kernel.now = state(enabled=0, lost=9)
    assert sorted(kinds(watcher.check(window_open=True))) == ["audit-disabled", "events-lost"]


def test_a_loss_the_window_held_back_is_reported_when_it_closes(kernel, spool):
    watcher = watch(spool)
    kernel.now = state(WITHOUT_PASSWD)
    assert watcher.check(window_open=True) == []
    assert kinds(watcher.check(window_open=False)) == ["rules-removed"]


def test_the_lost_counter_is_compared_from_read_to_read(kernel, spool):
    watcher = watch(spool)
    kernel.now = state(lost=10)
    (lost,) = watcher.check(False)
    assert lost.summary == "the kernel lost 7 events (lost counter 3 -> 10)"
    assert watcher.check(False) == []
    kernel.now = state(lost=0)
    assert kinds(watcher.check(False)) == ["lost-reset"]


def test_a_failed_read_is_logged_once_and_reads_go_on(kernel, spool):
    log = Recorded()
    watcher = watch(spool, log)
    kernel.now = OSError(110, "Connection timed out")
    assert watcher.check(False) is None
    assert watcher.check(False) is None
    assert len([line for line in log.lines if "cannot read" in line]) == 1
    kernel.now = state(WITHOUT_PASSWD)
    assert kinds(watcher.check(False)) == ["rules-removed"]


def test_a_deployed_state_someone_else_could_write_is_ignored(kernel, spool):
    spool.write_deployed(json.dumps({"state": state(WITHOUT_PASSWD).to_json()}).encode())
    os.chmod(spool.deployed_path, 0o666)
    log = Recorded()
    watcher = watch(spool, log)  # the first read is taken instead, and kept
    assert any("deployed state" in line and "ignored" in line for line in log.lines)
    kernel.now = state(WITHOUT_PASSWD)
    assert kinds(watcher.check(False)) == ["rules-removed"]


def test_a_loss_the_plugin_before_mailed_is_not_mailed_again_while_it_lasts(kernel, spool):
    """auditd 4.2 starts a new plugin at each reload: it reads what the one before mailed
    (status.json's tamper_reported) instead of mailing a standing loss once more."""
    before = watch(spool)
    kernel.now = state(WITHOUT_PASSWD)
    assert kinds(before.check(False)) == ["rules-removed"]
    saved = json.loads(json.dumps(state_watch.findings_json(before.reported)))
    after = state_watch.StateWatch(spool, Recorded(), WATCHED, netlink=None)
    after.start(saved)
    assert after.check(False) == []
    kernel.now = DEPLOYED
    assert after.check(False) == []  # undone
    kernel.now = state(WITHOUT_PASSWD)
    assert kinds(after.check(False)) == ["rules-removed"]  # removed again: mailed


def test_a_saved_finding_of_another_shape_is_passed_over():
    assert state_watch.findings_from_json([["k", "s", [], [], []], ["k"], "x", [1, 2, [], [], []]]) == [
        state_watch.Finding("k", "s", (), (), ())]
