"""Fuzz the real plugin process with mutated and generated audit record lines.

The seeds are the real records captured in tests/audisp_plugin/data/*.log. A seeded random stream
of well-formed events (given new serials), events with mutated lines (bytes flipped,
inserted, deleted, duplicated; fields replaced with hex of random bytes; keys set to
watched ones; time stamps broken), single mutated lines, events interleaved with each
other, generated records of random types and fields, truncated events, and now and then
an over-long line, goes to `audisp-mailalert --print` in runs of RUN_LINES lines, one
process per run, with a SIGHUP in the middle of each. Each run must exit 0 within its
deadline with nothing logged as an error of the plugin's own, alert the good event put at
its end, and print only messages that parse under email.policy.strict without a defect,
with the alert's or the digest's headers and nothing else. Peak RSS is sampled.

    python tests/audisp_plugin/fuzz_plugin.py [--lines N] [--seed S] [--run-lines N]

prints the figures and exits 1 when a run crashed, hung or printed a bad message (the
inputs of the failed runs are kept in --keep DIR). test_fuzz.py runs a short seeded run.
"""

import argparse
import email.policy
import random
import re
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from email.parser import BytesParser
from pathlib import Path

from fakes.harness import PLUGIN, PYTHON, PeakRss, load_events, restamp

DATA = Path(__file__).resolve().parent / "data"
WATCHED = ["mailalert_watch", "mailalert_exec", "amx-hostile", "amx-flood", "amx-multi",
           "amx-second", "amx-exec"]
# Two rules: one mails every event (each alert is composed and parsed), one with a small
# limit (digests with many groups).
CONFIG = ("[mail]\nto = security@example.com\nfrom = audit@example.com\n"
          "[limits]\nmax_mails = 1000000\nwindow = 86400\n"
          "[rule every]\nkeys = " + ", ".join(WATCHED[:4]) + "\n"
          "[rule few]\nkeys = " + ", ".join(WATCHED[3:]) + "\nmax_mails = 3\n")
RUN_LINES = 50000
RUN_DEADLINE = 600  # s for one run; beyond, it hangs
SENTINEL_SERIAL = 4000000000
ALERT_HEADERS = ["Date", "Message-ID", "From", "To", "Subject", "Auto-Submitted",
                 "X-Audit-Key", "X-Audit-Rule", "X-Audit-Event"]
DIGEST_HEADERS = ALERT_HEADERS[:6] + ["X-Audit-Digest", "X-Audit-Rule", "X-Audit-Key"]
# A tamper finding from a fuzzed CONFIG_CHANGE or DAEMON_* record (tamper alerts are on).
TAMPER_HEADERS = ALERT_HEADERS[:8] + ["X-Audit-Tamper", "X-Audit-Event"]
MIME_HEADERS = ["Content-Type", "Content-Transfer-Encoding", "MIME-Version"]
HEADER_LINE = re.compile(rb"[A-Za-z0-9-]+: [\x20-\x7e]*\Z")
MBOX_FROM = re.compile(rb"^From audisp-mailalert .*\n", re.MULTILINE)
# What the plugin logs when one of its own steps raised (guarded), or an event did.
OWN_ERRORS = re.compile(r"Traceback|failed: \w+Error|skipped: \w+Error|skipped: \w+Exception")
STAMP = re.compile(rb"msg=audit\([^)]*\)")
SPECIAL = [b"\r", b"\0", b"\x1d", b"\x01", b"=", b'"', b"'", b" ", b"\\", b"\xff", b"\xc3",
           b"\xe2\x80\xae", b" key=", b"key=(null)", b"msg=audit(", b"type=", b"node=",
           b"):", b"\n", b"%", b"=?utf-8?q?", b"\r\n"]
TYPES = [b"SYSCALL", b"PATH", b"CWD", b"EXECVE", b"PROCTITLE", b"EOE", b"CONFIG_CHANGE",
         b"USER_CMD", b"SOCKADDR", b"AVC", b"UNKNOWN[1337]", b"KERNEL", b"LOGIN", b"X"]
FIELDS = [b"name", b"key", b"a0", b"a1", b"argc", b"proctitle", b"cwd", b"comm", b"exe",
          b"auid", b"uid", b"ppid", b"pid", b"success", b"exit", b"syscall", b"arch",
          b"item", b"nametype", b"inode", b"mode", b"ouid", b"res", b"op", b"saddr", b"msg"]


