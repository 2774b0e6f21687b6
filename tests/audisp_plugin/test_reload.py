"""auditd's reloads and restarts as each audit version does them to its plugins, played by
a stand-in auditd: this test process is the plugin's parent and holds the other end of its
input, a socket pair as auditd's (so the plugin knows it runs under auditd).

- audit 4.2's reload: the input closed, SIGTERM 50 ms later if the plugin still runs, the
  plugin list started anew (audisp/audispd.c, stop_plugin);
- audit 3.x to 4.1: SIGTERM, then the input closed, for an entry removed or deactivated;
- a restart of auditd: DAEMON_END, then the plugin ends or (4.2's unit, KillMode=mixed)
  is killed with SIGKILL.

The plugin tells a reload from a stop by its plugins.d entry, which it finds through the
host's /etc/audit/auditd.conf: the tests write an entry of their own there, under the host
auditd lock (the host's auditd is not reloaded while it exists, so it never runs it)."""

import json
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from fakes.harness import PLUGIN, PYTHON, EventSource, Sendmail, write_config
from polling import wait_for

ENTRY = Path("/etc/audit/plugins.d/zz-amx-reload-test.conf")
AUDITD_STOP_DELAY = 0.05  # what audit 4.2 waits between closing the input and SIGTERM


class FakeAuditd:
    """Starts the plugin as auditd does (stdin one end of a socket pair, empty
    environment, this process its parent) and ends it as a given audit version does."""

    def __init__(self, config: Path, logs: Path) -> None:
        self.config = config
        self.logs = logs
        self.runs = 0
        self.process = None  # type: subprocess.Popen
        self.sock = None  # type: socket.socket

    def start(self) -> None:
        self.runs += 1
        ours, theirs = socket.socketpair()
        with open(self.logs / f"plugin-{self.runs}.err", "wb") as err:
            self.process = subprocess.Popen([PYTHON, str(PLUGIN), "--config", str(self.config)],
                                            stdin=theirs, stdout=subprocess.DEVNULL, stderr=err,
                                            env={}, cwd="/", start_new_session=True)
        theirs.close()
        self.sock = ours

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def stderr(self, run: int = 0) -> str:
        return (self.logs / f"plugin-{run or self.runs}.err").read_text(errors="replace")

    def wait(self, timeout: float = 30) -> int:
        return self.process.wait(timeout)

    def stop_42(self) -> int:
        """audit 4.2's stop_plugin: close the input, SIGTERM 50 ms later, wait for it."""
        self.sock.close()
        time.sleep(AUDITD_STOP_DELAY)  # auditd's own delay, the thing being reproduced
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait()

    def stop_3x(self) -> int:
        """audit 3.x to 4.1 ending a deactivated entry: SIGTERM, then the input closed."""
        self.process.send_signal(signal.SIGTERM)
        self.sock.close()
        return self.wait()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self.sock.close()

    def cleanup(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()


@pytest.fixture
def rig(tmp_path, host_auditd_config):
    sendmail = Sendmail(tmp_path)
    spool = tmp_path / "spool"
    auditd = FakeAuditd(tmp_path / "plugin.conf", tmp_path)
    yield sendmail, spool, auditd
    auditd.cleanup()
    ENTRY.unlink(missing_ok=True)


def write_entry(active: str) -> None:
    ENTRY.write_text(f"active = {active}\ndirection = out\npath = {PLUGIN}\ntype = always\n"
                     "format = string\n")


def configure(auditd: FakeAuditd, sendmail: Sendmail, spool: Path, tamper: bool, **limits) -> None:
    write_config(auditd.config, sendmail.path, spool, **limits)
    if not tamper:
        with open(auditd.config, "a") as handle:
            handle.write("[tamper]\nenabled = no\n")


def status(spool: Path) -> dict:
    try:
        return json.loads((spool / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def row_is(spool: Path, pid: int, sent: int, held: int):
    """status.json of the plugin pid shows the watch rule's window with sent and held."""
    document = status(spool)
    row = document.get("rules", {}).get("watch", {})
    return document.get("pid") == pid and row.get("sent") == sent and row.get("held") == held


def mails(sendmail: Sendmail) -> dict:
    found = {"alerts": [], "digests": [], "tamper": []}
    for mail in sendmail.mails():
        message = mail.message
        if message["X-Audit-Digest"] is not None:
            found["digests"].append(message)
        elif message["X-Audit-Tamper"] is not None:
            found["tamper"].append(message)
        else:
            found["alerts"].append(message)
    return found


def held_back(digest) -> int:
    return int(re.search(r"^Held back: (\d+)$", digest.get_content(), re.MULTILINE).group(1))


def daemon_end(seconds: int, serial: int) -> bytes:
    return (f"type=DAEMON_END msg=audit({seconds}.000:{serial}): op=terminate auid=0 uid=0 "
            f"ses=4294967295 pid=1 subj=unconfined res=success\n").encode()


def three_then_three(auditd, sendmail, spool, source, between) -> None:
    """Three events to the first plugin (max_mails 2: two alerts, one held), between(), then
    three events to the next one."""
    auditd.start()
    auditd.write(source.matching(3)[0])
    # ... and delivered: a plugin killed while its sendmail runs leaves the mail in the
    # spool, and the next one delivers it again (at least once, never lost).
    wait_for(lambda: row_is(spool, auditd.process.pid, 2, 1) and len(sendmail.mails()) == 2
             and not list((spool / "queue").glob("*.eml")), 20,
             "the first plugin's status (sent 2, held 1) and its two alerts delivered")
    between()
    auditd.start()
    auditd.write(source.matching(3)[0])


@pytest.mark.parametrize("tamper", [True, False], ids=["tamper-on", "tamper-off"])
def test_a_42_reload_is_no_tamper_and_the_limit_holds_across_it(rig, tamper):
    sendmail, spool, auditd = rig
    write_entry("yes")
    configure(auditd, sendmail, spool, tamper, max_mails=2, window=8)
    source = EventSource()
    first = []

    def reload_42():
        first.append(auditd.process.pid)
        assert auditd.stop_42() == 0

    three_then_three(auditd, sendmail, spool, source, reload_42)
    digest = wait_for(lambda: mails(sendmail)["digests"], 30, "the digest at the window's end")
    found = mails(sendmail)
    assert len(found["alerts"]) == 2, [m["Subject"] for m in found["alerts"]]
    assert len(digest) == 1 and held_back(digest[0]) == 4
    assert found["tamper"] == [], [m["Subject"] for m in found["tamper"]]
    assert "a reload" in auditd.stderr(1) or not tamper
    assert "windows of the plugin before this one resumed: watch" in auditd.stderr(2)


@pytest.mark.parametrize("how", ["stop_42", "stop_3x"])
def test_a_deactivated_entry_gives_one_tamper_mail_and_the_digest(rig, how):
    sendmail, spool, auditd = rig
    write_entry("no")
    configure(auditd, sendmail, spool, True, max_mails=2, window=600)
    auditd.start()
    auditd.write(EventSource().matching(3)[0])
    wait_for(lambda: row_is(spool, auditd.process.pid, 2, 1), 20, "sent 2, held 1")
    assert getattr(auditd, how)() == 0
    wait_for(lambda: mails(sendmail)["tamper"] and mails(sendmail)["digests"], 20,
             "the tamper mail and the digest")
    found = mails(sendmail)
    assert [m["X-Audit-Tamper"] for m in found["tamper"]] == ["plugin-stopped"]
    assert "plugins.d entry was removed or deactivated" in found["tamper"][0].get_content()
    assert [held_back(d) for d in found["digests"]] == [1]


def test_a_removed_entry_is_a_finding_too(rig):
    sendmail, spool, auditd = rig
    ENTRY.unlink(missing_ok=True)
    configure(auditd, sendmail, spool, True)
    auditd.start()
    wait_for(lambda: status(spool).get("pid") == auditd.process.pid, 20, "the plugin's status")
    assert auditd.stop_42() == 0
    wait_for(lambda: mails(sendmail)["tamper"], 20, "the tamper mail")
    assert [m["X-Audit-Tamper"] for m in mails(sendmail)["tamper"]] == ["plugin-stopped"]


@pytest.mark.parametrize("end", ["sigterm", "sigkill"])
def test_a_restart_loses_no_held_back_count_and_the_limit_holds(rig, end):
    """auditd's restart: DAEMON_END, then SIGTERM (3.x) or SIGKILL (4.2's KillMode=mixed).
    The next plugin goes on with the window; its end is digested once, with all it held."""
    sendmail, spool, auditd = rig
    write_entry("yes")
    configure(auditd, sendmail, spool, False, max_mails=2, window=8)
    source = EventSource()

    def restart():
        auditd.write(daemon_end(source.seconds, source.serial + 1))
        source.serial += 1
        if end == "sigkill":
            auditd.kill()
        else:
            auditd.process.send_signal(signal.SIGTERM)
            assert auditd.wait() == 0
            auditd.sock.close()

    three_then_three(auditd, sendmail, spool, source, restart)
    wait_for(lambda: row_is(spool, auditd.process.pid, 2, 4), 20, "the next plugin's status: sent 2, held 4")
    digest = wait_for(lambda: mails(sendmail)["digests"], 30, "the digest at the window's end")
    wait_for(lambda: row_is(spool, auditd.process.pid, 0, 0) or status(spool)["rules"]["watch"]["window_end"] is None,
             20, "the window forgotten after its digest")
    found = mails(sendmail)
    assert len(found["alerts"]) == 2
    assert [held_back(d) for d in digest] == [4]


def test_the_held_back_count_of_a_killed_plugin_is_digested_once(rig):
    """The plugin is killed with SIGKILL without a word while its window holds events; the
    window ended before the next one starts: that one digests it at once, and only once
    (a third start digests nothing more)."""
    sendmail, spool, auditd = rig
    write_entry("yes")
    configure(auditd, sendmail, spool, False, max_mails=1, window=2)
    source = EventSource()
    auditd.start()
    auditd.write(source.matching(4)[0])
    wait_for(lambda: row_is(spool, auditd.process.pid, 1, 3) and len(sendmail.mails()) == 1
             and not list((spool / "queue").glob("*.eml")), 20, "sent 1 (delivered), held 3")
    window_end = status(spool)["rules"]["watch"]["window_end"]
    auditd.kill()
    wait_for(lambda: time.time() > window_end, 10, "the window's end")
    for _run in range(2):
        auditd.start()
        wait_for(lambda: status(spool).get("pid") == auditd.process.pid
                 and status(spool)["rules"]["watch"]["window_end"] is None, 20,
                 "the new plugin's status without the ended window")
        assert auditd.stop_42() == 0
    wait_for(lambda: mails(sendmail)["digests"], 20, "the digest")
    found = mails(sendmail)
    assert [held_back(d) for d in found["digests"]] == [3]
    assert len(found["alerts"]) == 1


def test_the_digest_is_not_mailed_again_after_a_kill_right_after_it(rig):
    """The plugin digests a window that ended and is killed at once: status.json already
    says the window is digested, so the next plugin mails no second digest."""
    sendmail, spool, auditd = rig
    write_entry("yes")
    configure(auditd, sendmail, spool, False, max_mails=1, window=1)
    source = EventSource()
    auditd.start()
    auditd.write(source.matching(3)[0])
    wait_for(lambda: digest_spooled(spool) or mails(sendmail)["digests"], 20, "the digest spooled")
    auditd.kill()
    auditd.start()
    wait_for(lambda: status(spool).get("pid") == auditd.process.pid, 20, "the next plugin's status")
    assert auditd.stop_42() == 0
    wait_for(lambda: not list((spool / "queue").glob("*.eml")), 20, "the queue delivered")
    # A digest the killed plugin was delivering is delivered again (at least once): the
    # same message. A second digest would be another one.
    digests = {d["Message-ID"]: held_back(d) for d in mails(sendmail)["digests"]}
    assert list(digests.values()) == [2]
    assert "digest of" not in auditd.stderr(2)


def digest_spooled(spool: Path) -> bool:
    for path in (spool / "queue").glob("*.eml"):
        try:
            if b"X-Audit-Digest:" in path.read_bytes():
                return True
        except FileNotFoundError:
            pass  # delivered meanwhile
    return False
