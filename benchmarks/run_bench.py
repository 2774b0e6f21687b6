"""Benchmark the alert plugin against its references on the same corpora, in one run.

Every program runs as auditd runs a plugin: a child process reading the corpus on stdin,
timed from start to EOF-and-exit, CPU time and peak RSS from the child's rusage. On the
1 %-keyed corpus, alternating, best of REPEATS each: a line-read floor (read and split the
lines, nothing else), the scan floor (the plugin's start-up, its chunked reads and the two
scans every exact fast path runs over every byte), the bare auparse feed loop, the C
plugin that normalizes every event (benchmarks/normalize_all.c, built by `make bench`),
the plugin on its reference path
(every line to auparse, as before the event sifter) and the plugin. The plugins deliver
through the sendmail stand-in (tests/audisp_plugin/fakes/sendmail) with a realistic rate limit.
Then the near-miss corpus (CONFIG_CHANGE events left in) for the C plugin and the plugin,
and the flood (every event keyed) for both plugin paths, alternating: at most max_mails alerts plus
digests whose held-back counts add up exactly. Prints figures; exits 1 when a target is
missed.

usage: python benchmarks/run_bench.py BENCH_DIR   (corpus.log, nearmiss.log, flood.log)
"""

import email.parser
import email.policy
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "files" / "audisp_mailalert.py"
BARE = REPO / "benchmarks" / "bare_feed.py"
FLOOR = REPO / "benchmarks" / "line_floor.py"
SCAN_FLOOR = REPO / "benchmarks" / "scan_floor.py"
REFERENCE = REPO / "benchmarks" / "plugin_feed_everything.py"
STANDIN = REPO / "tests" / "audisp_plugin" / "fakes" / "sendmail"
PYTHON = "/usr/bin/python3"  # the plugin's shebang: the interpreter auditd runs it with
KEYS = "mailalert_watch, mailalert_exec"
C_TARGET, NEARMISS_C_TARGET, RSS_TARGET_MB = 4.0, 3.0, 40.0  # CPU throughput vs the C plugin
FLOOD_SLACK = 1.05  # the flood may cost this much more CPU than on the reference path
REPEATS = 3
STAMP = re.compile(rb"msg=audit\(([\d.:]+)\)")


class Run:
    """One child's wall time to exit, CPU time (its own and its reaped children's, so the
    plugin's sendmail runs count), peak RSS in MB, and its stdout."""

    def __init__(self, wall: float, cpu: float, rss: float, out: bytes) -> None:
        self.wall, self.cpu, self.rss, self.out = wall, cpu, rss, out


def timed(command: "list[str]", corpus: Path) -> Run:
    with corpus.open("rb") as stdin:
        started = time.monotonic()
        child = subprocess.Popen(command, stdin=stdin, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL)
        out = child.stdout.read()
        status, usage = os.wait4(child.pid, 0)[1:]
        wall = time.monotonic() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"{command[1]} exited with {code}")
    return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, out)


def best(runs: "list[Run]") -> Run:
    """Fastest wall and CPU time of the runs, highest peak RSS."""
    return Run(min(r.wall for r in runs), min(r.cpu for r in runs), max(r.rss for r in runs), b"")


def report(name: str, run: Run, events: int) -> None:
    print(f"{name:34} {events / run.wall:8.0f} events/s wall ({run.wall:5.2f} s), "
          f"{events / run.cpu:8.0f} events/s CPU ({run.cpu:5.2f} s), peak RSS {run.rss:5.1f} MB")


def plugin_setup(root: Path, max_mails: int) -> "tuple[Path, Path, Path]":
    """A fresh spool and stand-in mailbox, and a config delivering through the stand-in."""
    shutil.rmtree(root, ignore_errors=True)
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "sendmail").symlink_to(STANDIN)
    config = root / "plugin.conf"
    config.write_text(
        "[mail]\nto = security@example.com\nfrom = audit@example.com\n"
        f"sendmail = {root / 'bin' / 'sendmail'}\ntimeout = 30\n"
        f"[limits]\nmax_mails = {max_mails}\nwindow = 300\n"
        f"[spool]\ndir = {root / 'spool'}\n"
        f"[rule watch]\nkeys = {KEYS}\n")
    return config, root / "bin" / "mail" / "new", root / "spool" / "queue"


