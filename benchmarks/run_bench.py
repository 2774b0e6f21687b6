"""Benchmark the alert plugin against a bare auparse feed loop on the same corpus, in one run.

Both run as auditd runs a plugin: a child process reading the corpus on stdin, timed
from start to EOF-and-exit, peak RSS from the child's rusage. The plugin delivers
through the sendmail stand-in (tests/plugin/fakes/sendmail) with a realistic rate limit.
Then a flood of matching events must end in at most max_mails alerts plus digests whose
held-back counts add up exactly. Prints figures; exits 1 when a target is missed.

When BENCH_DIR holds normalize_all (benchmarks/normalize_all.c, built by `make bench`
where libauparse-dev is installed), it runs too: a C plugin that normalizes every event.

usage: python benchmarks/run_bench.py BENCH_DIR   (holding corpus.log and flood.log)
"""

import email.parser
import email.policy
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "files" / "audisp_mailalert.py"
BARE = REPO / "benchmarks" / "bare_feed.py"
STANDIN = REPO / "tests" / "plugin" / "fakes" / "sendmail"
PYTHON = "/usr/bin/python3"  # the plugin's shebang: the interpreter auditd runs it with
KEYS = "mailalert_watch, mailalert_exec"
RATIO_TARGET, RSS_TARGET_MB = 1.2, 40.0
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


def main() -> int:
    bench = Path(sys.argv[1]).resolve()
    corpus, flood = bench / "corpus.log", bench / "flood.log"
    events = count_events(corpus)
    print(f"corpus: {corpus} ({events} events, {corpus.stat().st_size / 1e6:.0f} MB)")
    failures = []

    # Alternate the two, REPEATS times, and keep each one's best time: other load on the
    # machine then slows both alike instead of skewing the ratio.
    normalize_all = bench / "normalize_all"
    load_before = os.getloadavg()[0]
    bare_runs, plugin_runs, c_runs = [], [], []
    for _round in range(REPEATS):
        bare_runs.append(timed([PYTHON, str(BARE)], corpus))
        assert int(bare_runs[-1].out) == events, f"bare loop saw {bare_runs[-1].out!r} events"
        config, mailbox, queue = plugin_setup(bench / "run", max_mails=10)
        plugin_runs.append(timed([PYTHON, str(PLUGIN), "--config", str(config)], corpus))
        if normalize_all.exists():
            c_runs.append(timed([str(normalize_all), "mailalert_watch"], corpus))
    bare, plugin = best(bare_runs), best(plugin_runs)
    delivered = mails(mailbox)
    print(f"best of {REPEATS} alternating runs each; load average {load_before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after, on {os.cpu_count()} CPUs")
    report("bare auparse feed loop", bare, events)
    report("plugin, delivery on", plugin, events)
    print(f"{'':34} {len(delivered)} mails delivered, "
          f"{len(list(queue.glob('*.eml')))} left in the spool")
    if c_runs:
        c = best(c_runs)
        report("C plugin normalizing every event", c, events)
        print(f"plugin/C: wall {plugin.wall / c.wall:.2f}, CPU {plugin.cpu / c.cpu:.2f}")
        if plugin.cpu > c.cpu:
            failures.append("the plugin uses more CPU than a C plugin that normalizes every event")
    else:
        print(f"C plugin normalizing every event: not run ({normalize_all} not built: "
              "install libauparse-dev)")
    print(f"ratio plugin/bare: wall {plugin.wall / bare.wall:.2f}, "
          f"CPU {plugin.cpu / bare.cpu:.2f} (target <= {RATIO_TARGET}, judged on CPU time: "
          "wall time also measures the machine's other load)")
    if plugin.cpu / bare.cpu > RATIO_TARGET:
        failures.append(f"plugin uses {plugin.cpu / bare.cpu:.2f}x the bare loop's CPU time")
    if plugin.rss > RSS_TARGET_MB:
        failures.append(f"plugin peak RSS {plugin.rss:.1f} MB > {RSS_TARGET_MB} MB")

    flood_events = count_events(flood)
    max_mails = 5
    config, mailbox, queue = plugin_setup(bench / "flood", max_mails=max_mails)
    flood_run = timed([PYTHON, str(PLUGIN), "--config", str(config)], flood)
    delivered = mails(mailbox)
    alerts = [m for m in delivered if "X-Audit-Digest" not in m]
    digests = [held_back(m) for m in delivered if "X-Audit-Digest" in m]
    left = list(queue.glob("*.eml"))
    print(f"flood: {flood_events} matching events in {flood_run.wall:.2f} s "
          f"({flood_events / flood_run.wall:.0f} events/s, peak RSS {flood_run.rss:.1f} MB): "
          f"{len(alerts)} alerts (max_mails {max_mails}) + digests {digests} "
          f"= {len(alerts) + sum(digests)}; {len(left)} left in the spool")
    if len(alerts) > max_mails or len(alerts) + sum(digests) != flood_events or left:
        failures.append("flood: alerts + digest counts do not add up to the events")

    for failure in failures:
        print(f"TARGET MISSED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
