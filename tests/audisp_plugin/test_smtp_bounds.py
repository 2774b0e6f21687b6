"""The smtp transport's session bounds, on the real plugin process (long-running, as auditd
runs it) against a server that turns hostile before TLS (fakes/hostile_smtp.py) with
smtp_tls = starttls, as anyone on the path can: one that floods the EHLO reply with 4 KB
continuation lines at full speed, and one that drips a line every 2 s (of the greeting or
of the EHLO reply), which no read timeout catches. (A TLS handshake needs no such test:
Python's ssl bounds a whole handshake by the socket's timeout.)

Proven: the plugin's peak RSS stays under 100 MB through the flood; a dripped session is
given up within about twice `timeout`; each failure is logged and retried as any other
temporary failure, the alert stays in the spool and is delivered once the server behaves.
The flood test bounds itself (the plugin is killed at 100 MB, and runs under an address
space limit of 2 GB), so that a missing bound fails it without eating the machine."""

import email.policy
from email.parser import BytesParser

import pytest
from fakes.harness import EventSource, PeakRss, PluginProcess, alive
from fakes.hostile_smtp import HostileSMTPServer
from fakes.smtp_server import server_context
from pki import PKI
from polling import wait_for

TIMEOUT = 3  # [mail] timeout: each read waits at most this; the session twice as long
RSS_LIMIT = 100  # MB: the plugin's peak resident size through the flood
ADDRESS_SPACE = 2 << 30  # bytes: the backstop if the RSS watchdog were too slow
DELIVERY_DEADLINE = 30  # s; retries back off 1 s then 2 s (retry_min/retry_max below)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki"))


class Rig:
    """One plugin (smtp transport, STARTTLS to localhost, trusting the test CA) and one
    server, hostile in the given mode until the test turns it good."""

    def __init__(self, root, pki, mode: str) -> None:
        self.server = HostileSMTPServer(mode, "starttls", server_context(*pki.localhost))
        self.spool = root / "spool"
        self.config = root / "plugin.conf"
        self.config.write_text(
            "[mail]\nto = security@example.com\nfrom = audit@example.com\ntransport = smtp\n"
            f"smtp_host = localhost\nsmtp_port = {self.server.port}\nsmtp_tls = starttls\n"
            f"smtp_ca_file = {pki.ca[0]}\ntimeout = {TIMEOUT}\n"
            f"[spool]\ndir = {self.spool}\nretry_min = 1\nretry_max = 2\n"
            "[rule watch]\nkeys = mailalert_watch\n[tamper]\nenabled = no\n")
        self.plugin = PluginProcess(self.config, self.spool, root)
        self.source = EventSource()
        self.rss = None  # type: PeakRss | None

    def start_with_one_alert(self, prefix=()) -> str:
        data, ids = self.source.matching(1)
        self.plugin.start(prefix=prefix)
        self.plugin.write(self.source.noise(5) + data + self.source.noise(5))
        wait_for(lambda: self.plugin.queued_event_ids() == ids, 15, "the alert in the spool")
        return ids[0]

    def failures(self) -> "list[str]":
        return [line for line in self.plugin.stderr().splitlines() if "delivery of" in line
                and " failed " in line]

    def wait_for_failures(self, count: int, timeout: float) -> "list[str]":
        def logged():
            assert alive(self.plugin.pid), (
                "the plugin died" + (f" (killed at {RSS_LIMIT} MB RSS)" if self.rss and self.rss.killed else "")
                + f"; stderr: {self.plugin.stderr()[-2000:]}")
            return len(self.failures()) >= count and self.failures()
        return wait_for(logged, timeout, f"{count} failed deliveries logged")

    def assert_delivered_when_good(self, event_id: str) -> None:
        """The server behaves from its next session on: the alert kept in the spool goes out
        on a later retry, over TLS, once."""
        self.server.mode = "good"
        wait_for(lambda: self.server.received, DELIVERY_DEADLINE, "the alert at the good server")
        wait_for(lambda: not self.plugin.queued(), DELIVERY_DEADLINE, "an empty spool queue")
        assert self.plugin.close() == 0, self.plugin.stderr()
        self.server.stop()
        assert len(self.server.received) == 1
        mail = self.server.received[0]
        assert mail["tls"]
        message = BytesParser(policy=email.policy.default).parsebytes(mail["data"])
        assert str(message["X-Audit-Event"]).startswith(event_id + "@")

    def stop(self) -> None:
        self.plugin.stop()
        self.server.stop()


@pytest.fixture
def rig_factory(tmp_path, pki):
    rigs = []

    def make(mode: str) -> Rig:
        rigs.append(Rig(tmp_path, pki, mode))
        return rigs[-1]

    yield make
    for rig in rigs:
        rig.stop()


def test_a_flood_of_continuation_lines_is_cut_and_memory_stays_bounded(rig_factory):
    rig = rig_factory("flood")
    event_id = rig.start_with_one_alert(prefix=["prlimit", f"--as={ADDRESS_SPACE}", "--"])
    rss = rig.rss = PeakRss(rig.plugin.pid, kill_above=RSS_LIMIT)
    # Three attempts into the flood, each given up at the reply's bound.
    failures = rig.wait_for_failures(3, 60)
    assert not rss.killed, f"peak RSS reached {RSS_LIMIT} MB: the plugin was killed"
    assert rss.peak < RSS_LIMIT, f"peak RSS {rss.peak:.0f} MB"
    assert all("the server sent a reply of more than" in line for line in failures), failures
    assert len(rig.plugin.queued()) == 1, "the alert left the spool"
    assert len(rig.server.hostile) >= 3 and rig.server.flooded > 0
    rig.assert_delivered_when_good(event_id)
    assert rss.result() < RSS_LIMIT and not rss.killed, f"peak RSS {rss.peak:.0f} MB"


@pytest.mark.parametrize("mode", ["drip-greeting", "drip-ehlo"])
def test_a_server_that_drips_a_line_every_2_s_is_given_up_at_the_deadline(rig_factory, mode):
    rig = rig_factory(mode)
    event_id = rig.start_with_one_alert()
    # A drip never lets a read wait `timeout`: only the session's deadline (2 x timeout) ends it.
    failures = rig.wait_for_failures(1, 4 * TIMEOUT)
    assert f"no end of the session within {2 * TIMEOUT} s" in failures[0], failures
    first = wait_for(lambda: rig.server.hostile and rig.server.hostile[0]["end"] and rig.server.hostile[0],
                     5, "the server to see the client go")
    assert first["end"] - first["start"] <= 2 * TIMEOUT + 1, first
    assert len(rig.plugin.queued()) == 1, "the alert left the spool"
    rig.assert_delivered_when_good(event_id)
