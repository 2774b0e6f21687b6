"""Malformed, mutated and hostile input: the plugin never crashes or hangs, still alerts
the good event that follows the garbage, and hostile values never add or change a header.

Seeds are real records captured from this host's kernel (data/captured-raw.log)."""

import collections
import random
import re
import subprocess
import unicodedata
from pathlib import Path

import pytest
from conftest import parse_mbox
from fakes.harness import (
    PLUGIN,
    PYTHON,
    WATCH_KEY,
    WATCH_RULE,
    EventSource,
    PluginProcess,
    Sendmail,
    event_id,
    load_events,
    restamp,
    write_config,
)
from fuzz_plugin import CONFIG as FUZZ_CONFIG
from fuzz_plugin import OWN_ERRORS, fuzz
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polling import wait_for

EXEC_KEY = "mailalert_exec"
TO, FROM = "security@example.com", "audit@example.com"
RUN_DEADLINE = 20  # s for one plugin run over one example, start to exit
GOOD_SECONDS, GOOD_SERIAL = 1900000000, 987654321  # later than any seed, unlike any serial
FUZZ_LINES, FUZZ_SEED = 40000, 20261202  # the short run of fuzz_plugin.py

SEED_LINES = [line for event in load_events() for line in event]
GOOD_EVENT = restamp(EventSource().watch[0], GOOD_SECONDS, GOOD_SERIAL)
GOOD_ID = event_id(GOOD_SECONDS, GOOD_SERIAL)


# ---------------------------------------------------------------------------------------
# Mutations of real lines.

def flip(line: bytes, data: st.DataObject) -> bytes:
    at = data.draw(st.integers(0, max(0, len(line) - 1)))
    return line[:at] + bytes([data.draw(st.integers(0, 255))]) + line[at + 1:]


def truncate(line: bytes, data: st.DataObject) -> bytes:
    return line[:data.draw(st.integers(0, len(line)))]


def insert_control(line: bytes, data: st.DataObject) -> bytes:
    at = data.draw(st.integers(0, len(line)))
    junk = data.draw(st.sampled_from([b"\r\n", b"\n", b"\r", b"\0", b"\x1d", b"\x01", b'"', b"\n\n"]))
    return line[:at] + junk + line[at:]


def random_key(line: bytes, data: st.DataObject) -> bytes:
    value = data.draw(st.one_of(
        st.binary(max_size=64),
        st.sampled_from([WATCH_KEY.encode(), WATCH_KEY.encode().hex().upper().encode(),
                         b"(null)", b'"', b'""', b"0" * 300])))
    quoted = data.draw(st.booleans())
    return line.rstrip(b"\n") + b" key=" + (b'"' + value + b'"' if quoted else value)


def huge_field(line: bytes, data: st.DataObject) -> bytes:
    size = data.draw(st.sampled_from([4096, 9000, 70000, 300000]))
    name = data.draw(st.sampled_from([b"name", b"a1", b"key", b"msg", b"proctitle"]))
    return line.rstrip(b"\n") + b" " + name + b"=" + b"41" * (size // 2)


def random_bytes(_line: bytes, data: st.DataObject) -> bytes:
    return data.draw(st.binary(min_size=1, max_size=512))


MUTATIONS = [flip, truncate, insert_control, random_key, huge_field, random_bytes]


@st.composite
def garbage(draw) -> bytes:
    """A few real lines, each mutated once or more; every garbage line ends in a newline so
    that the good event after it starts on a line of its own."""
    data = draw(st.data())
    lines = []
    for _line in range(draw(st.integers(1, 8))):
        line = draw(st.sampled_from(SEED_LINES))
        for mutation in draw(st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=3)):
            line = mutation(line, data)
        lines.append(line.rstrip(b"\n") + b"\n")
    return b"".join(lines)


def run_print(tmp_path, stream: bytes) -> "tuple[int, bytes, bytes]":
    config = write_config(tmp_path / "fuzz.conf", tmp_path / "no-sendmail", tmp_path / "spool")
    try:
        done = subprocess.run([PYTHON, str(PLUGIN), "--config", str(config), "--print"],
                              input=stream, capture_output=True, check=False, timeout=RUN_DEADLINE)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the plugin hung on this input (no exit within {RUN_DEADLINE} s)")
    return done.returncode, done.stdout, done.stderr


