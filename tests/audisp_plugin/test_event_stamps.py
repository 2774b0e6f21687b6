"""Events are told apart by their whole time stamp (node, seconds, milliseconds, serial), and
an event that auparse splits still gives its alert.

An aggregating auditd (`node=` prefixes) hands the plugin events of several hosts whose
serials are counted apart: two nodes' events may share a serial, even a time stamp. And
auparse 3.0.9 ends an event at once after a record of a type below 1300 (LOGIN, USER) or of
a type it has no name for (LANDLOCK_ACCESS from a newer kernel), among others: when such a record comes before the keyed SYSCALL record of its time stamp,
auparse hands over the records up to it as one event and the rest, keyed, as another of the
same stamp. Input: events captured on this host's kernel, relabelled; the real plugin
process (--print), and both paths in-process (the sifter and the reference path)."""

import re
import socket

import pytest
from conftest import log_bytes, print_messages
from mailalert.config import load_config
from mailalert.log import Log
from mailalert.plugin import Plugin

KEY = "amx-flood"
CONFIG = f"[limits]\nmax_mails = 1000\n[rule r]\nkeys = {KEY}\n"
STAMP_RE = re.compile(rb"msg=audit\((\d+)\.(\d+):(\d+)\)")


def keyed_event(number: int = 0) -> list:
    """The records (lines) of the NUMBERth captured event whose SYSCALL carries KEY."""
    grouped = {}
    for line in log_bytes("flood").splitlines(keepends=True):
        grouped.setdefault(STAMP_RE.search(line).group(0), []).append(line)
    events = [records for records in grouped.values()
              if any(line.startswith(b"type=SYSCALL ") and b'key="' + KEY.encode() + b'"' in line
                     for line in records)]
    return events[number]


def stamp_of(records: list) -> tuple:
    sec, milli, serial = STAMP_RE.search(records[0]).groups()
    return sec.decode() + "." + milli.decode(), serial.decode()


def on_node(records: list, node: str) -> list:
    return [b"node=" + node.encode() + b" " + line for line in records]


def restamp(records: list, sec: int) -> list:
    """The same records one SEC later or earlier: another event with the same serial."""
    def moved(found):
        return b"msg=audit(%d.%s:%s)" % (sec, found.group(2), found.group(3))
    return [STAMP_RE.sub(moved, line, count=1) for line in records]


def alerted(messages: list) -> list:
    return sorted(m["X-Audit-Event"] for m in messages if m["X-Audit-Key"] == KEY)


def both_paths(tmp_path, data: bytes) -> list:
    """The X-Audit-Event of each alert the plugin in-process sends, on the sifter's path
    and on the reference path (every line to auparse): they must agree."""
    found = []
    for feed_everything in (False, True):
        path = tmp_path / "plugin.conf"
        path.write_text(CONFIG + "[tamper]\nenabled = no\n")
        plugin = Plugin(load_config(str(path), [], True), Log(), True, [])
        plugin.feed_everything = feed_everything
        sent = []
        plugin.outbox.put = lambda message, sent=sent: sent.append(message["X-Audit-Event"])
        plugin.framer.feed(data)
        plugin.finish_input()
        found.append(sorted(sent))
    assert found[0] == found[1], "the sifter's path and the reference path differ"
    return found[0]


# -- events of several nodes

def test_two_nodes_same_stamp_in_one_read_give_two_alerts(tmp_path):
    records = keyed_event()
    time, serial = stamp_of(records)
    data = b"".join(on_node(records, "n1") + on_node(records, "n2"))
    expected = [f"{time}:{serial}@n1", f"{time}:{serial}@n2"]
    assert alerted(print_messages(tmp_path, CONFIG, data)) == expected
    assert both_paths(tmp_path, data) == expected


def test_two_nodes_interleaved_records_give_two_alerts(tmp_path):
    records = keyed_event()
    time, serial = stamp_of(records)
    data = b"".join(line for pair in zip(on_node(records, "n1"), on_node(records, "n2"))
                    for line in pair)
    expected = [f"{time}:{serial}@n1", f"{time}:{serial}@n2"]
    assert alerted(print_messages(tmp_path, CONFIG, data)) == expected
    assert both_paths(tmp_path, data) == expected