class Stream:
    """A seeded generator of fuzzed record lines."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.events = [event for path in sorted(DATA.glob("*.log")) for event in load_events(path)]
        self.lines = [line for event in self.events for line in event]
        self.serial = 1000
        self.seconds = 1800000000

    def next_stamp(self) -> "tuple[int, int]":
        self.serial += self.random.choice([1, 1, 1, 2, 0, 7])  # now and then a repeat or a gap
        self.seconds += self.random.random() < 0.01
        return self.seconds, self.serial

    def chunk(self, lines: int) -> "tuple[bytes, int]":
        """About that many lines; the bytes and the number of lines."""
        pieces, count = [], 0
        while count < lines:
            piece = self.unit()
            pieces.append(piece)
            count += piece.count(b"\n")
        return b"".join(pieces), count

    def unit(self) -> bytes:
        kind = self.random.random()
        if kind < 0.30:
            return self.good_event()
        if kind < 0.58:
            return self.mutated_event()
        if kind < 0.73:
            return self.mutate(self.random.choice(self.lines)).rstrip(b"\n") + b"\n"
        if kind < 0.83:
            return self.interleaved()
        if kind < 0.93:
            return self.generated()
        if kind < 0.9995:
            return self.truncated()
        return self.long_line()

    def good_event(self) -> bytes:
        return restamp(self.random.choice(self.events), *self.next_stamp())

    def mutated_event(self) -> bytes:
        records = restamp(self.random.choice(self.events), *self.next_stamp()).splitlines(keepends=True)
        for _mutation in range(self.random.randint(1, 3)):
            at = self.random.randrange(len(records))
            records[at] = self.mutate(records[at])
        return b"".join(records).rstrip(b"\n") + b"\n"

    def interleaved(self) -> bytes:
        records = []
        for _event in range(self.random.randint(2, 4)):
            records.extend(restamp(self.random.choice(self.events), *self.next_stamp())
                           .splitlines(keepends=True))
        self.random.shuffle(records)
        return b"".join(records)

    def generated(self) -> bytes:
        seconds, serial = self.next_stamp()
        fields = [b"%s=%s" % (self.random.choice(FIELDS), self.value())
                  for _field in range(self.random.randint(0, 12))]
        return b"type=%s msg=audit(%d.%03d:%d): %s\n" % (
            self.random.choice(TYPES), seconds, self.random.randrange(1000), serial,
            b" ".join(fields))

    def truncated(self) -> bytes:
        event = restamp(self.random.choice(self.events), *self.next_stamp())
        cut = event[:self.random.randrange(len(event))]
        return cut + (b"\n" if self.random.random() < 0.5 else b"")  # else it joins the next

    def long_line(self) -> bytes:
        size = self.random.choice([70000, 300000, 2000000])
        line = self.random.choice(self.lines).rstrip(b"\n")
        return line + b" name=" + b"41" * (size // 2) + b"\n"

    def value(self) -> bytes:
        """A field value: hex of random bytes (the kernel's form for special characters),
        quoted text, a number, a watched key, or garbage."""
        kind = self.random.randrange(6)
        raw = bytes(self.random.randrange(256) for _byte in range(self.random.randrange(40)))
        if kind == 0:
            text = raw.hex().upper().encode()
            return text[:-1] if self.random.random() < 0.2 else text  # odd length now and then
        if kind == 1:
            return b'"' + raw.replace(b'"', b"").replace(b"\n", b"") + b'"'
        if kind == 2:
            return str(self.random.choice([0, -1, 4294967295, 2 ** 64, self.random.randrange(10 ** 6)])).encode()
        if kind == 3:
            key = self.random.choice(WATCHED).encode()
            return self.random.choice([b'"' + key + b'"', key.hex().upper().encode(),
                                       (b"other\x01" + key).hex().upper().encode(), key])
        if kind == 4:
            return raw.replace(b"\n", b"")
        return b"(null)"

    def mutate(self, line: bytes) -> bytes:
        """One to four random changes to a line."""
        changes = [self.flip, self.insert, self.delete, self.duplicate, self.cut,
                   self.new_value, self.new_key, self.new_stamp, self.new_type]
        for _change in range(self.random.randint(1, 4)):
            line = self.random.choice(changes)(line, self.random.randrange(len(line) + 1))
        return line

    def flip(self, line: bytes, at: int) -> bytes:
        return line[:at] + bytes([self.random.randrange(256)]) + line[at + 1:]

    def insert(self, line: bytes, at: int) -> bytes:
        return line[:at] + self.random.choice(SPECIAL) + line[at:]

    def delete(self, line: bytes, at: int) -> bytes:
        return line[:at] + line[at + self.random.randint(1, 40):]

    def duplicate(self, line: bytes, at: int) -> bytes:
        return line[:at] + line[max(0, at - 30):at] + line[at:]

    def cut(self, line: bytes, at: int) -> bytes:
        return line[:at]

    def new_value(self, line: bytes, _at: int) -> bytes:
        field = self.random.choice(FIELDS)
        return re.sub(rb"\b" + field + rb"=\S*", literal(field + b"=" + self.value()), line, count=1)

    def new_key(self, line: bytes, _at: int) -> bytes:
        return re.sub(rb" key=\S+", literal(b" key=" + self.value()), line)

    def new_stamp(self, line: bytes, _at: int) -> bytes:
        stamp = self.random.choice([b"msg=audit(", b"msg=audit(x.y:z)", b"msg=audit(1.2:)",
                                    b"msg=audit(99999999999999999999.999:1)", b""])
        return STAMP.sub(literal(stamp), line, count=1)

    def new_type(self, line: bytes, _at: int) -> bytes:
        return re.sub(rb"^type=\S+", literal(b"type=" + self.random.choice(TYPES)), line)


def literal(replacement: bytes) -> bytes:
    """A replacement for re.sub that stands for itself (no group references)."""
    return replacement.replace(b"\\", b"\\\\")


class Figures:
    """What the runs gave."""

    def __init__(self) -> None:
        self.runs = self.lines = self.bytes = self.crashes = self.hangs = 0
        self.alerts = self.digests = self.bad_messages = self.missed_sentinels = 0
        self.long_lines = self.errors_logged = 0
        self.peak_rss = 0.0
        self.failures = []  # type: list  # (run, what)

    def failed(self) -> bool:
        return bool(self.failures)

    def report(self, seconds: "float | None" = None) -> str:
        timing = "" if seconds is None else \
            f"; {seconds:.0f} s ({self.lines / max(seconds, 1e-9):.0f} lines/s)"
        return (f"lines {self.lines} ({self.bytes / 1e6:.0f} MB) in {self.runs} runs; "
                f"messages {self.alerts + self.digests} ({self.alerts} alerts, {self.digests} digests), "
                f"all parsed under email.policy.strict: {self.bad_messages} bad; "
                f"crashes {self.crashes}, hangs {self.hangs}, own errors logged {self.errors_logged}, "
                f"missed sentinel alerts {self.missed_sentinels}; long lines dropped {self.long_lines}; "
                f"peak RSS {self.peak_rss:.1f} MB{timing}")


def check_message(raw: bytes) -> "str | None":
    """None when the message is sound: strict parse, no defect in it or any header,
    exactly the headers of an alert, a tamper finding or a digest, each one line of printable ASCII."""
    try:
        message = BytesParser(policy=email.policy.strict).parsebytes(raw)
        headers = message.items()  # parsed (and their defects found) under the strict policy
        names = [name for name, _value in headers if name not in MIME_HEADERS]
        if names not in (ALERT_HEADERS, DIGEST_HEADERS, TAMPER_HEADERS):
            return f"headers {names}"
        defects = list(message.defects) + [d for _name, value in headers for d in value.defects]
        if defects:
            return f"defects {defects}"
        message.get_content()
    except Exception as err:  # noqa: BLE001 - any exception is a finding, reported as such
        return f"{type(err).__name__}: {err}"
    head = raw.split(b"\n\n", 1)[0].split(b"\n")
    bad = [line for line in head if not HEADER_LINE.match(line)]
    return f"header line {bad[0][:200]!r}" if bad else None


def sentinel() -> "tuple[bytes, str]":
    """A good watched event with a serial no generated one has, and its X-Audit-Event."""
    event = next(e for e in load_events() if b'key="mailalert_watch"' in e[0] and b"type=SYSCALL" in e[0])
    return restamp(event, 1900000000, SENTINEL_SERIAL), f"1900000000.000:{SENTINEL_SERIAL}@"


def run_once(config: Path, stream: bytes) -> "tuple[int | None, bytes, bytes, float]":
    """One plugin process over the stream, with a SIGHUP half-way through: exit code (None
    when it hung), stdout, stderr, peak RSS in MB. Threads feed stdin and drain stdout and
    stderr, so that none of the three pipes can stall the others."""
    process = subprocess.Popen([PYTHON, str(PLUGIN), "--config", str(config), "--print"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env={}, cwd="/")
    rss = PeakRss(process.pid, interval=0.05)
    output = {}

    def feed() -> None:
        try:
            half = len(stream) // 2
            process.stdin.write(stream[:half])
            process.send_signal(signal.SIGHUP)
            process.stdin.write(stream[half:])
            process.stdin.close()
        except (BrokenPipeError, ValueError):
            pass  # it died, or was killed: the exit code says how

    def drain(name: str, pipe) -> None:
        output[name] = pipe.read()
    threads = [threading.Thread(target=feed, daemon=True),
               threading.Thread(target=drain, args=("out", process.stdout), daemon=True),
               threading.Thread(target=drain, args=("err", process.stderr), daemon=True)]
    for thread in threads:
        thread.start()
    try:
        code = process.wait(timeout=RUN_DEADLINE)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        code = None
    for thread in threads:
        thread.join(30)
    return code, output.get("out", b""), output.get("err", b""), rss.result()


def judge(figures: Figures, run: int, code, out: bytes, err: bytes, expected_sentinel: str) -> None:
    log = err.decode("utf-8", "replace")
    if code is None:
        figures.hangs += 1
        figures.failures.append((run, f"no exit within {RUN_DEADLINE} s"))
    elif code != 0:
        figures.crashes += 1
        figures.failures.append((run, f"exit {code}: {log[-1000:]}"))
    own = OWN_ERRORS.findall(log)
    if own:
        figures.errors_logged += len(own)
        figures.failures.append((run, f"logged {own[:3]}: {log[-1000:]}"))
    found = re.search(r"input lines longer than \d+ bytes dropped: (\d+)", log)
    figures.long_lines += int(found.group(1)) if found else 0
    sentinel_seen = False
    for raw in MBOX_FROM.split(out)[1:]:
        raw = raw[:-1] if raw.endswith(b"\n\n") else raw  # the blank line mbox adds
        problem = check_message(raw)
        if problem:
            figures.bad_messages += 1
            figures.failures.append((run, f"bad message: {problem}"))
        elif b"\nX-Audit-Digest: " in raw.split(b"\n\n", 1)[0]:
            figures.digests += 1
        else:
            figures.alerts += 1
            sentinel_seen = sentinel_seen or f"X-Audit-Event: {expected_sentinel}".encode() in raw
    if code == 0 and not sentinel_seen:
        figures.missed_sentinels += 1
        figures.failures.append((run, "the good event at the end raised no alert"))


def fuzz(lines: int, seed: int, run_lines: int = RUN_LINES, keep: "Path | None" = None,
         progress=None) -> Figures:
    """Fuzz with at least `lines` lines in runs of about run_lines; the figures."""
    stream = Stream(seed)
    figures = Figures()
    good, expected = sentinel()
    with tempfile.TemporaryDirectory(prefix="fuzz-") as work:
        config = Path(work) / "fuzz.conf"
        config.write_text(CONFIG)
        while figures.lines < lines:
            data, count = stream.chunk(min(run_lines, lines - figures.lines))
            data += b"\n" + good  # on a line of its own, after whatever the garbage left open
            figures.runs += 1
            figures.lines += count
            figures.bytes += len(data)
            failures = len(figures.failures)
            code, out, err, rss = run_once(config, data)
            figures.peak_rss = max(figures.peak_rss, rss)
            judge(figures, figures.runs, code, out, err, expected)
            if keep and len(figures.failures) > failures:
                keep.mkdir(parents=True, exist_ok=True)
                (keep / f"run-{figures.runs}.log").write_bytes(data)
            if progress:
                progress(figures)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--lines", type=int, default=1000000)
    parser.add_argument("--seed", type=int, default=20261202)
    parser.add_argument("--run-lines", type=int, default=RUN_LINES)
    parser.add_argument("--keep", type=Path, default=None,
                        help="directory for the input of each failed run")
    args = parser.parse_args()
    started = time.monotonic()

    def progress(figures: Figures) -> None:
        print(f"fuzz: run {figures.runs}: {figures.report(time.monotonic() - started)}", flush=True)
    figures = fuzz(args.lines, args.seed, args.run_lines, args.keep, progress)
    plugins = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"fuzz: seed {args.seed}: {figures.report(time.monotonic() - started)}; "
          f"CPU of the plugin runs {plugins.ru_utime + plugins.ru_stime:.0f} s")
    for run, what in figures.failures[:20]:
        print(f"fuzz: FAILED run {run}: {what}")
    return 1 if figures.failed() else 0


if __name__ == "__main__":
    sys.exit(main())
