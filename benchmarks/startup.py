"""Start-up and lone-event latency of the plugin program, compared in one run with a
reference: the one-file plugin of an earlier commit (issue #20: the package split must
not make either worse). Three programs, run alternately ROUNDS times each, as auditd
runs them (empty environment, stdin a pipe, --print with one KEY argument):

  - reference: `git show REV:files/audisp_mailalert.py` (one file, compiled at each start)
  - package, source: files/audisp_mailalert.py with files/mailalert/ (compiled in memory
    at each start: the program writes no bytecode)
  - package, compiled: the same, copied with its package compiled by compileall, as the
    role installs it

Figures: the median wall time from the start to the exit on empty input, and from the
start to the alert on stdout for one keyed event (SYSCALL + EOE) written at once.

usage: python benchmarks/startup.py [REV] [ROUNDS]     (defaults: 1c58494, 15)
"""

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = "/usr/bin/python3"
EVENT = (b'type=SYSCALL msg=audit(1796000000.100:7): arch=c000003e syscall=59 success=yes exit=0'
         b' a0=1 a1=2 a2=3 a3=4 items=1 ppid=1 pid=2 auid=0 uid=0 gid=0 euid=0 suid=0 fsuid=0'
         b' egid=0 sgid=0 fsgid=0 tty=pts0 ses=1 comm="w" exe="/usr/bin/w" key="bench"\n'
         b'type=EOE msg=audit(1796000000.100:7): \n')


def to_exit(program: Path) -> float:
    started = time.perf_counter()
    subprocess.run([PYTHON, str(program), "--print", "bench"], input=b"", env={},
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def to_alert(program: Path) -> float:
    """From the start until the alert's first line is on stdout (stdin stays open)."""
    started = time.perf_counter()
    process = subprocess.Popen([PYTHON, str(program), "--print", "bench"], env={},
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    process.stdin.write(EVENT)
    process.stdin.flush()
    line = process.stdout.readline()
    elapsed = time.perf_counter() - started
    process.stdin.close()
    process.wait(timeout=30)
    assert line.startswith(b"From "), line
    return elapsed


def main() -> None:
    rev = sys.argv[1] if len(sys.argv) > 1 else "1c58494"
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    work = Path(tempfile.mkdtemp(prefix="startup-bench-"))
    try:
        reference = work / "reference" / "audisp_mailalert.py"
        reference.parent.mkdir()
        reference.write_bytes(subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:files/audisp_mailalert.py"],
                                             stdout=subprocess.PIPE, check=True).stdout)
        compiled = work / "compiled"
        compiled.mkdir()
        shutil.copy(REPO / "files" / "audisp_mailalert.py", compiled)
        shutil.copytree(REPO / "files" / "mailalert", compiled / "mailalert",
                        ignore=shutil.ignore_patterns("__pycache__"))
        subprocess.run([PYTHON, "-m", "compileall", "-q", str(compiled / "mailalert")], check=True)
        programs = {f"reference ({rev}, one file)": reference,
                    "package, source": REPO / "files" / "audisp_mailalert.py",
                    "package, compiled (as installed)": compiled / "audisp_mailalert.py"}
        exits = {name: [] for name in programs}
        alerts = {name: [] for name in programs}
        for _round in range(rounds):
            for name, program in programs.items():
                exits[name].append(to_exit(program))
                alerts[name].append(to_alert(program))
        print(f"median of {rounds} alternating runs each, {PYTHON} "
              f"{'.'.join(map(str, sys.version_info[:2]))}, {os.cpu_count()} cores:")
        for name in programs:
            print(f"  {name:34} start to exit {statistics.median(exits[name]) * 1000:6.1f} ms, "
                  f"start to alert {statistics.median(alerts[name]) * 1000:6.1f} ms")
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