def printed_event_ids(mbox: bytes) -> "list[str]":
    return [m.decode().rsplit("@", 1)[0]
            for m in re.findall(rb"^X-Audit-Event: (\S+)$", mbox, re.MULTILINE)]


@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(junk=garbage())
def test_mutated_lines_neither_crash_nor_hang_and_the_next_event_alerts(tmp_path, junk):
    code, out, err = run_print(tmp_path, junk + GOOD_EVENT)
    assert code == 0, f"exit {code}: {err[-2000:]!r}"
    assert b"Traceback" not in err, err[-2000:]
    assert GOOD_ID in printed_event_ids(out), "the good event after the garbage raised no alert"


def test_long_garbage_stream_then_good_events_are_delivered(tmp_path):
    """5,000 mutated lines through the real delivery path (sendmail stand-in), then ten
    good events: all ten are mailed, and the plugin exits cleanly on EOF."""
    chooser = random.Random(20261126)
    lines = []
    for _line in range(5000):
        line = bytearray(chooser.choice(SEED_LINES).rstrip(b"\n"))
        for _insert in range(chooser.randint(1, 4)):
            at = chooser.randrange(len(line) + 1)
            line[at:at] = chooser.choice([b"\r", b"\0", b"\xff", b"=", b'"', b" key=",
                                          bytes([chooser.randrange(256)])])
        lines.append(bytes(line) + b"\n")
    sendmail = Sendmail(tmp_path)
    spool = tmp_path / "spool"
    plugin = PluginProcess(write_config(tmp_path / "plugin.conf", sendmail.path, spool),
                           spool, tmp_path)
    source = EventSource(first_serial=GOOD_SERIAL, seconds=GOOD_SECONDS)
    good, ids = source.matching(10)
    try:
        plugin.start()
        plugin.write(b"".join(lines) + good)

        def delivered():
            return {m.event_id for m in sendmail.mails()}
        wait_for(lambda: set(ids) <= delivered(), 60, "the good events' alerts")
        wait_for(lambda: not plugin.queued(), 60, "an empty spool queue")
        assert plugin.close() == 0, plugin.stderr()[-2000:]
        assert "Traceback" not in plugin.stderr()
    finally:
        plugin.stop()


