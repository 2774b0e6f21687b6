"""The cost of rule conditions (issue #24): the plugin on the corpora of `make bench`, its
rule without conditions and with conditions that leave nothing out (so that all mail the
same and the difference is the evaluation alone: reading the fields the conditions name and
fitting them), alternating, best of REPEATS each. On the 1 %-keyed corpus the conditions are
evaluated for the keyed events only; on the flood, for every event (the worst case).
Prints figures; exits 1 when the two configs mail differently.

usage: python benchmarks/conditions_bench.py BENCH_DIR   (corpus.log, flood.log from make_corpus.py)
"""

import sys
from pathlib import Path

from run_bench import (
    PLUGIN,
    PYTHON,
    REPEATS,
    best,
    count_events,
    mails,
    plugin_setup,
    report,
    timed,
)

# Conditions that fit no event of the corpora (so that every mail is the same): a typical
# one (one field) and one that names nine audit fields, every one read and compared.
TYPICAL = 'ignore = [{"auid": "amx-no-such-user"}]\n'
WORST = ('match = {"success": ["yes", "no"]}\n'
         'ignore = [{"auid": "amx-no-such-user", "exe": "/nonexistent/*"}, '
         '{"path": "/nonexistent/*"}, {"comm": "no-such-?", "tty": "pts99"}]\n')
CONFIGS = {"without conditions": "", "ignore by auid": TYPICAL, "nine fields": WORST}


def runs(bench: Path, corpus: Path, max_mails: int) -> dict:
    found = {name: [] for name in CONFIGS}
    sent = {}
    for _round in range(REPEATS):
        for name, each in found.items():
            config, mailbox, _queue = plugin_setup(bench / "conditions", max_mails=max_mails)
            config.write_text(config.read_text() + CONFIGS[name])
            each.append(timed([PYTHON, str(PLUGIN), "--config", str(config)], corpus))
            sent[name] = sorted(m["X-Audit-Event"] or m["X-Audit-Digest"] for m in mails(mailbox))
    if len({tuple(mailed) for mailed in sent.values()}) != 1:
        sys.exit("the configs mailed differently")
    return {name: best(each) for name, each in found.items()}


def main() -> int:
    bench = Path(sys.argv[1])
    for label, corpus, max_mails in [("1 %-keyed corpus", bench / "corpus.log", 10),
                                     ("flood (every event keyed)", bench / "flood.log", 10)]:
        events = count_events(corpus)
        print(f"== {label}: {events} events")
        best_runs = runs(bench, corpus, max_mails)
        for name, run in best_runs.items():
            report(name, run, events)
        for name in list(CONFIGS)[1:]:
            ratio = best_runs[name].cpu / best_runs["without conditions"].cpu
            print(f"conditions cost ({name}): CPU x {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
