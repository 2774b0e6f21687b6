"""Signals that come while the plugin is still starting: auditd sends SIGHUP to its plugins
whenever it reloads, and SIGTERM when it stops, with no regard for how far a plugin got.

The signal is sent once the plugin's imports have begun (the first extension module of
the standard library is mapped into the process), which is long before the old plugin had
its handlers in place, and after the first line of the plugin has run."""

import signal
import time

import pytest
from fakes.harness import EventSource, PluginProcess, Sendmail, alive, write_config
from polling import wait_for

ATTEMPTS = 3  # start-ups per signal: the moment it lands varies with the machine's load


def importing(pid: int) -> bool:
    """True once the process has loaded an extension module from lib-dynload (Python's
    own start-up loads none; the plugin's imports of json, ssl and others do)."""
    try:
        with open(f"/proc/{pid}/maps") as maps:
            return "lib-dynload/" in maps.read()
    except OSError:
        return False  # gone, or not yet readable


@pytest.fixture
def rig(tmp_path):
    sendmail = Sendmail(tmp_path)
    spool = tmp_path / "spool"
    plugin = PluginProcess(write_config(tmp_path / "plugin.conf", sendmail.path, spool),
                           spool, tmp_path)
    yield sendmail, plugin
    plugin.stop()


def signal_while_importing(plugin: PluginProcess, number: int) -> float:
    """Start the plugin, send the signal as soon as its imports have begun; the seconds
    from the start to the signal."""
    started = time.monotonic()
    plugin.start()
    deadline = started + 20
    while not importing(plugin.pid):
        assert alive(plugin.pid), f"the plugin ended before its imports: {plugin.stderr()}"
        assert time.monotonic() < deadline, "the plugin never began its imports"
    plugin.signal(number)
    return time.monotonic() - started


def test_sighup_during_start_up_reloads_instead_of_killing(rig):
    sendmail, plugin = rig
    source = EventSource()
    for attempt in range(ATTEMPTS):
        at = signal_while_importing(plugin, signal.SIGHUP)
        events, ids = source.matching(1)
        try:
            plugin.write(events)
        except BrokenPipeError:
            pass  # dead already: the wait below says how
        code = plugin.close()
        assert code == 0, f"attempt {attempt}: SIGHUP {at * 1000:.0f} ms after the start " \
                          f"ended the plugin with {code}: {plugin.stderr()[-1000:]}"
        assert "config reloaded: 1 rules" in plugin.stderr(), "the held-back HUP was not handled"
        wait_for(lambda wanted=ids[0]: wanted in [m.event_id for m in sendmail.mails()], 30,
                 "the alert of the event sent after the HUP")
        print(f"attempt {attempt}: SIGHUP {at * 1000:.0f} ms after the start: reloaded, alerted")


def test_sigterm_during_start_up_is_a_clean_stop(rig):
    _sendmail, plugin = rig
    for attempt in range(ATTEMPTS):
        at = signal_while_importing(plugin, signal.SIGTERM)
        code = plugin.wait()
        assert code == 0, f"attempt {attempt}: SIGTERM {at * 1000:.0f} ms after the start " \
                          f"ended the plugin with {code}, not a clean stop"
        assert "stopped" in plugin.stderr()
