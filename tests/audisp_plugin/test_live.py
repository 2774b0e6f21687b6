"""The plugin as a long-running process fed through a pipe, as auditd runs it: events are
alerted while stdin stays open (aging on a timer), SIGHUP reloads the config or keeps the
old one, SIGTERM digests what was held back and exits 0."""

import re
import signal
import subprocess
import threading
import time

import pytest
from conftest import PLUGIN, PYTHON, events_with_key, log_bytes, write_config
from polling import wait_for


class LivePlugin:
    """The plugin with --print, stdin a pipe we keep open, stdout/stderr collected."""

    def __init__(self, config):
        self.process = subprocess.Popen(
            [PYTHON, str(PLUGIN), "--config", str(config), "--print"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={})
        self.stdout = bytearray()
        self.stderr = bytearray()
        self._readers = [threading.Thread(target=self._drain, args=(s, b), daemon=True)
                         for s, b in ((self.process.stdout, self.stdout),
                                      (self.process.stderr, self.stderr))]
        for reader in self._readers:
            reader.start()
        wait_for(lambda: b"started" in self.stderr)

    @staticmethod
    def _drain(stream, buffer):
        for chunk in iter(lambda: stream.read1(65536), b""):
            buffer.extend(chunk)

    def send(self, data):
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def events(self):
        return re.findall(rb"^X-Audit-Event: (\S+)$", bytes(self.stdout), re.MULTILINE)

    def stop(self, how=signal.SIGTERM):
        if how is None:
            self.process.stdin.close()
        else:
            self.process.send_signal(how)
        code = self.process.wait(timeout=30)
        for reader in self._readers:
            reader.join(5)
        return code


@pytest.fixture
def live(tmp_path):
    started = []

    def start(config_text):
        plugin = LivePlugin(write_config(tmp_path, config_text))
        started.append(plugin)
        return plugin

    yield start
    for plugin in started:
        if plugin.process.poll() is None:
            plugin.process.kill()
            plugin.process.wait()


def events_by_serial(data):
    """The records of each event of a captured log, keyed by serial, in log order."""
    events = {}
    for line in data.splitlines(keepends=True):
        serial = int(re.match(rb"type=\S+ msg=audit\(\d+\.\d+:(\d+)\)", line).group(1))
        events.setdefault(serial, []).append(line)
    return events


def restamp(lines, when):
    """The event's records with its time set to `when` (so aging sees a fresh event)."""
    stamp = f"{when:.3f}".encode()
    return b"".join(re.sub(rb"msg=audit\(\d+\.\d+:", b"msg=audit(" + stamp + b":", line)
                    for line in lines)


def test_lone_event_without_end_record_is_alerted_within_2_seconds(live):
    data = log_bytes("multi-key")
    serial = events_with_key(data, "amx-multi")[0][1]
    plugin = live("[rule r]\nkeys = amx-multi\n")
    # auparse knows a syscall event is complete at its PROCTITLE or EOE record; without
    # them only aging on the timer completes it.
    records = [r for r in events_by_serial(data)[serial] if not r.startswith(b"type=PROCTITLE")]
    sent = time.monotonic()
    plugin.send(restamp(records, time.time()))
    wait_for(plugin.events, timeout=5)
    elapsed = time.monotonic() - sent
    print(f"lone event alerted after {elapsed:.2f} s")
    assert elapsed < 2.0
    assert plugin.stop() == 0


def test_event_with_end_record_is_alerted_at_once(live):
    data = log_bytes("multi-key")
    serial = events_with_key(data, "amx-multi")[0][1]
    plugin = live("[rule r]\nkeys = amx-multi\n")
    now = time.time()
    event = restamp(events_by_serial(data)[serial], now)
    eoe = f"type=EOE msg=audit({now:.3f}:{serial}): \n".encode()
    sent = time.monotonic()
    plugin.send(event + eoe)
    wait_for(plugin.events, timeout=5)
    assert time.monotonic() - sent < 0.5
    assert plugin.stop() == 0


def test_sighup_reloads_and_a_broken_config_keeps_the_old_one(live, tmp_path):
    data = log_bytes("hostile", "multi-key")
    hostile = events_with_key(data, "amx-hostile")
    plugin = live("[limits]\nmax_mails = 1000\n[rule r]\nkeys = amx-multi\n")
    plugin.send(log_bytes("multi-key"))
    wait_for(lambda: len(plugin.events()) == 1)

    write_config(tmp_path, "[rule r]\nkeys = amx-hostile\nbogus = 1\n")
    plugin.process.send_signal(signal.SIGHUP)
    wait_for(lambda: b"reload refused" in plugin.stderr)
    assert b"[rule r] bogus" in plugin.stderr
    assert plugin.process.poll() is None, "a broken config must not stop the plugin"
    plugin.send(log_bytes("hostile"))      # old rule: no alert for these
    plugin.send(log_bytes("multi-key"))    # old rule still in force: a second alert
    wait_for(lambda: len(plugin.events()) == 2)

    write_config(tmp_path, "[limits]\nmax_mails = 1000\n[rule r]\nkeys = amx-hostile\n")
    plugin.process.send_signal(signal.SIGHUP)
    wait_for(lambda: b"config reloaded" in plugin.stderr)
    plugin.send(log_bytes("hostile"))
    wait_for(lambda: len(plugin.events()) == 2 + len(hostile))
    assert plugin.stop() == 0
    assert len(plugin.events()) == 2 + len(hostile)


@pytest.mark.parametrize("how", [signal.SIGTERM, None], ids=["sigterm", "eof"])
def test_stop_digests_what_was_held_back_and_exits_0(live, how):
    data = log_bytes("flood")
    total = len(events_with_key(data, "amx-flood"))
    plugin = live("[rule flood]\nkeys = amx-flood\nmax_mails = 2\nwindow = 3600\n")
    plugin.send(data)
    wait_for(lambda: len(plugin.events()) == 2)
    assert b"X-Audit-Digest" not in plugin.stdout, "the window has not ended yet"
    assert plugin.stop(how) == 0
    held = re.findall(rb"^Held back: (\d+)$", bytes(plugin.stdout), re.MULTILINE)
    assert [int(n) for n in held] == [total - 2]


def test_window_end_sends_the_digest_without_new_events(live):
    data = log_bytes("flood")
    total = len(events_with_key(data, "amx-flood"))
    plugin = live("[rule flood]\nkeys = amx-flood\nmax_mails = 1\nwindow = 2\n")
    plugin.send(data)
    held = wait_for(lambda: re.findall(rb"^Held back: (\d+)$", bytes(plugin.stdout), re.MULTILINE),
                    timeout=10)
    assert [int(n) for n in held] == [total - 1]
    assert plugin.process.poll() is None
    assert plugin.stop() == 0


def test_rule_removed_by_sighup_sends_its_digest_first(live, tmp_path):
    data = log_bytes("flood")
    total = len(events_with_key(data, "amx-flood"))
    plugin = live("[rule flood]\nkeys = amx-flood\nmax_mails = 1\nwindow = 3600\n")
    plugin.send(data)
    wait_for(lambda: len(plugin.events()) == 1)
    write_config(tmp_path, "[rule other]\nkeys = amx-multi\n")
    plugin.process.send_signal(signal.SIGHUP)
    held = wait_for(lambda: re.findall(rb"^Held back: (\d+)$", bytes(plugin.stdout), re.MULTILINE))
    assert [int(n) for n in held] == [total - 1]
    assert b"X-Audit-Digest: flood" in plugin.stdout
    plugin.send(data)  # the rule is gone: no more alerts, and no second digest at exit
    assert plugin.stop() == 0
    assert len(plugin.events()) == 1
    assert len(re.findall(rb"^Held back:", bytes(plugin.stdout), re.MULTILINE)) == 1
