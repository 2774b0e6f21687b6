"""The fast path (EventSifter: only events that may match reach auparse) against the
reference path (FEED_EVERYTHING: every line goes to auparse, as before the sifter): the
same alerts and digests, message for message, on real captured events and on streams made
from them that stress the grouping: records before the key-bearing one, interleaved
events, several keys, hex keys, long lines, NUL bytes, events that never end, and input cut
at every byte offset. A differential test that cannot fail proves nothing, so one test
drops a single record of a candidate event and expects the comparison to see it."""

import re

import pytest
from conftest import DATA, log_bytes
from mailalert import sifter
from mailalert.config import Config, Rule, load_config
from mailalert.events import timestamp
from mailalert.log import Log
from mailalert.plugin import Plugin
from mailalert.sifter import EventSifter, key_pattern

STAMP_RE = re.compile(rb"msg=audit\((\d+)\.(\d+):(\d+)\)")
KEYS = "amx-hostile, amx-flood, amx-multi, amx-exec, mailalert_watch, mailalert_exec"
PLENTY = f"[limits]\nmax_mails = 1000\n[rule r]\nkeys = {KEYS}\n"
FEW = f"[limits]\nmax_mails = 3\n[rule r]\nkeys = {KEYS}\n[rule second]\nkeys = amx-second\nmax_mails = 1\n"


def events(data: bytes) -> list:
    """The events of a log as lists of record lines, in order of their first record."""
    grouped = {}
    for line in data.splitlines(keepends=True):
        found = STAMP_RE.search(line)
        if found:
            grouped.setdefault(found.group(0), []).append(line)
    return list(grouped.values())


def restamp(records: list, seconds: int, serial: int) -> list:
    stamp = b"msg=audit(%d.%03d:%d)" % (seconds, serial % 1000, serial)
    return [STAMP_RE.sub(stamp, line, count=1) for line in records]


def keyed(data: bytes, key: bytes) -> list:
    return [e for e in events(data) if any(key in line for line in e)]


WATCHED = (b'key="amx', b"key=616D78", b'key="mailalert_watch"', b'key="mailalert_exec"', b"type=CONFIG_CHANGE")


def plain(data: bytes) -> list:
    """Events that no rule of PLENTY watches (other keys, no key)."""
    return [e for e in events(data) if not any(w in r for w in WATCHED for r in e)]


def summary(message) -> tuple:
    """What must be equal: rule, key, event (time:serial@node), Subject (key, subject,
    action, object) and the body (summary fields, raw records), or a digest's counts."""
    if "X-Audit-Digest" in message:
        body = message.get_content()
        counts = [line for line in body.splitlines()
                  if line.startswith("Held back:") or re.match(r"\s+\d+  ", line)]
        return ("digest", message["X-Audit-Rule"], message["X-Audit-Key"], tuple(counts))
    return ("alert", message["X-Audit-Rule"], message["X-Audit-Key"], message["X-Audit-Event"],
            message["Subject"], message.get_content())


def in_process(tmp_path, config_text: str, feed_everything: bool):
    """The plugin in-process (--print: no spool), on the fast path or the reference path."""
    path = tmp_path / "plugin.conf"
    path.write_text(config_text)
    plugin = Plugin(load_config(str(path), [], True), Log(), True, [])
    plugin.feed_everything = feed_everything
    return plugin


def run(tmp_path, config_text: str, chunks: list, feed_everything: bool) -> list:
    """The plugin in-process, as its main loop drives it, minus delivery: each message it
    would send, summarized, in order."""
    plugin = in_process(tmp_path, config_text, feed_everything)
    sent = []
    plugin.outbox.put = lambda message: sent.append(summary(message))
    for chunk in chunks:
        plugin.framer.feed(chunk)
    plugin.finish_input()
    plugin.send_digests(force=True)
    return sent


