"""The watchdog (`--watchdog`) on the real chain (conftest.py): this host's auditd runs the
plugin from files/, dma delivers to /var/mail/root. The watchdog is run by hand here, as the
timer or cron runs it: a healthy plugin gives no mail; a plugin stopped with SIGSTOP gives
one mail, however often the watchdog runs, and none more once it is continued; a plugin
that auditd gave up restarting (max_restarts) gives one mail."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from realchain import AUDITD_CONF, run, wait_for
from test_tamper_chain import now, tamper_mails

WATCHDOG_KINDS = ("plugin-missing", "plugin-stalled", "auditd-missing")


def watchdog(chain) -> subprocess.CompletedProcess:
    """One run of the watchdog with the chain's program and config; it must succeed."""
    done = run(chain.plugin, "--config", chain.config, "--watchdog", check=False)
    assert done.returncode == 0, done.stderr
    return done


def watchdog_mails(since: float) -> list:
    run("dma", "-q", check=False)
    return [m for m in tamper_mails(since) if m["X-Audit-Tamper"] in WATCHDOG_KINDS]


def judged(chain) -> dict:
    """Run the watchdog until it judges (not within its settling time after a start)."""
    def run_once():
        watchdog(chain)
        state = json.loads((chain.spool / "watchdog.json").read_text())
        return state if state["verdict"] != "starting" else None
    return wait_for(run_once, timeout=30, what="the watchdog to judge")


def outage(chain):
    return json.loads((chain.spool / "watchdog.json").read_text())["outage"]


def test_a_healthy_plugin_gives_no_mail(chain):
    since = now()
    # Past the watchdog's settling time after auditd's start: the verdict is final.
    assert judged(chain)["verdict"] == "healthy"
    watchdog(chain)
    assert outage(chain) is None
    assert watchdog_mails(since) == []


def test_a_stopped_plugin_gives_one_mail_and_none_once_continued(chain):
    [pid] = chain.plugin_pids()
    since = now()
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_for(lambda: Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T",
                 what="the plugin to stop")
        watchdog(chain)
        mails = wait_for(lambda: watchdog_mails(since), what="the watchdog's mail")
        watchdog(chain)
        watchdog(chain)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert outage(chain)["kind"] == "plugin-stalled" and outage(chain)["mailed"] is True
    body = mails[0].get_content()
    assert f"The alert plugin (pid {pid}) runs under auditd but is stopped" in body
    # Continued: it writes its status again; the next run ends the outage and mails nothing.
    reads = chain.status()["state_reads"]
    wait_for(lambda: chain.status()["state_reads"] > reads, what="the plugin's next heartbeat")
    watchdog(chain)
    assert outage(chain) is None
    mails = watchdog_mails(since)
    assert [m["X-Audit-Tamper"] for m in mails] == ["plugin-stalled"], [m["Subject"] for m in mails]


def set_max_restarts(count: int) -> None:
    text = AUDITD_CONF.read_text()
    text, found = re.subn(r"(?m)^max_restarts\s*=.*$", f"max_restarts = {count}", text)
    AUDITD_CONF.write_text(text if found else text + f"max_restarts = {count}\n")


def test_a_plugin_that_auditd_gave_up_on_gives_one_mail(chain):
    """max_restarts 1 (the fixture restores auditd.conf): the first SIGKILL is followed by a
    restart, the second by none."""
    set_max_restarts(1)
    chain.restart_auditd()
    chain.wait_plugin()
    [first] = chain.plugin_pids()
    os.kill(first, signal.SIGKILL)

    def restarted():
        subprocess.run([str(chain.watched)], check=True)  # auditd notices at its next write
        return [pid for pid in chain.plugin_pids() if pid != first]
    chain.load_rule()  # the restart reloaded audit.rules, which dropped the chain's rule
    [second] = wait_for(restarted, timeout=30, what="auditd to restart the plugin once")
    wait_for(lambda: chain.status()["pid"] == second, what="the second plugin's status")
    since = now()
    os.kill(second, signal.SIGKILL)
    # Events that auditd would restart the plugin on: the absence of a restart cannot be
    # waited for, only given the chances to happen.
    for _round in range(5):
        subprocess.run([str(chain.watched)], check=True)
        time.sleep(0.2)
    assert chain.plugin_pids() == [], "auditd restarted the plugin beyond max_restarts"
    assert judged(chain)["verdict"] == "plugin-missing"
    mails = wait_for(lambda: watchdog_mails(since), what="the watchdog's mail")
    watchdog(chain)
    mails = watchdog_mails(since)
    assert [m["X-Audit-Tamper"] for m in mails] == ["plugin-missing"], [m["Subject"] for m in mails]
    assert "is not one of its processes: auditd gave up restarting it" in mails[0].get_content()
