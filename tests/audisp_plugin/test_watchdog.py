"""The watchdog's decision (judge), its state from run to run (one mail per outage), its
reading of /proc on real processes, and a whole run through the configured transport. On
this host's real auditd: tests/modules/test_watchdog_chain.py."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import PYTHON, delivered, write_config
from mailalert import watchdog
from mailalert.config import load_config
from mailalert.log import Log
from mailalert.spool import boot_id, uptime
from mailalert.watchdog import STALE_AFTER, Process, judge, must_mail, next_state
from polling import wait_for

PROGRAM = "/sbin/audisp-mailalert"
CONFIG = "/etc/audit/audisp-mailalert.conf"
NOW = 1_800_000_000.0
UP = 5000.0  # seconds since boot


def auditd(pid=100, start=UP - 600):
    return Process(pid, 1, "S", "auditd", ["/sbin/auditd"], start)


def plugin(pid=200, ppid=100, state="S", start=UP - 300, config=CONFIG):
    return Process(pid, ppid, state, "audisp-mailal", [PYTHON, PROGRAM, "--config", config], start)


def fresh(pid=200, age=2.0):
    return {"pid": pid, "updated": NOW - age, "running": True}


def verdict(found, status=None):
    return judge(found, PROGRAM, CONFIG, status, NOW, UP)


def test_a_plugin_under_auditd_with_a_fresh_status_is_healthy():
    assert verdict([auditd(), plugin()], fresh()).kind == "healthy"


def test_a_stopped_plugin_is_stalled_whatever_its_status_says():
    found = verdict([auditd(), plugin(state="T")], fresh())
    assert found.kind == "plugin-stalled"
    assert "stopped (state T: SIGSTOP" in found.what[0]


def test_a_status_older_than_the_bound_is_stale():
    assert verdict([auditd(), plugin()], fresh(age=STALE_AFTER - 1)).kind == "healthy"
    found = verdict([auditd(), plugin()], fresh(age=STALE_AFTER + 1))
    assert found.kind == "plugin-stalled"
    assert f"last written {STALE_AFTER + 1:.0f} s ago" in found.what[0]


def test_a_status_of_another_pid_is_not_the_plugins_own():
    # The plugin started 300 s ago and never wrote status.json: hung.
    assert verdict([auditd(), plugin()], fresh(pid=199)).kind == "plugin-stalled"
    # Just started: not judged yet.
    assert verdict([auditd(), plugin(start=UP - 5)], fresh(pid=199)).kind == "starting"
    # No status.json at all: no plugin has run with this spool yet.
    assert verdict([auditd(), plugin()], None).kind == "starting"
    assert verdict([auditd()], None).kind == "starting"


def test_no_plugin_under_a_running_auditd_is_missing():
    found = verdict([auditd()], fresh())
    assert found.kind == "plugin-missing"
    assert "auditd (pid 100) runs" in found.what[0]
    # auditd started a moment ago: its plugins are on their way.
    assert verdict([auditd(start=UP - 2)], fresh()).kind == "starting"


def test_the_plugin_must_be_auditds_child_and_run_this_config():
    stray = plugin(ppid=1)
    found = verdict([auditd(), stray], fresh())
    assert found.kind == "plugin-missing"
    assert any("pid 200, parent 1" in line for line in found.what)
    assert verdict([auditd(), plugin(config="/tmp/other.conf")], fresh()).kind == "plugin-missing"
    # The default config is the one the watchdog was given when argv names none.
    bare = Process(200, 100, "S", "audisp-mailal", [PROGRAM], UP - 300)
    assert verdict([auditd(), bare], fresh()).kind == "healthy"


def test_no_auditd_is_missing_and_a_dead_one_does_not_count():
    assert verdict([plugin(ppid=1)], fresh()).kind == "auditd-missing"
    zombie = Process(100, 1, "Z", "auditd", [], UP - 600)
    assert verdict([zombie, plugin()], fresh()).kind == "auditd-missing"


def test_one_mail_per_outage_and_a_healthy_run_ends_it():
    stalled = verdict([auditd(), plugin(state="T")], fresh())
    healthy = verdict([auditd(), plugin()], fresh())
    state = next_state(None, stalled, "boot-a", NOW)
    assert must_mail(state, stalled)
    state["outage"]["mailed"] = True
    # The next runs of the same outage, also when it turns into another kind: no mail.
    again = next_state(state, stalled, "boot-a", NOW + 60)
    assert not must_mail(again, stalled)
    missing = verdict([auditd()], fresh())
    assert not must_mail(next_state(again, missing, "boot-a", NOW + 120), missing)
    # A run that cannot judge keeps the outage; a healthy one ends it.
    starting = verdict([auditd(start=UP - 2)], fresh())
    assert next_state(again, starting, "boot-a", NOW + 120)["outage"] == again["outage"]
    over = next_state(again, healthy, "boot-a", NOW + 180)
    assert over["outage"] is None and not must_mail(over, healthy)
    # The next outage is mailed again.
    assert must_mail(next_state(over, stalled, "boot-a", NOW + 240), stalled)


def test_a_mail_that_failed_is_tried_again_and_an_earlier_boots_outage_is_over():
    stalled = verdict([auditd(), plugin(state="T")], fresh())
    state = next_state(None, stalled, "boot-a", NOW)  # not marked mailed: delivery failed
    assert must_mail(next_state(state, stalled, "boot-a", NOW + 60), stalled)
    state["outage"]["mailed"] = True
    assert must_mail(next_state(state, stalled, "boot-b", NOW + 60), stalled)


def test_process_read_sees_a_stopped_child_its_parent_and_argv():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "--config", "x"])
    try:
        os.kill(child.pid, signal.SIGSTOP)
        seen = wait_for(lambda: (p := Process.read(child.pid)) and p.state == "T" and p,
                        what="the child to stop")
        assert seen.ppid == os.getpid()
        assert seen.argv[1:] == ["-c", "import time; time.sleep(60)", "--config", "x"]
        assert 0 <= uptime() - seen.start < 30
        assert child.pid in [p.pid for p in watchdog.processes()]
    finally:
        child.kill()
        child.wait()


@pytest.fixture
def setup(tmp_path, fake_sendmail, monkeypatch):
    """A config with the fake sendmail and a private spool; the host's processes replaced
    by a list the test sets (the decision has its own tests above)."""
    program, out = fake_sendmail
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o700)
    path = write_config(tmp_path, f"[mail]\nto = secops\nsendmail = {program}\n[spool]\ndir = {spool}\n"
                        "[rule r]\nkeys = k\n[tamper]\nto = tamper-desk\n")
    config = load_config(str(path), [], True)
    found = []
    monkeypatch.setattr(watchdog, "processes", lambda: found)
    live = [auditd(start=0.0), Process(200, 100, "T", "x", [PROGRAM, "--config", str(path)], 0.0)]
    (spool / "status.json").write_text(json.dumps({"pid": 200, "updated": time.time()}))
    return config, spool, out, found, live


def test_a_run_mails_one_tamper_finding_per_outage(setup):
    config, spool, out, found, live = setup
    found[:] = live
    assert watchdog.run_watchdog(config, Log(), PROGRAM) == 0
    assert watchdog.run_watchdog(config, Log(), PROGRAM) == 0
    mails = delivered(out)
    assert len(mails) == 1
    argv, mail = mails[0]
    assert argv[-1] == "tamper-desk"
    assert mail["X-Audit-Tamper"] == "plugin-stalled"
    assert mail["X-Audit-Key"] == "tamper"
    assert mail["Subject"].startswith("[audit] tamper: the alert plugin is stopped on ")
    assert "SIGSTOP" in mail.get_content()
    state = json.loads((spool / "watchdog.json").read_text())
    assert state["outage"]["kind"] == "plugin-stalled" and state["outage"]["mailed"] is True
    assert state["boot"] == boot_id()
    assert os.stat(spool / "watchdog.json").st_mode & 0o777 == 0o600
    # Continued: healthy, the outage is over, no mail; stopped again: a new mail.
    found[1] = Process(200, 100, "S", "x", live[1].argv, 0.0)
    assert watchdog.run_watchdog(config, Log(), PROGRAM) == 0
    assert len(delivered(out)) == 1
    assert json.loads((spool / "watchdog.json").read_text())["outage"] is None
    found[:] = [auditd(start=0.0)]
    assert watchdog.run_watchdog(config, Log(), PROGRAM) == 0
    assert [m["X-Audit-Tamper"] for _a, m in delivered(out)] == ["plugin-stalled", "plugin-missing"]


def test_a_failed_delivery_fails_the_run_and_the_next_run_mails(setup, tmp_path):
    config, _spool, out, found, live = setup
    found[:] = live
    real = config.sendmail
    config.sendmail = str(tmp_path / "no-such-sendmail")
    assert watchdog.run_watchdog(config, Log(), PROGRAM) == 1
    assert delivered(out) == []
    config.sendmail = real
    assert watchdog.run_watchdog(config, Log(), PROGRAM) == 0
    assert len(delivered(out)) == 1


def test_the_role_s_open_window_is_not_judged(setup):
    config, spool, out, found, live = setup
    found[:] = live
    now, up = int(time.time()), uptime()
    (spool / "maintenance").write_text(f"{now} {now + 30} {boot_id()} {up:.2f} {up + 30:.2f}\n")
    (spool / "maintenance").chmod(0o600)
    assert watchdog.run_watchdog(config, Log(), PROGRAM) == 0
    assert delivered(out) == [] and not (spool / "watchdog.json").exists()
    (spool / "maintenance").unlink()
    assert watchdog.run_watchdog(config, Log(), PROGRAM) == 0
    assert len(delivered(out)) == 1


def test_a_spool_where_no_plugin_ran_yet_is_not_judged(setup):
    config, spool, out, found, live = setup
    found[:] = live[:1]
    (spool / "status.json").unlink()
    assert watchdog.run_watchdog(config, Log(), PROGRAM) == 0
    assert json.loads((spool / "watchdog.json").read_text())["verdict"] == "starting"
    assert delivered(out) == []


def test_tamper_alerts_off_means_no_watchdog_mail(setup):
    config, _spool, out, found, live = setup
    found[:] = live
    config.tamper = None
    assert watchdog.run_watchdog(config, Log(), PROGRAM) == 0
    assert delivered(out) == []