def test_same_serial_at_another_time_is_another_event(tmp_path):
    """Two nodes (or one auditd's serial counted anew) with one serial a second apart."""
    records = keyed_event()
    time, serial = stamp_of(records)
    sec = int(time.split(".")[0])
    later = restamp(records, sec + 1)
    data = b"".join(on_node(records, "n1") + on_node(later, "n2"))
    expected = [f"{time}:{serial}@n1", f"{sec + 1}.{time.split('.')[1]}:{serial}@n2"]
    assert alerted(print_messages(tmp_path, CONFIG, data)) == expected
    assert both_paths(tmp_path, data) == expected


def test_a_node_without_the_key_does_not_take_the_other_nodes_alert(tmp_path):
    """n1's event with this stamp has no watched key; n2's has: n2 is mailed."""
    records = keyed_event()
    time, serial = stamp_of(records)
    plain = [line.replace(KEY.encode(), b"amx-other") for line in records]
    data = b"".join(on_node(plain, "n1") + on_node(records, "n2"))
    assert alerted(print_messages(tmp_path, CONFIG, data)) == [f"{time}:{serial}@n2"]
    assert both_paths(tmp_path, data) == [f"{time}:{serial}@n2"]


# -- events that auparse splits

def record_before(records: list, line: bytes) -> list:
    """LINE (with the event's stamp in place of STAMP) before the event's records."""
    stamp = STAMP_RE.search(records[0]).group(0)
    return [line.replace(b"STAMP", stamp)] + records


SPLITTING = {
    # below 1300: a login record, which the kernel may log in a syscall's event
    "LOGIN": b"type=LOGIN STAMP: pid=6302 uid=0 subj=unconfined old-auid=4294967295 auid=0 "
             b"tty=(none) old-ses=4294967295 ses=3 res=1\n",
    # a type auparse 3.0.9 has no name for (Linux 6.15's landlock denials): it reads -1
    "LANDLOCK_ACCESS": b"type=LANDLOCK_ACCESS STAMP: domain=195ba459b blockers=fs.write_file "
                       b"path=\"/tmp/amx-capture/flood/f1\" dev=\"fe:00\" ino=2146887\n",
}


@pytest.mark.parametrize("kind", sorted(SPLITTING))
def test_a_record_that_ends_the_event_early_still_gives_the_alert(tmp_path, kind):
    records = keyed_event()
    time, serial = stamp_of(records)
    data = b"".join(record_before(records, SPLITTING[kind]))
    expected = [f"{time}:{serial}@{socket.gethostname()}"]
    assert alerted(print_messages(tmp_path, CONFIG, data)) == expected
    assert both_paths(tmp_path, data) == expected


@pytest.mark.parametrize("kind", sorted(SPLITTING))
def test_split_events_of_two_nodes_give_an_alert_each(tmp_path, kind):
    records = keyed_event()
    time, serial = stamp_of(records)
    one = record_before(records, SPLITTING[kind])
    data = b"".join(on_node(one, "n1") + on_node(one, "n2"))
    expected = [f"{time}:{serial}@n1", f"{time}:{serial}@n2"]
    assert alerted(print_messages(tmp_path, CONFIG, data)) == expected
    assert both_paths(tmp_path, data) == expected


def test_a_record_after_the_key_splits_the_event_and_the_alert_stays_one(tmp_path):
    """LOGIN after the SYSCALL record: the keyed part comes first; the rest (PATH,
    PROCTITLE) is another event of the stamp, and no second alert."""
    records = keyed_event()
    time, serial = stamp_of(records)
    stamp = STAMP_RE.search(records[0]).group(0)
    login = SPLITTING["LOGIN"].replace(b"STAMP", stamp)
    data = b"".join(records[:1] + [login] + records[1:])
    expected = [f"{time}:{serial}@{socket.gethostname()}"]
    assert alerted(print_messages(tmp_path, CONFIG, data)) == expected
    assert both_paths(tmp_path, data) == expected
