"""auditd's reloads and restarts on the real chain (conftest.py): this host's auditd (3.0.9)
reloads with SIGHUP to the plugin (4.2's way, the plugin stopped and started anew, is
played by tests/audisp_plugin/test_reload.py). An admin's reload mails nothing and the
rate limit holds across it; a restart loses no held-back count; a deactivated entry and a
reload is one tamper mail."""

from __future__ import annotations

import os
import signal
import subprocess

from host_auditd import auditd_pid
from realchain import PLUGINS_D, wait_for
from test_tamper_chain import now, tamper_mails


def row(chain) -> dict:
    return chain.status()["rules"]["modtest"]


def events(chain, count: int) -> None:
    for _run in range(count):
        subprocess.run([str(chain.watched)], check=True)


def held(chain, sent: int, count: int) -> None:
    wait_for(lambda: row(chain)["sent"] == sent and row(chain)["held"] == count,
             what=f"status.json: sent {sent}, held {count}")


def reload_auditd(chain) -> None:
    """What an admin's `service auditd reload` does: SIGHUP to auditd. Waits until the
    plugin (its old one, or its successor) rewrote status.json."""
    status = chain.spool / "status.json"
    before = status.stat().st_mtime_ns
    os.kill(auditd_pid(), signal.SIGHUP)
    wait_for(lambda: status.stat().st_mtime_ns != before, what="status.json after the reload")


def test_an_admins_reload_mails_nothing_and_the_limit_holds(chain):
    chain.write_config(max_mails=2)
    reload_auditd(chain)
    since = now()
    [pid] = chain.plugin_pids()
    events(chain, 3)
    held(chain, 2, 1)
    reload_auditd(chain)
    events(chain, 3)
    held(chain, 2, 4)
    assert chain.plugin_pids() == [pid]  # audit 3.x: the plugin reloads in place
    assert tamper_mails(since) == [], [m["Subject"] for m in tamper_mails(since)]


def test_a_restart_loses_no_held_back_count(chain):
    chain.write_config(max_mails=2)
    reload_auditd(chain)
    events(chain, 3)
    held(chain, 2, 1)
    [pid] = chain.plugin_pids()
    chain.restart_auditd()
    chain.load_rule()  # auditd's start loaded audit.rules anew, without the test's rule
    chain.record_state()
    wait_for(lambda: [p for p in chain.plugin_pids() if p != pid], what="the new plugin")
    wait_for(lambda: chain.status()["pid"] != pid, what="the new plugin's status.json")
    events(chain, 3)
    held(chain, 2, 4)


def test_a_deactivated_entry_and_a_reload_is_one_tamper_mail(chain):
    since = now()
    [pid] = chain.plugin_pids()
    chain.write_plugins_d(active="no")
    os.kill(auditd_pid(), signal.SIGHUP)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), what="the plugin to exit")
    mails = wait_for(lambda: tamper_mails(since), what="the plugin-stopped mail")
    subprocess.run(["dma", "-q"], check=False)
    assert [m["X-Audit-Tamper"] for m in tamper_mails(since)] == ["plugin-stopped"]
    assert "plugins.d entry was removed or deactivated" in mails[0].get_content()
    assert PLUGINS_D.exists()
