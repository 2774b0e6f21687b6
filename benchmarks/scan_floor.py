"""The scan floor: what any exact fast path must spend before it groups a single record.
Starts as the plugin does (imports it, builds its key regex for the benchmark's keys), reads
stdin in the plugin's chunks cut at their last newline, and runs the two scans every byte
must go through: the `key=` regex and the needles of the tamper rule's record types. Nothing else: no grouping, no
auparse, no mail. Prints the number of hits.

usage: python benchmarks/scan_floor.py KEY [KEY ...] < corpus"""

import os
import sys
from pathlib import Path

# The plugin's start-up is part of the floor: its package, imported as the program does.
sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "files"))
import mailalert.cli
from mailalert.config import Rule
from mailalert.plugin import READ_SIZE
from mailalert.sifter import ALWAYS_CANDIDATE_NEEDLES, key_pattern

del mailalert  # imported for its start-up only

pattern = key_pattern([Rule("floor", sys.argv[1:], [], 10, 300)])
hits = 0
partial = b""  # the start of a line the next read ends, as the plugin keeps it
while True:
    data = os.read(0, READ_SIZE)
    if not data:
        break
    last = data.rfind(b"\n") + 1
    lines, partial = partial + data[:last], data[last:]
    hits += sum(1 for _match in pattern.finditer(lines))
    hits += sum(1 for needle in ALWAYS_CANDIDATE_NEEDLES if needle in lines)
print(hits)