def mails(mailbox: Path) -> "list[email.message.EmailMessage]":
    parser = email.parser.BytesParser(policy=email.policy.default)
    return [parser.parsebytes(p.read_bytes()) for p in sorted(mailbox.glob("*.eml"))]


def held_back(message) -> int:
    return int(re.search(r"^Held back: (\d+)$", message.get_content(), re.MULTILINE).group(1))


def count_events(corpus: Path) -> int:
    """Events in the corpus (records of one event are adjacent), read as a stream: the
    children's peak RSS would otherwise include this process's memory at fork."""
    events, last = 0, b""
    with corpus.open("rb") as handle:
        for line in handle:
            found = STAMP.search(line)
            if found and found.group(0) != last:
                events, last = events + 1, found.group(0)
    return events


def alternate(commands: "dict[str, list[str]]", corpus: Path, bench: Path) -> "dict[str, Run]":
    """Each command REPEATS times, alternating, each best kept: other load on the machine
    then slows all alike instead of skewing the ratios. Plugin runs get a fresh spool."""
    runs = {name: [] for name in commands}
    for _round in range(REPEATS):
        for name, command in commands.items():
            if "--config" in command:
                plugin_setup(bench / "run", max_mails=10)
            runs[name].append(timed(command, corpus))
    return {name: best(found) for name, found in runs.items()}


def flood_runs(commands: "dict[str, list[str]]", bench: Path, flood: Path, events: int,
               failures: "list[str]") -> "dict[str, Run]":
    """The flood with max_mails 5, each command REPEATS times, alternating (as alternate()),
    best CPU kept: every delivered mail is parsed; alerts + held back must be the events,
    exactly, in every run."""
    max_mails, runs, seen = 5, {name: [] for name in commands}, {}
    for _round in range(REPEATS):
        for name, command in commands.items():
            config, mailbox, queue = plugin_setup(bench / "flood", max_mails=max_mails)
            runs[name].append(timed(command + ["--config", str(config)], flood))
            delivered = mails(mailbox)
            alerts = [m for m in delivered if "X-Audit-Digest" not in m]
            digests = [held_back(m) for m in delivered if "X-Audit-Digest" in m]
            left = list(queue.glob("*.eml"))
            if len(alerts) > max_mails or len(alerts) + sum(digests) != events or left:
                failures.append(f"flood ({name}): {len(alerts)} alerts + digests {digests} != {events}")
            seen[name] = (len(alerts), digests, len(left))
    result = {name: best(found) for name, found in runs.items()}
    for name, run in result.items():
        alerts, digests, left = seen[name]
        print(f"flood, {name:27} {events / run.cpu:8.0f} events/s CPU ({run.cpu:5.2f} s), "
              f"{events / run.wall:8.0f} events/s wall ({run.wall:5.2f} s), peak RSS {run.rss:5.1f} MB: "
              f"{alerts} alerts (max_mails {max_mails}) + digests {digests} = "
              f"{alerts + sum(digests)}; {left} left in the spool")
    return result