def same_on_both_paths(tmp_path, data: bytes, config_text: str = PLENTY,
                       chunk: int = 65536) -> list:
    chunks = [data[i:i + chunk] for i in range(0, len(data), chunk)]
    reference = run(tmp_path, config_text, chunks, True)
    fast = run(tmp_path, config_text, chunks, False)
    assert fast == reference
    return reference


def alerts_of(sent: list) -> list:
    return [m for m in sent if m[0] == "alert"]


# -- the streams

def capture() -> bytes:
    return (DATA / "captured-raw.log").read_bytes()


def avc_before_syscall() -> bytes:
    """Keyed syscall events whose first record is an AVC (the kernel logs it during the
    syscall, the SYSCALL record with the key at its exit), some with other events' records
    between the AVC and the SYSCALL."""
    flood, noise = keyed(log_bytes("flood"), b"amx-flood"), plain(capture())
    out = []
    for i, records in enumerate(flood[:12]):
        records = restamp(records, 1795690000 + i, 5000 + 10 * i)
        avc = STAMP_RE.search(records[0]).group(0)
        line = (b'type=AVC ' + avc + b': avc:  denied  { write } for  pid=4242 comm="touch" '
                b'name="x" dev="sda1" ino=12 scontext=u:r:t:s0 tcontext=u:r:f:s0 tclass=file '
                b'permissive=1\n')
        between = [] if i % 3 == 0 else restamp(noise[i % len(noise)], 1795690000 + i, 5001 + 10 * i)
        out += [line] + between + records
    return b"".join(out)


def interleaved() -> bytes:
    """Two streams (two CPUs) whose records alternate one by one: every event overlaps
    another, keyed ones with plain ones and with each other."""
    first = [restamp(e, 1795691000 + i, 6000 + 2 * i)
             for i, e in enumerate(keyed(log_bytes("flood"), b"amx-flood")[:10])]
    second = [restamp(e, 1795691000 + i, 6001 + 2 * i)
              for i, e in enumerate((plain(capture())[:5] + keyed(log_bytes("hostile"), b"amx-hostile"))[:10])]
    a = [line for e in first for line in e]
    b = [line for e in second for line in e]
    out = []
    for i in range(max(len(a), len(b))):
        out += a[i:i + 1] + b[i:i + 1]
    return b"".join(out)


