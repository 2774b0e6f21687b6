"""The spool's guarantees, on the real plugin with real failures of the file system: what
the plugin cannot deliver, ever, is moved out of the way to bad/ and holds up no other
alert. (Delivery and its retries: test_delivery.py and test_faults.py.)"""

import json
import time

import pytest
from fakes.harness import EventSource, PluginProcess, Sendmail, write_config
from polling import wait_for

CORRUPT_NAME = "00000000000000001-1-000001.eml"  # older than any alert: tried first


class Rig:
    """One plugin, its spool, its own sendmail stand-in and a source of matching events."""

    def __init__(self, root, **config) -> None:
        self.root = root
        self.sendmail = Sendmail(root)
        self.spool = root / "spool"
        self.queue = self.spool / "queue"
        self.bad = self.spool / "bad"
        self.config = write_config(root / "plugin.conf", self.sendmail.path, self.spool, **config)
        self.plugin = PluginProcess(self.config, self.spool, root)
        self.source = EventSource()

    def make_queue(self) -> None:
        """queue/ as the plugin makes it, for a test that puts files there first."""
        self.queue.mkdir(mode=0o700, parents=True)
        self.spool.chmod(0o700)

    def delivered_ids(self) -> "list[str]":
        return sorted(m.event_id for m in self.sendmail.mails())

    def status(self) -> dict:
        try:
            return json.loads((self.spool / "status.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}  # not written yet, or being replaced


@pytest.fixture
def make_rig(tmp_path):
    rigs = []

    def make(**config) -> Rig:
        rigs.append(Rig(tmp_path, **config))
        return rigs[-1]
    yield make
    for rig in rigs:
        rig.plugin.stop()
        rig.sendmail.kill_hung()


def test_a_corrupt_file_goes_to_bad_and_holds_up_no_alert(make_rig):
    """A file without headers (so without a recipient) in the queue, older than any new
    alert: it cannot be delivered, now or later. With retry_min = 30, a plugin that takes
    it for a failure of the transport pauses all delivery for 30 s."""
    rig = make_rig(retry_min=30)
    rig.make_queue()
    corrupt = rig.queue / CORRUPT_NAME
    corrupt.write_bytes(b"\x00\xff not a message: no header, no recipient\n")
    events, ids = rig.source.matching(3)
    rig.plugin.start()
    rig.plugin.write(events)
    started = time.monotonic()
    wait_for(lambda: rig.delivered_ids() == sorted(ids), 15, "the new alerts, without a pause")
    print(f"new alerts delivered {time.monotonic() - started:.1f} s after the events")
    assert [p.name for p in rig.bad.iterdir()] == [CORRUPT_NAME]
    assert (rig.bad / CORRUPT_NAME).read_bytes() == b"\x00\xff not a message: no header, no recipient\n"
    assert not corrupt.exists()
    wait_for(lambda: rig.status().get("bad") == 1, 10, "status.json to count the file in bad/")
    assert rig.plugin.close() == 0
    lines = [line for line in rig.plugin.stderr().splitlines() if CORRUPT_NAME in line]
    assert len(lines) == 1, lines
    assert "failed for good, moved to" in lines[0] and "the message has no recipient" in lines[0]