def delivery_cpu(root: Path, count: int) -> float:
    """CPU time of COUNT runs of the sendmail stand-in, each taking one small message, as
    the plugin runs it: part of the plugin's figure (the C plugin mails nothing)."""
    plugin_setup(root, max_mails=1)  # the stand-in under root/bin, its mailbox beside it
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for _run in range(count):
        subprocess.run([str(root / "bin" / "sendmail"), "-oi", "-f", "audit@example.com", "--",
                        "security@example.com"], input=b"Subject: bench\n\nbody\n", check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def main() -> int:
    bench = Path(sys.argv[1]).resolve()
    corpus, nearmiss, flood = bench / "corpus.log", bench / "nearmiss.log", bench / "flood.log"
    normalize_all = bench / "normalize_all"
    if not normalize_all.exists():
        sys.exit(f"{normalize_all} is not built (make bench builds it; it needs libauparse-dev)")
    events = count_events(corpus)
    print(f"corpus: {corpus} ({events} events, {corpus.stat().st_size / 1e6:.0f} MB, 1 % keyed)")
    failures = []
    config = bench / "run" / "plugin.conf"
    plugin_setup(bench / "run", max_mails=10)
    load_before = os.getloadavg()[0]
    commands = {
        "line-read floor": [PYTHON, str(FLOOR)],
        "scan floor (key and type scans)": [PYTHON, str(SCAN_FLOOR), *KEYS.split(", ")],
        "bare auparse feed loop": [PYTHON, str(BARE)],
        "C plugin normalizing every event": [str(normalize_all), "mailalert_watch"],
        "plugin, reference path": [PYTHON, str(REFERENCE), "--config", str(config)],
        "plugin": [PYTHON, str(PLUGIN), "--config", str(config)],
    }
    results = alternate(commands, corpus, bench)
    mailbox, queue = bench / "run" / "bin" / "mail" / "new", bench / "run" / "spool" / "queue"
    print(f"best of {REPEATS} alternating runs each; load average {load_before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after, on {os.cpu_count()} CPUs")
    for name, run in results.items():
        report(name, run, events)
    delivered = len(mails(mailbox))
    print(f"{'':34} the plugin's last run: {delivered} mails delivered, "
          f"{len(list(queue.glob('*.eml')))} left in the spool; {delivered} runs of the "
          f"sendmail stand-in alone: {delivery_cpu(bench / 'standin', delivered):.2f} s CPU")
    plugin, c = results["plugin"], results["C plugin normalizing every event"]
    ratio = c.cpu / plugin.cpu
    print(f"plugin vs C plugin: CPU throughput {ratio:.2f}x (target >= {C_TARGET}), wall "
          f"{c.wall / plugin.wall:.2f}x; vs its reference path: CPU "
          f"{results['plugin, reference path'].cpu / plugin.cpu:.2f}x; vs bare loop: CPU "
          f"{results['bare auparse feed loop'].cpu / plugin.cpu:.2f}x; line-read floor: "
          f"{c.cpu / results['line-read floor'].cpu:.2f}x the C plugin's; scan floor: "
          f"{c.cpu / results['scan floor (key and type scans)'].cpu:.2f}x the C plugin's")
    if ratio < C_TARGET:
        failures.append(f"plugin CPU throughput {ratio:.2f}x the C plugin's (target {C_TARGET}x)")

    events = count_events(nearmiss)
    print(f"near-miss corpus: {nearmiss} ({events} events, with the capture's CONFIG_CHANGE events)")
    near = alternate({key: commands[key] for key in ("C plugin normalizing every event", "plugin")},
                     nearmiss, bench)
    for name, run in near.items():
        report(name, run, events)
    ratio = near["C plugin normalizing every event"].cpu / near["plugin"].cpu
    print(f"plugin vs C plugin on near-misses: CPU throughput {ratio:.2f}x (target >= {NEARMISS_C_TARGET})")
    if ratio < NEARMISS_C_TARGET:
        failures.append(f"near-misses: plugin CPU throughput {ratio:.2f}x the C plugin's "
                        f"(target {NEARMISS_C_TARGET}x)")

    events = count_events(flood)
    floods = flood_runs({"reference path": [PYTHON, str(REFERENCE)], "plugin": [PYTHON, str(PLUGIN)]},
                        bench, flood, events, failures)
    reference, fast = floods["reference path"], floods["plugin"]
    print(f"flood: plugin/reference CPU {fast.cpu / reference.cpu:.2f} (target <= {FLOOD_SLACK})")
    if fast.cpu > reference.cpu * FLOOD_SLACK:
        failures.append(f"flood: the plugin needs {fast.cpu / reference.cpu:.2f}x the CPU of its reference path")
    rss = max(r.rss for r in list(results.values()) + list(near.values()) + [reference, fast])
    print(f"peak RSS of all runs: {rss:.1f} MB (target < {RSS_TARGET_MB} MB)")
    if rss >= RSS_TARGET_MB:
        failures.append(f"peak RSS {rss:.1f} MB")

    for failure in failures:
        print(f"TARGET MISSED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
