"""Fault tests: the real plugin against a real sendmail stand-in that fails, hangs or is
missing, and restarts in the middle. What the plugin accepted is never lost, is delivered
once the mail system recovers, and is delivered exactly once (at least once after KILL)."""

import collections
import signal
import threading
import time
from pathlib import Path

import pytest
from fakes.harness import (
    EventSource,
    PluginProcess,
    Sendmail,
    alive,
    processes_mentioning,
    write_config,
)
from polling import wait_for

EVENTS = 20
WRITE_DEADLINE = 30  # s to write 28 MB of records into a plugin that keeps reading
DELIVERY_DEADLINE = 60  # s; retries back off 1 s then 2 s (retry_min/retry_max in the config)


class Rig:
    """One plugin, its spool, its config and its own sendmail stand-in."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sendmail = Sendmail(root)
        self.spool = root / "spool"
        self.config = write_config(root / "plugin.conf", self.sendmail.path, self.spool)
        self.plugin = PluginProcess(self.config, self.spool, root)
        self.source = EventSource()

    def settle(self) -> None:
        """After a SIGKILL: wait until no orphaned sendmail run (or a child forked just
        before the kill) is left, so the mode it reads is the one the test set."""
        wait_for(lambda: not processes_mentioning(str(self.root)), 15,
                 "orphaned sendmail runs to end")

    def delivered_ids(self) -> "list[str]":
        return [m.event_id for m in self.sendmail.mails()]

    def assert_each_delivered_once(self, ids: "list[str]") -> None:
        wait_for(lambda: len(self.sendmail.mails()) >= len(ids), DELIVERY_DEADLINE,
                 f"{len(ids)} mails (have {len(self.sendmail.mails())})")
        wait_for(lambda: not self.plugin.queued(), DELIVERY_DEADLINE, "an empty spool queue")
        counts = collections.Counter(self.delivered_ids())
        assert sorted(counts) == sorted(ids), "delivered alerts differ from the accepted ones"
        assert set(counts.values()) == {1}, f"delivered more than once: {counts}"


@pytest.fixture
def rig(tmp_path):
    rig = Rig(tmp_path)
    yield rig
    rig.plugin.stop()
    rig.sendmail.kill_hung()


def accept_while_down(rig: Rig, mode: str) -> "list[str]":
    """Break the mail system, start the plugin, feed matching events and noise, and wait
    until every alert sits in the spool (none can be delivered)."""
    if mode == "missing":
        rig.sendmail.remove()
    else:
        rig.sendmail.set_mode(mode)
    data, ids = rig.source.matching(EVENTS)
    rig.plugin.start()
    rig.plugin.write(rig.source.noise(50) + data + rig.source.noise(50))
    wait_for(lambda: sorted(rig.plugin.queued_event_ids()) == sorted(ids), 30,
             f"{EVENTS} alerts in the spool (have {len(rig.plugin.queued())})")
    assert rig.sendmail.mails() == [], "a mail got through a broken mail system"
    return ids


def recover(rig: Rig) -> None:
    rig.sendmail.restore()
    rig.sendmail.set_mode("deliver")


@pytest.mark.parametrize("mode", ["fail", "missing"])
def test_failing_mail_system_loses_nothing_and_delivers_after_recovery(rig, mode):
    ids = accept_while_down(rig, mode)
    # Still spooled after a few retries: a failure never deletes an alert.
    wait_for(lambda: "failed" in rig.plugin.stderr(), 10, "a logged delivery failure")
    assert len(rig.plugin.queued()) == EVENTS

    recover(rig)
    rig.assert_each_delivered_once(ids)
    assert rig.plugin.close() == 0


def test_hanging_sendmail_is_timed_out_and_delivery_resumes(rig):
    ids = accept_while_down(rig, "hang")
    first = wait_for(rig.sendmail.hung_pids, 10, "a sendmail run that hangs")[0]
    # timeout = 2 s in the config: the plugin kills the hung run and retries.
    wait_for(lambda: not alive(first), 15, f"the plugin to kill hung sendmail {first}")
    assert len(rig.plugin.queued()) == EVENTS

    recover(rig)
    rig.assert_each_delivered_once(ids)
    assert rig.plugin.close() == 0


def test_hanging_sendmail_does_not_block_the_audit_stream(rig):
    """auditd writes to its plugins synchronously: the plugin must keep draining stdin
    while delivery hangs. The sendmail timeout is 600 s here, so a plugin that delivered
    in its reading thread would stall the writer for minutes; 20,000 events (~28 MB) is
    far beyond any pipe buffer. Then the hung sendmail dies and delivery resumes."""
    write_config(rig.config, rig.sendmail.path, rig.spool, timeout=600)
    rig.sendmail.set_mode("hang")
    matching, ids = rig.source.matching(EVENTS)
    noise = rig.source.noise(20000)
    rig.plugin.start()
    rig.plugin.write(matching)
    hung = wait_for(rig.sendmail.hung_pids, 10, "a sendmail run that hangs")
    wrote = threading.Event()

    def writer():
        rig.plugin.write(noise)
        wrote.set()

    started = time.monotonic()
    threading.Thread(target=writer, daemon=True).start()
    assert wrote.wait(WRITE_DEADLINE), \
        f"the plugin stopped reading stdin for {WRITE_DEADLINE} s while sendmail hung"
    print(f"wrote {len(noise)} bytes in {time.monotonic() - started:.1f} s while sendmail hung")
    assert rig.sendmail.hung_pids() == hung and alive(hung[0]), "sendmail stopped hanging early"

    recover(rig)
    rig.sendmail.kill_hung()  # the MTA's program dies: a failed delivery, retried
    rig.assert_each_delivered_once(ids)
    assert rig.plugin.close() == 0


def test_eof_with_mail_system_down_keeps_the_spool_for_the_next_start(rig):
    ids = accept_while_down(rig, "fail")
    assert rig.plugin.close() == 0, "EOF must end the plugin even when delivery fails"
    assert sorted(rig.plugin.queued_event_ids()) == sorted(ids)

    recover(rig)
    rig.plugin.start()
    rig.assert_each_delivered_once(ids)
    assert rig.plugin.close() == 0


def test_sigterm_mid_way_then_restart_delivers_each_alert_once(rig):
    ids = accept_while_down(rig, "fail")
    rig.plugin.signal(signal.SIGTERM)
    assert rig.plugin.wait() == 0
    assert sorted(rig.plugin.queued_event_ids()) == sorted(ids), "SIGTERM lost spooled alerts"

    recover(rig)
    rig.plugin.start()
    # New events after the restart are delivered too, alongside the old ones.
    data, more = rig.source.matching(5)
    rig.plugin.write(data)
    rig.assert_each_delivered_once(ids + more)
    assert rig.plugin.close() == 0


def test_sigterm_while_sendmail_hangs_exits_and_keeps_the_alerts(rig):
    ids = accept_while_down(rig, "hang")
    wait_for(rig.sendmail.hung_pids, 10, "a sendmail run that hangs")
    rig.plugin.signal(signal.SIGTERM)
    assert rig.plugin.wait(20) == 0
    assert sorted(rig.plugin.queued_event_ids()) == sorted(ids)

    recover(rig)
    rig.plugin.start()
    rig.assert_each_delivered_once(ids)
    assert rig.plugin.close() == 0


def test_sigkill_with_spooled_alerts_loses_nothing_already_spooled(rig):
    ids = accept_while_down(rig, "fail")
    rig.plugin.signal(signal.SIGKILL)
    assert rig.plugin.wait() == -signal.SIGKILL
    rig.settle()
    assert sorted(rig.plugin.queued_event_ids()) == sorted(ids)

    recover(rig)
    rig.plugin.start()
    rig.assert_each_delivered_once(ids)
    assert rig.plugin.close() == 0


def test_sigkill_during_delivery_then_restart_delivers_every_alert(rig):
    """Killed while mails go out one by one: every alert that was spooled or delivered at
    the kill is delivered after the restart; only the one in flight may come twice."""
    rig.sendmail.set_mode("slow")
    events = 40
    data, ids = rig.source.matching(events)
    rig.plugin.start()
    rig.plugin.write(data)

    def accepted():
        return set(rig.plugin.queued_event_ids()) | set(rig.delivered_ids()) == set(ids)
    wait_for(accepted, 30, "every alert spooled or delivered")
    wait_for(lambda: len(rig.sendmail.mails()) >= 3, 30, "the first deliveries")
    rig.plugin.signal(signal.SIGKILL)
    assert rig.plugin.wait() == -signal.SIGKILL
    rig.settle()
    left = len(rig.plugin.queued())
    assert left > 0, "delivery finished before the kill; the test proves nothing"

    rig.plugin.start()
    wait_for(lambda: not rig.plugin.queued(), DELIVERY_DEADLINE, "an empty spool queue")
    # The sendmail run in flight outlives the plugin and delivers what it was given:
    # the whole message (a duplicate) or, killed mid-write, a cut one without the header.
    delivered = rig.delivered_ids()
    counts = collections.Counter(i for i in delivered if i)
    assert sorted(counts) == sorted(ids), "an alert was lost across the kill"
    extra = len(delivered) - len(ids)
    assert extra <= 1, f"{extra} extra mails; only the one in flight may come twice"
    print(f"killed with {left} of {events} alerts queued; {extra} extra mail "
          f"({delivered.count('')} cut short)")
    assert rig.plugin.close() == 0
