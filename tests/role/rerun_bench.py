"""Time the unchanged re-run of the localhost scenario: this tree against a reference.

The localhost scenario's converge (molecule/localhost/converge.yml with the scenario's
inventory and .config/molecule/config.yml's role variables) is run once to converge this
host, then re-run unchanged ROUNDS times with each tree, alternating the order each round
(A B, B A, ...) so that a load that rises or falls during the sitting hits both alike.
Every timed run must exit 0 with changed=0. Prints each run's wall time, the medians and,
from tests/fleet's record callback (profile_tasks' method: from one task's start to the
next one's), the tasks that take the most time. Ends with the scenario's cleanup (absent).

Each tree runs as `make test-lab-localhost` would run it: its own scenario files and
.config/molecule/config.yml (inventory, ansible.cfg options). Holds the host auditd lock
throughout. Run from the repository, as root:
    make collection-tree
    .venv/bin/python tests/role/rerun_bench.py --reference 45b8fdb --rounds 5
A reference tree is `git archive REV`, unpacked under build/rerun-bench/.
"""

import argparse
import fcntl
import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent.parent
BUILD = REPO / "build"
WORK = BUILD / "rerun-bench"
LOCK = "/run/lock/audit-mail-alert-host.lock"
CALLBACKS = REPO / "tests/fleet/callback_plugins"
SCENARIO = Path("molecule/localhost")
# The ansible-playbook next to this Python (the venv's).
ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")


def reference_tree(rev):
    """git archive REV unpacked as ansible_collections/linux_audit/mail_alert; its root."""
    sha = subprocess.run(["git", "rev-parse", "--short", rev], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout.strip()
    root = WORK / f"ref-{sha}"
    tree = root / "ansible_collections/linux_audit/mail_alert"
    if not tree.is_dir():
        tree.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", sha], cwd=REPO, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return sha, root


def scenario_config(root, name):
    """The scenario's inventory (its hosts, every scenario's role variables) and an
    ansible.cfg with the config_options molecule would write; their directory."""
    tree = root / "ansible_collections/linux_audit/mail_alert"
    shared = yaml.safe_load((tree / ".config/molecule/config.yml").read_text())["provisioner"]
    scenario = yaml.safe_load((tree / SCENARIO / "molecule.yml").read_text())["provisioner"]
    inventory = scenario["inventory"]["hosts"]
    inventory["all"]["vars"] = shared["inventory"]["group_vars"]["all"]
    options = {}
    for source in (shared, scenario):
        for section, values in source.get("config_options", {}).items():
            options.setdefault(section, {}).update(values)
    out = WORK / name
    out.mkdir(parents=True, exist_ok=True)
    (out / "inventory.yml").write_text(yaml.safe_dump(inventory))
    (out / "ansible.cfg").write_text("".join(
        f"[{section}]\n" + "".join(f"{key} = {value}\n" for key, value in values.items())
        for section, values in options.items()))
    return out


class Run:
    def __init__(self, label, seconds, rc, records, output):
        self.label, self.seconds, self.rc, self.output = label, seconds, rc, output
        tasks = [r for r in records if r["event"] == "task"]
        recap = [r for r in records if r["event"] == "recap"]
        self.changed = sum(r["changed"] for r in recap) if recap else None
        self.failed = sum(r["failures"] for r in recap) if recap else None
        end = recap[0]["t"] if recap else (records[-1]["t"] if records else 0.0)
        # profile_tasks' measure: a task lasts until the next task starts.
        self.tasks = defaultdict(float)
        self.count = len(tasks)
        for task, following in zip(tasks, tasks[1:] + [{"t": end}]):
            self.tasks[task["task"]] += following["t"] - task["t"]


def playbook(label, root, config, name, record):
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(config / "ansible.cfg"),
        ANSIBLE_COLLECTIONS_PATH=str(root),
        ANSIBLE_HOME=str(BUILD / "ansible-home"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_RETRY_FILES_ENABLED="false",
        ANSIBLE_CALLBACK_PLUGINS=str(CALLBACKS),
        ANSIBLE_CALLBACKS_ENABLED="fleet_record",
        FLEET_RECORD=str(record),
    )
    play = root / "ansible_collections/linux_audit/mail_alert" / SCENARIO / name
    started = time.monotonic()
    proc = subprocess.run([ANSIBLE_PLAYBOOK, "-i", str(config / "inventory.yml"), str(play)], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    seconds = time.monotonic() - started
    records = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
    return Run(label, seconds, proc.returncode, records, proc.stdout)


def check(run, unchanged):
    if run.rc != 0 or run.failed or (unchanged and run.changed != 0):
        sys.exit(f"{run.label}: rc {run.rc}, changed={run.changed}, failed={run.failed}\n{run.output[-4000:]}")


def report(label, done, top):
    times = [r.seconds for r in done]
    print(f"\n{label}: unchanged re-run median {statistics.median(times):.1f} s "
          f"(min {min(times):.1f}, max {max(times):.1f}; {', '.join(f'{t:.1f}' for t in times)}); "
          f"{done[0].count} tasks started")
    names = {name for r in done for name in r.tasks}
    profile = sorted(((statistics.median(r.tasks.get(name, 0.0) for r in done), name) for name in names),
                     reverse=True)
    for seconds, name in profile[:top]:
        print(f"  {seconds:6.2f} s  {name}")
    if len(profile) > top:
        rest = sum(seconds for seconds, _name in profile[top:])
        print(f"  {rest:6.2f} s  the other {len(profile) - top} tasks (sum of their medians)")
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--reference", action="append", required=True,
                        help="git revision to compare against (repeat for several)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--top", type=int, default=8, help="tasks to list per tree")
    args = parser.parse_args()
    if not (BUILD / "ansible_collections/linux_audit/mail_alert/roles").is_dir():
        sys.exit("no collection tree: run `make collection-tree` first")
    WORK.mkdir(parents=True, exist_ok=True)
    trees = {}
    for rev in args.reference:
        sha, root = reference_tree(rev)
        trees[f"reference {sha}"] = (root, scenario_config(root, f"config-{sha}"))
    trees["this tree"] = (BUILD, scenario_config(BUILD, "config-this"))
    labels = list(trees)
    runs = {label: [] for label in labels}
    # Opened non-inheritable by Python: an auditd the role restarts must not inherit it.
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        print(f"load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
        first = playbook("converge", *trees["this tree"], "converge.yml", WORK / "converge.jsonl")
        check(first, unchanged=False)
        print(f"converge (this tree): {first.seconds:.1f} s, changed={first.changed}", flush=True)
        for n in range(args.rounds):
            for i, label in enumerate(labels if n % 2 == 0 else labels[::-1]):
                run = playbook(label, *trees[label], "converge.yml", WORK / f"run-{n}-{i}.jsonl")
                check(run, unchanged=True)
                runs[label].append(run)
                print(f"round {n + 1} {label}: {run.seconds:.1f} s, changed=0", flush=True)
        print(f"load average at end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
        cleanup = playbook("cleanup", *trees["this tree"], "cleanup.yml", WORK / "cleanup.jsonl")
        check(cleanup, unchanged=False)

    medians = {label: report(label, runs[label], args.top) for label in labels}
    print()
    for label in labels[:-1]:
        print(f"this tree / {label}: {medians['this tree'] / medians[label]:.2f} "
              f"(medians {medians['this tree']:.1f} s / {medians[label]:.1f} s)")


if __name__ == "__main__":
    main()
