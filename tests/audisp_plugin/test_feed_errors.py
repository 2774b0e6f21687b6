"""auparse 4.2's feed errors (auparse_feed reports EBADMSG once it consumed a chunk holding
a line that is no audit record; the sifter's own blank line after each chunk is one). This
machine's auparse (3.0.9) never reports it, so fakes/auparse_42_feed.py replaces the feed
at the auparse boundary with one that behaves as 4.2's: the rest of the plugin is real.
No ERROR is logged for it, and no input is dropped: the events after the chunk alert."""

import subprocess
import threading

from conftest import FILES, PYTHON, parse_mbox, write_config
from fakes.harness import FAKES, EventSource
from polling import wait_for

WRAPPER = FAKES / "auparse_42_feed.py"


class Printing:
    """The plugin (--print) under the wrapper; its stdout collected as it comes."""

    def __init__(self, config) -> None:
        self.process = subprocess.Popen([PYTHON, str(WRAPPER), str(FILES), "--config", str(config), "--print"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, env={})
        self.out = b""
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for chunk in iter(lambda: self.process.stdout.read1(65536), b""):
            self.out += chunk

    def write(self, data: bytes) -> None:
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def close(self) -> bytes:
        self.process.stdin.close()
        assert self.process.wait(30) == 0
        self.reader.join(10)
        return self.process.stderr.read()


def test_feed_errors_are_no_error_and_drop_nothing(tmp_path):
    source = EventSource()
    config = write_config(tmp_path, "[rule watch]\nkeys = mailalert_watch\n")
    plugin = Printing(config)
    first, first_ids = source.matching(1)
    cut_event, cut_ids = source.matching(1)
    cut = cut_event.index(b"\n") // 2  # a line cut in two by the chunks' border
    plugin.write(first + cut_event[:cut])
    wait_for(lambda: first_ids[0].encode() in plugin.out, 30, "the first event's alert")
    after, after_ids = source.matching(3)
    # The second chunk ends the cut line, then holds a line that is no record, then events.
    plugin.write(cut_event[cut:] + b"garbage that is no audit record\n" + after)
    stderr = plugin.close().decode()
    events = [m["X-Audit-Event"].split("@")[0] for m in parse_mbox(plugin.out, tmp_path)]
    assert events == first_ids + cut_ids + after_ids, stderr
    assert "failed" not in stderr and "Bad message" not in stderr, stderr
    assert "EBADMSG" in stderr  # said once, as information
    assert stderr.count("EBADMSG") == 1
