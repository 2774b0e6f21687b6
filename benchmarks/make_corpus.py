"""Build the benchmark corpora from captured audit records (`ausearch --raw` output).

Captured events are replayed with rising timestamps and serials, so auparse sees a long,
well-formed stream like the one auditd hands its plugins:
  corpus.log    EVENTS events, one in MATCH_EVERY carrying a watched key, the rest not
  nearmiss.log  the same, with the capture's rule-load events (CONFIG_CHANGE) among the rest
  flood.log     FLOOD events that all carry the watched key

usage: python benchmarks/make_corpus.py CAPTURED OUTDIR [EVENTS] [FLOOD]
"""

import re
import sys
from pathlib import Path

WATCHED_KEYS = (b'key="mailalert_watch"', b'key="mailalert_exec"')
MATCH_EVERY = 100  # 1 % of events match: a realistic share for alert rules
STAMP = re.compile(rb"msg=audit\((\d+)\.(\d+):(\d+)\)")
START = 1800000000  # seconds of the first replayed event
EVENTS_PER_SECOND = 1000


def load(path: Path, config_changes: bool = False) -> "tuple[list, list]":
    """Captured events as lists of (before-stamp, after-stamp) record pieces, split into
    those a watched key matches and the rest (with the CONFIG_CHANGE events or not)."""
    events = {}
    for line in path.read_bytes().splitlines(keepends=True):
        found = STAMP.search(line)
        if found:
            events.setdefault(found.group(0), []).append(
                (line[:found.start()], line[found.end():]))
    matching, other = [], []
    for records in events.values():
        first = records[0][0] + records[0][1]
        if first.startswith(b"type=CONFIG_CHANGE") and not config_changes:
            # The capture's own rule loads: a real stream has a handful, not one in ten
            # events; replayed 2,500 times each they would distort the mix.
            continue
        keyed = first.startswith(b"type=SYSCALL") and any(k in first for k in WATCHED_KEYS)
        (matching if keyed else other).append(records)
    if not matching or not other:
        sys.exit(f"{path}: needs events with and without the keys {WATCHED_KEYS}")
    return matching, other


def write(path: Path, count: int, pick) -> None:
    with path.open("wb") as out:
        chunk = []
        for i in range(count):
            serial = i + 1
            stamp = b"msg=audit(%d.%03d:%d)" % (START + i // EVENTS_PER_SECOND, i % 1000, serial)
            chunk.extend(before + stamp + after for before, after in pick(i))
            if len(chunk) > 20000:
                out.write(b"".join(chunk))
                chunk = []
        out.write(b"".join(chunk))
    print(f"make_corpus: {count} events, {path.stat().st_size / 1e6:.0f} MB -> {path}")


def main() -> None:
    captured, outdir = Path(sys.argv[1]), Path(sys.argv[2])
    events = int(sys.argv[3]) if len(sys.argv) > 3 else 250000
    flood = int(sys.argv[4]) if len(sys.argv) > 4 else 100000
    matching, other = load(captured)
    outdir.mkdir(parents=True, exist_ok=True)
    write(outdir / "corpus.log", events,
          lambda i: matching[(i // MATCH_EVERY) % len(matching)] if i % MATCH_EVERY == 0
          else other[i % len(other)])
    write(outdir / "flood.log", flood, lambda i: matching[i % len(matching)])
    # Near-misses: CONFIG_CHANGE events (the capture's rule loads carry the watched keys)
    # must always reach auparse, and never alert.
    matching, other = load(captured, config_changes=True)
    write(outdir / "nearmiss.log", events,
          lambda i: matching[(i // MATCH_EVERY) % len(matching)] if i % MATCH_EVERY == 0
          else other[i % len(other)])


if __name__ == "__main__":
    main()