def test_a_short_seeded_fuzz_run_finds_nothing():
    """fuzz_plugin.py at a small scale (`make fuzz` runs it with 1,000,000 lines): mutated,
    interleaved, truncated and generated records through the real plugin, a SIGHUP in
    each run. No crash, hang or error of its own; every message parses under
    email.policy.strict with an alert's or a digest's headers; memory stays bounded."""
    figures = fuzz(FUZZ_LINES, FUZZ_SEED, run_lines=FUZZ_LINES // 2)
    print(figures.report())
    assert figures.failures == [], figures.failures[:5]
    assert figures.lines >= FUZZ_LINES and figures.runs == 2
    assert figures.alerts > FUZZ_LINES // 50 and figures.digests == 2, "too little was mailed to judge"
    assert figures.peak_rss < 60, f"peak RSS {figures.peak_rss:.0f} MB"


# Inputs that made a fuzz run fail, cut down to the lines it takes (the config: fuzz_plugin's).
FOUND = sorted((Path(__file__).resolve().parent / "data" / "fuzz-found").glob("*.log"))


@pytest.mark.parametrize("path", FOUND, ids=[p.stem for p in FOUND])
def test_inputs_a_fuzz_run_found_are_read_without_an_error(tmp_path, path):
    """stale-errno-time-stamp: get_timestamp() raised OSError (a stale ERANGE from a
    time stamp too large) and the plugin logged 'event skipped'."""
    config = tmp_path / "fuzz.conf"
    config.write_text(FUZZ_CONFIG)
    done = subprocess.run([PYTHON, str(PLUGIN), "--config", str(config), "--print"],
                          input=path.read_bytes(), capture_output=True, check=False,
                          timeout=RUN_DEADLINE)
    log = done.stderr.decode(errors="replace")
    assert done.returncode == 0, log
    assert not OWN_ERRORS.search(log), log


# ---------------------------------------------------------------------------------------
# Hostile values in file names and command lines.

HOSTILE = {
    "crlf": b"evil\r\nBcc: attacker@example.com\r\nX-Audit-Key: forged",
    "lf-only": b"x\nTo: attacker@example.com\n\nforged body",
    "nul": b"a\0Bcc: attacker@example.com\0",
    "invalid-utf8": b"bad-\xff\xfe-\xc3\x28-\xed\xa0\x80-name",
    "mime-word": b"=?utf-8?q?Subject=3A_forged=0D=0ABcc=3A_x=40y?= =?utf-8?b?Rm9yZ2Vk?=",
    "shell": b"$(reboot);`id`|&>x' \" \\ *?[a] ~root ${IFS}",
    "4kib": b"x" * 4096,
    "4kib-crlf": (b"A" * 70 + b"\r\n") * 57,
}


def hexed(value: bytes) -> bytes:
    return value.hex().upper().encode()


def hostile_records(records: bytes, value: bytes, encoded: bool) -> bytes:
    """The value as file name, cwd, comm, exe, proctitle and arguments: hex-encoded as the
    kernel writes any value with special characters, or quoted raw as no kernel does."""
    if encoded:
        field, title = hexed(value), hexed(b"/usr/bin/id\0" + value)
        argv = b"3 a0=" + hexed(b"/usr/bin/id") + b" a1=" + field + b" a2=" + field
    else:
        field = title = b'"' + value.replace(b"\n", b" ") + b'"'  # a newline ends a record
        argv = b'3 a0="/usr/bin/id" a1=' + field + b" a2=" + field
    for pattern, new in ((rb"(item=1 name=)\S+", field), (rb"( cwd=)\S+", field),
                         (rb"( comm=)\S+", field), (rb"( exe=)\S+", field),
                         (rb"( proctitle=)\S+", title), (rb"(argc=)2 a0=\S+ a1=\S+", argv)):
        records = re.sub(pattern, lambda m, new=new: m.group(1) + new, records)
    return records


def hostile_events(value: bytes, encoded: bool, serial: int) -> "tuple[bytes, list[str]]":
    """The captured file-watch and exec events carrying the value."""
    events = load_events()
    watch = next(e for e in events if b'key="mailalert_watch"' in e[0] and b"type=SYSCALL" in e[0])
    execs = next(e for e in events if b'key="mailalert_exec"' in e[0] and b"type=SYSCALL" in e[0])
    stream, ids = [], []
    for template in (watch, execs):
        records = hostile_records(b"".join(template), value, encoded)
        serial += 1
        stream.append(restamp(records.splitlines(keepends=True), GOOD_SECONDS, serial))
        ids.append(event_id(GOOD_SECONDS, serial))
    return b"".join(stream), ids


HEADER_LINE = re.compile(rb"[A-Za-z0-9-]+: [\x20-\x7e]*\Z|[ \t][\x20-\x7e]*\Z")


def header_block(raw: bytes) -> "list[bytes]":
    head = raw.split(b"\n\n", 1)[0]
    return head.split(b"\n")


@pytest.fixture
def delivered_rig(tmp_path):
    sendmail = Sendmail(tmp_path)
    spool = tmp_path / "spool"
    config = write_config(tmp_path / "plugin.conf", sendmail.path, spool,
                          keys=(WATCH_KEY, EXEC_KEY))
    plugin = PluginProcess(config, spool, tmp_path)
    yield sendmail, plugin
    plugin.stop()


def deliver(sendmail, plugin, stream: bytes, count: int):
    plugin.start()
    plugin.write(stream)
    assert plugin.close() == 0, plugin.stderr()[-2000:]
    assert "Traceback" not in plugin.stderr()
    # The plugin has exited: what it could deliver is delivered, the rest is spooled.
    assert not plugin.queued(), f"alerts left undelivered in the spool: {plugin.queued()}"
    assert len(sendmail.mails()) >= count, f"{len(sendmail.mails())} mails, not {count}"
    return sendmail.mails()


def baseline(tmp_path):
    """Header names and sendmail argv of an alert for an ordinary event."""
    sendmail = Sendmail(tmp_path / "baseline")
    spool = tmp_path / "baseline" / "spool"
    config = write_config(tmp_path / "baseline.conf", sendmail.path, spool,
                          keys=(WATCH_KEY, EXEC_KEY))
    plugin = PluginProcess(config, spool, tmp_path / "baseline")
    try:
        (mail,) = deliver(sendmail, plugin, GOOD_EVENT, 1)
    finally:
        plugin.stop()
    return collections.Counter(k.lower() for k in mail.message), mail.argv


@pytest.mark.parametrize("name,encoded", [
    pytest.param(name, encoded, id=f"{name}-{'hex' if encoded else 'raw'}")
    for name in sorted(HOSTILE) for encoded in (True, False)])
def test_hostile_values_never_add_or_change_a_header(tmp_path, delivered_rig, name, encoded):
    """hex: as the kernel writes such values; raw: quoted as they are, as no kernel does."""
    names, argv = baseline(tmp_path)
    sendmail, plugin = delivered_rig
    stream, ids = hostile_events(HOSTILE[name], encoded, GOOD_SERIAL + 100)
    mails = deliver(sendmail, plugin, stream, len(ids))
    assert sorted(m.event_id for m in mails) == sorted(ids), "an alert is missing"
    for mail in mails:
        where = f"alert {mail.event_id} ({name})"
        assert not mail.message.defects, f"{where}: {mail.message.defects}"
        assert collections.Counter(k.lower() for k in mail.message) == names, \
            f"{where}: headers {list(mail.message)}"
        for line in header_block(mail.raw):
            assert HEADER_LINE.match(line), f"{where}: bad header line {line[:200]!r}"
        assert mail.message["To"] == TO and mail.message["From"] == FROM, where
        assert mail.message["X-Audit-Rule"] == WATCH_RULE, where
        assert mail.message["X-Audit-Key"] in (WATCH_KEY, EXEC_KEY), where
        assert str(mail.message["X-Audit-Event"]).startswith(mail.event_id + "@"), where
        subject = str(mail.message["Subject"])
        assert not set(subject) & {"\r", "\n", "\0"}, f"{where}: subject {subject!r}"
        assert mail.argv == argv, f"{where}: sendmail argv {mail.argv}"


# Characters that do not show as themselves, in file names that then read as others
# ("report" RLO "fdp.exe" shows as "reportexe.pdf"), a few to a name so that the Subject's
# 60 characters per value hold them all once escaped.
UNSEEN = ["\u200e\u200f\u202e", "\u202a\u202b\u202c", "\u202d\u2066\u2067", "\u2068\u2069\u200b",
          "\u3000\u00a0\ufeff"]


def test_invisible_and_direction_characters_are_escaped_in_the_subject(tmp_path):
    """Each one is shown as \\uNNNN, in the Subject as in the body; none is left as it is."""
    stream = b""
    for number, chars in enumerate(UNSEEN):
        events, _ids = hostile_events(f"r{chars}fdp.exe".encode(), True, GOOD_SERIAL + 600 + 10 * number)
        stream += events
    code, out, err = run_print(tmp_path, stream)
    assert code == 0, err[-2000:]
    subjects = [str(m["Subject"]) for m in parse_mbox(out, tmp_path)]
    assert len(subjects) == len(UNSEEN), subjects
    for subject in subjects:
        assert not [c for c in subject if c != " " and unicodedata.category(c) in ("Cf", "Zs")], \
            f"shown as they are: {subject!r}"
    shown = " ".join(subjects)
    for chars in UNSEEN:
        assert "r" + "".join(f"\\u{ord(c):04x}" for c in chars) + "fdp.exe" in shown, (chars, shown)


def test_hostile_names_captured_from_the_kernel_alert_with_intact_headers(tmp_path, delivered_rig):
    """The capture holds real kernel records of files and arguments with CR/LF, invalid
    UTF-8, MIME words, shell metacharacters and 4 KiB of text: each one alerts, and every
    alert has the same headers as an ordinary one."""
    names, argv = baseline(tmp_path)
    sendmail, plugin = delivered_rig
    stream = b"".join(b"".join(e) for e in load_events())
    keyed = [e for e in load_events() if b"type=SYSCALL" in e[0]
             and (b'key="mailalert_watch"' in e[0] or b'key="mailalert_exec"' in e[0])]
    hostile = [e for e in keyed if re.search(rb"(name|a1)=[0-9A-F]{16}|a1=\"x{4096}\"", b"".join(e))]
    assert len(hostile) >= 5, "the capture lost its hostile events; re-run capture_events.sh"
    mails = deliver(sendmail, plugin, stream, len(keyed))
    assert len(mails) == len(keyed)
    for mail in mails:
        assert collections.Counter(k.lower() for k in mail.message) == names
        assert not mail.message.defects
        assert all(HEADER_LINE.match(line) for line in header_block(mail.raw)), mail.raw[:2000]
        assert mail.argv == argv