def long_lines() -> bytes:
    """Records of 9 to 60 KB (longer than the kernel's 8970-byte limit), with and without
    a watched key, inside keyed and plain events."""
    flood = keyed(log_bytes("flood"), b"amx-flood")
    out = []
    for i, size in enumerate((9000, 20000, 60000)):
        records = restamp(flood[i], 1795692000 + i, 7000 + i)
        stamp = STAMP_RE.search(records[0]).group(0)
        path = b"type=PATH " + stamp + b": item=9 name=" + b"41" * (size // 2) + b"\n"
        plain_event = restamp(plain(capture())[0], 1795692000 + i, 7100 + i)
        records.insert(1, path)
        plain_event.insert(1, path.replace(stamp, STAMP_RE.search(plain_event[0]).group(0)))
        out += records + plain_event
    return b"".join(out)


def nul_bytes() -> bytes:
    flood = keyed(log_bytes("flood"), b"amx-flood")
    out = []
    for i in range(4):
        records = restamp(flood[i], 1795693000 + i, 8000 + i)
        records[0] = records[0].replace(b'comm="', b'comm="a\0b', 1)
        if i % 2:
            records[-1] = b"\0" + records[-1]
        out += records
    return b"".join(out)


def without_end() -> bytes:
    """Events whose last-record types (PROCTITLE, EOE) are missing: auparse ends them by
    the time stamps of later records, the last ones at the end of input."""
    flood = keyed(log_bytes("flood"), b"amx-flood")
    noise = plain(capture())
    out = []
    for i in range(8):
        records = [r for r in restamp(flood[i], 1795694000 + i // 3, 9000 + 2 * i)
                   if not r.startswith(b"type=PROCTITLE")]
        other = [r for r in restamp(noise[i % len(noise)], 1795694000 + i // 3, 9001 + 2 * i)
                 if not r.startswith(b"type=PROCTITLE")]
        out += records + other
    return b"".join(out)


def without_colon() -> bytes:
    """Record heads without the colon after the stamp (`msg=audit(T:S) arch=...`, or another
    byte there): the kernel always writes `): `, a saved or forged log may not. auparse
    3.0.9 reads the stamp up to the `)` and ignores the rest of that word, so such a record
    belongs to its event and its key is read. Keyed events with the key-bearing record, the
    first one, the last one or all of them so written, and plain events so written."""
    flood, noise = keyed(log_bytes("flood"), b"amx-flood"), plain(capture())
    variants = (b") ", b")", b");", b")x")
    out = []
    for i, records in enumerate(flood[:8]):
        records = restamp(records, 1795697000 + i, 9500 + 2 * i)
        keyed_at = next(n for n, line in enumerate(records) if b"key=" in line)
        which = (keyed_at, 0, len(records) - 1, None, keyed_at, keyed_at, 0, None)[i]
        cut = variants[i % len(variants)]
        out += [line.replace(b"): ", cut, 1) if which is None or n == which else line
                for n, line in enumerate(records)]
        out += [line.replace(b"): ", b") ", 1)
                for line in restamp(noise[i % len(noise)], 1795697000 + i, 9501 + 2 * i)]
    return b"".join(out)


STREAMS = {
    "capture": capture,
    "hostile": lambda: log_bytes("hostile"),
    "multi-key-and-hex": lambda: log_bytes("multi-key", "exec-args", "config-change"),
    "avc-before-syscall": avc_before_syscall,
    "interleaved": interleaved,
    "long-lines": long_lines,
    "nul-bytes": nul_bytes,
    "without-end": without_end,
    "without-colon": without_colon,
}


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_both_paths_send_the_same_alerts(tmp_path, name):
    sent = same_on_both_paths(tmp_path, STREAMS[name]())
    assert alerts_of(sent), "the stream must hold events that alert"


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_both_paths_send_the_same_digests(tmp_path, name):
    sent = same_on_both_paths(tmp_path, STREAMS[name](), FEW)
    if len(alerts_of(same_on_both_paths(tmp_path, STREAMS[name]()))) > 3:
        assert any(m[0] == "digest" for m in sent)


@pytest.mark.parametrize("chunk", [1, 7, 100, 4093])
def test_small_reads_give_the_same_alerts(tmp_path, chunk):
    data = avc_before_syscall() + interleaved() + without_end()
    same_on_both_paths(tmp_path, data, chunk=chunk)


def test_a_sample_split_at_every_byte_offset(tmp_path):
    """Two reads, cut at each offset: inside a record, between records, inside the key."""
    data = b"".join(line for e in events(avc_before_syscall())[:3] for line in e)
    data += b"".join(line for e in events(interleaved())[:2] for line in e)
    reference = run(tmp_path, PLENTY, [data], True)
    assert len(alerts_of(reference)) >= 2
    for offset in range(1, len(data)):
        fast = run(tmp_path, PLENTY, [data[:offset], data[offset:]], False)
        assert fast == reference, f"split at byte {offset}"


class Recording:
    """auparse, with a copy of what it is fed."""

    def __init__(self, au, fed: list) -> None:
        self.au, self.fed = au, fed

    def feed(self, lines: bytes) -> None:
        self.fed.append(lines)
        self.au.feed(lines)

    def __getattr__(self, name: str):
        return getattr(self.au, name)


def test_non_candidates_never_reach_auparse(tmp_path):
    """The point of it all: of the real capture, auparse gets only the events that may
    match (and empty lines, which make it hand over an ended event at once); the reference
    gets every line."""
    data = capture()
    fed = {}
    for feed_everything in (True, False):
        plugin = in_process(tmp_path, PLENTY, feed_everything)
        plugin.outbox.put = lambda message: None
        got = []
        plugin.au = plugin.feeder.au = Recording(plugin.au, got)
        plugin.sifter.feed = plugin.au.feed
        plugin.framer.feed(data)
        plugin.finish_input()
        fed[feed_everything] = b"".join(got)
    assert fed[True] == data
    # Rule loads (CONFIG_CHANGE op=add_rule, here the capture's own) are passed over too.
    wanted = [e for e in events(data)
              if any(w in r for w in (b'key="mailalert_watch"', b'key="mailalert_exec"',
                                      b"type=CONFIG_CHANGE") for r in e)
              and b" op=add_rule " not in e[0]]
    assert len(wanted) < len([e for e in events(data) if b"mailalert_" in b"".join(e)])
    records = [line for line in fed[False].splitlines(keepends=True) if line != b"\n"]
    assert sorted(records) == sorted(r for e in wanted for r in e)
    assert len(fed[False]) < len(data)


def test_the_comparison_sees_one_dropped_record(tmp_path, monkeypatch):
    """The sensitivity check: a fast path that loses the AVC record of one candidate event
    (the kind of record that comes before the key) must make the comparison fail."""
    data = avc_before_syscall()
    original = EventSifter.sift

    def sift_losing_one_avc(self, lines):
        if b"type=AVC" in lines and not getattr(self, "lost_one", False):
            start = lines.index(b"type=AVC")
            end = lines.index(b"\n", start) + 1
            lines, self.lost_one = lines[:start] + lines[end:], True
        original(self, lines)

    monkeypatch.setattr(EventSifter, "sift", sift_losing_one_avc)
    with pytest.raises(AssertionError):
        same_on_both_paths(tmp_path, data)


def test_always_candidate_types_reach_auparse(tmp_path):
    """Events with a CONFIG_CHANGE, DAEMON_END or DAEMON_ABORT record reach the handler on
    both paths, whatever their key (the tamper rule reads them)."""
    records = [
        b"type=DAEMON_END msg=audit(1795695000.001:11): op=terminate auid=0 pid=1 subj=unconfined res=success\n",
        b"type=CONFIG_CHANGE msg=audit(1795695000.002:12): op=set audit_enabled=0 old=1 auid=0 ses=1 res=1\n",
        (b"type=SYSCALL msg=audit(1795695000.002:12): arch=c000003e syscall=44 success=yes exit=60 "
         b"items=0 ppid=1 pid=2 auid=0 uid=0 comm=\"auditctl\" exe=\"/usr/sbin/auditctl\" key=(null)\n"),
        b"type=PROCTITLE msg=audit(1795695000.002:12): proctitle=617564697463746C002D650030\n",
        b"type=DAEMON_ABORT msg=audit(1795695000.003:13): op=abort auid=0 pid=1 res=failed\n",
    ]
    seen = {}
    for feed_everything in (True, False):
        plugin = in_process(tmp_path, PLENTY, feed_everything)
        handled = seen[feed_everything] = []
        plugin.handle = lambda au, into=handled: into.append(timestamp(au).serial)
        plugin.framer.feed(b"".join(records) + b"".join(plain(capture())[0]))
        plugin.finish_input()
    assert seen[True] == seen[False] == [11, 12, 13]


def test_rule_loads_stay_out_of_auparse_and_removals_do_not(tmp_path):
    """A rule load carrying a watched key is never an alert nor a tamper finding, so the
    fast path keeps it from auparse; a removal whose enriched part (a user name: only the
    raw fields are looked at) holds " op=add_rule " still reaches the handler."""
    stamp = b"msg=audit(1795695100.0SERIAL:SERIAL)"
    tail = (b"type=SYSCALL " + stamp + b": arch=c000003e syscall=44 success=yes exit=60 items=0 ppid=1 "
            b"pid=2 auid=0 uid=0 comm=\"auditctl\" exe=\"/usr/sbin/auditctl\" key=(null)\n"
            b"type=PROCTITLE " + stamp + b": proctitle=617564697463746C\n")
    load = (b"type=CONFIG_CHANGE " + stamp + b": auid=0 ses=1 op=add_rule key=\"mailalert_watch\" "
            b"list=4 res=1\x1dAUID=\"root\"\n") + tail
    removal = (b"type=CONFIG_CHANGE " + stamp + b": auid=0 ses=1 op=remove_rule key=\"mailalert_watch\" "
               b"list=4 res=1\x1dAUID=\"x op=add_rule y\"\n") + tail
    data = b"".join(record.replace(b"SERIAL", n) for n, record in ((b"21", load), (b"22", removal), (b"23", load)))
    seen = {}
    for feed_everything in (True, False):
        plugin = in_process(tmp_path, PLENTY, feed_everything)
        handled = seen[feed_everything] = []
        plugin.handle = lambda au, into=handled: into.append(timestamp(au).serial)
        plugin.framer.feed(data)
        plugin.finish_input()
    assert seen == {True: [21, 22, 23], False: [22]}
    same_on_both_paths(tmp_path, data)


def test_the_buffer_is_bounded_and_falls_back_to_feeding(tmp_path, monkeypatch):
    """Undecided events past the bound go to auparse: the alert of an event whose key
    comes after many held records is still there, with all its records."""
    monkeypatch.setattr(sifter, "SIFT_BUFFER_MAX", 4096)
    flood = keyed(log_bytes("flood"), b"amx-flood")
    out = []
    held = [b"type=AVC msg=audit(1795696000.%03d:%d): avc:  denied  { read } for  pid=1 "
            b"comm=\"x\" name=\"%s\" tclass=file permissive=1\n" % (100 + i, 100 + i, b"n" * 200)
            for i in range(40)]
    out += held  # forty events that never end, all held at once
    out += restamp(flood[0], 1795696000, 100)  # the first of them gets its key
    data = b"".join(out)
    sent = same_on_both_paths(tmp_path, data)
    assert len(alerts_of(sent)) == 1
    assert "avc:  denied" in alerts_of(sent)[0][5]


@pytest.mark.parametrize("record, watched", [
    (b'key="alert"', True),
    (b'key="alert2"', False),
    (b'key="xalert"', False),
    (b"key=(null)", False),
    (b"key=616C657274", True),                        # hex: a key with special characters
    (b"key=6F7468657201616C657274", True),            # other\x01alert
    (b"key=616C6572740170", True),                    # alert\x01p
    (b'name="alert"', False),
])
def test_key_prefilter_finds_every_watched_key_form(record, watched):
    rule = Rule("r", ["alert", "second key"], ["root"], 1, 1)
    pattern = key_pattern([rule])
    line = b"type=SYSCALL msg=audit(1.000:7): comm=\"x\" " + record + b"\n"
    assert bool(pattern.search(line)) is watched


def test_prefilter_false_positive_is_rejected_by_the_exact_match(tmp_path):
    """A file named like a key field passes the cheap filter, but no alert is made."""
    hex_name = b"key=616C657274".hex().upper().encode()
    lines = (b'type=SYSCALL msg=audit(1795686297.100:9): arch=c000003e syscall=257 success=yes'
             b' exit=3 items=1 ppid=1 pid=2 auid=0 uid=0 comm="touch" exe="/usr/bin/touch"'
             b' key="other"\n'
             b'type=PATH msg=audit(1795686297.100:9): item=0 name="/tmp/key=616C657274"'
             b' nametype=CREATE\n'
             b'type=PATH msg=audit(1795686297.100:9): item=1 name=' + hex_name + b'\n'
             b'type=EOE msg=audit(1795686297.100:9): \n')
    config = Config()
    config.rules = [Rule("r", ["alert"], ["root"], 10, 60)]
    plugin = Plugin(config, Log(), True, [])
    handled, mailed = [], []
    original = plugin.handle
    plugin.handle = lambda au: (handled.append(1), original(au))
    plugin.outbox.put = mailed.append
    plugin.framer.feed(lines)
    plugin.au.flush_feed()
    assert handled == [1], "the pre-filter lets the look-alike through"
    assert mailed == [], "the exact key test rejects it"
