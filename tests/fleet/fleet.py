"""The fleet for tests/fleet: systemd containers from the lab's Debian 12 rootfs, an
inventory of inventory/example's shape generated for them under build/fleet/, runs of
playbooks/deploy.yml across them, and what is on each host afterwards.

    python tests/fleet/fleet.py teardown    # remove every fleet container (make's safety net)
"""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
BUILD = Path(os.environ.get("ANSIBLE_COLLECTIONS_PATH", REPO / "build"))
WORK = BUILD / "fleet"
LAB = REPO / "tests" / "lab"
# The role and plugin that the runs deploy: the collection tree (make collection-tree), a
# copy of the working tree taken before the run.
COLLECTION = BUILD / "ansible_collections" / "linux_audit" / "mail_alert"
ROLE = COLLECTION / "roles" / "audit_mail_alert"
PLUGIN_SRC = COLLECTION / "files" / "audisp_mailalert.py"
PACKAGE_SRC = COLLECTION / "files" / "mailalert"
EXAMPLE = REPO / "inventory" / "example"
PLAYBOOK = REPO / "playbooks" / "deploy.yml"
PREFIX = "audit-mail-alert-fleet-"
DIST = "bookworm"

# The groups of the fleet, in inventory order, with their share of the hosts and their
# own recipients and rules (on top of the example's base rules, as in inventory/example).
GROUPS = {
    "web": (0.4, {
        "audit_mail_alert_to": ["web-oncall@example.com"],
        "audit_mail_alert_extra_rules": [
            {"key": "web-config", "path": "/etc/nginx", "perm": "wa"},
        ],
    }),
    "db": (0.3, {
        "audit_mail_alert_to": ["dba@example.com", "secops@example.com"],
        "audit_mail_alert_extra_rules": [
            {"key": "pg-config", "path": "/etc/postgresql", "perm": "wa", "to": ["dba@example.com"]},
        ],
    }),
    "mail": (0.3, {
        "audit_mail_alert_to": ["postmaster@example.com"],
        "audit_mail_alert_extra_rules": [
            {"key": "postfix-config", "path": "/etc/postfix/main.cf", "perm": "wa", "max_mails": 2},
        ],
    }),
}

# A file system scan for the product's names: anything the role leaves behind (a rules
# backup, a stray copy) shows up here even if it is not on the list of paths below.
FIND_PRODUCT = ["find", "/", "-xdev", "(", "-name", "*audisp-mailalert*", "-o",
                "-name", "*audisp_mailalert*", "-o", "-name", "*audit-mail-alert*", ")", "-print"]

# Run inside a container by its system python3: state of each path and the scan above.
PROBE = r"""
import hashlib, json, os, stat, subprocess, sys
paths, find = json.loads(sys.argv[1]), json.loads(sys.argv[2])
out = {}
for path in paths:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        out[path] = None
        continue
    entry = {"mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid,
             "dir": stat.S_ISDIR(st.st_mode), "file": stat.S_ISREG(st.st_mode)}
    if entry["file"]:
        with open(path, "rb") as f:
            data = f.read()
        entry["sha256"] = hashlib.sha256(data).hexdigest()
        entry["text"] = data.decode("utf-8", "replace")
    out[path] = entry
found = subprocess.run(find, stdout=subprocess.PIPE, universal_newlines=True).stdout.split()
real = {path: os.path.realpath(path) for path in paths}  # /sbin is /usr/sbin (merged /usr)
print(json.dumps({"paths": out, "real": real, "found": sorted(found)}))
"""


def role_paths() -> dict[str, str]:
    """The files the role installs (roles/audit_mail_alert/vars, defaults and the SELinux
    task file), by name: read from the role, so that a moved file is still checked."""
    internal = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())

    def resolve(value: str) -> str:
        return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: resolve(internal[m.group(1)]), value)

    paths = {name: resolve(internal[f"__audit_mail_alert_{name}"])
             for name in ("plugin_bin", "lib_dir", "config", "password_file", "plugin_conf", "rules_file")}
    paths["spool_dir"] = defaults["audit_mail_alert_spool_dir"]
    # The watchdog's systemd units (the fleet's containers run systemd: no cron entry).
    for unit in internal["__audit_mail_alert_watchdog_units"]:
        paths["watchdog_" + unit.rsplit(".", 1)[1]] = unit
    selinux = (ROLE / "tasks" / "selinux.yml").read_text()
    paths["selinux_build_dir"] = re.search(
        r"__audit_mail_alert_selinux_build_dir \| d\('([^']+)'\)", selinux).group(1)
    return paths


def package_paths() -> dict[str, Path]:
    """Each module of the plugin's package where the role installs it -> the collection's file."""
    lib_dir = role_paths()["lib_dir"]
    return {f"{lib_dir}/{source.relative_to(PACKAGE_SRC.parent)}": source
            for source in sorted(PACKAGE_SRC.rglob("*.py"))}


def playbook_settings() -> dict:
    """hosts, serial and max_fail_percentage of playbooks/deploy.yml."""
    (play,) = yaml.safe_load(PLAYBOOK.read_text())
    return {"hosts": play["hosts"], "serial": play["serial"],
            "max_fail_percentage": play["max_fail_percentage"]}


def serial_size(serial, count: int) -> int:
    """The batch size ansible derives from `serial` (ansible.utils.helpers.pct_to_int)."""
    if isinstance(serial, str) and serial.endswith("%"):
        return int(int(serial[:-1]) / 100.0 * count) or 1
    return int(serial)


# Actions that run on the controller only: every other task reaches the host (ssh, python).
LOCAL_ACTIONS = {"assert", "debug", "fail", "include_tasks", "include_vars", "meta", "set_fact",
                 "validate_argument_spec"}


def teardown() -> None:
    """Remove every fleet container (also those of an earlier run cut short)."""
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"name=^/{PREFIX}"],
                         stdout=subprocess.PIPE, text=True, check=True).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], stdout=subprocess.DEVNULL, check=True)
        print(f"==> fleet: removed {len(ids)} containers", flush=True)


class Run:
    """One ansible-playbook run: exit code, wall time, log and the fleet_record lines."""

    def __init__(self, label, args, rc, seconds, log: Path, record: Path):
        self.label, self.args, self.rc, self.seconds, self.log = label, args, rc, seconds, log
        self.load = (None, None)  # the machine's 1-minute load average before and after
        self.records = [json.loads(line) for line in record.read_text().splitlines()] \
            if record.exists() else []
        self.results = [r for r in self.records if r["event"] == "result"]
        self.recap = {r["host"]: r for r in self.records if r["event"] == "recap"}

    def __repr__(self):
        tail = self.log.read_text()[-5000:] if self.log.exists() else ""
        return f"ansible-playbook {' '.join(self.args)} (rc {self.rc}, log {self.log}):\n{tail}"

    def batches(self) -> list[set[str]]:
        """The hosts that reported results after each batch start."""
        out = []
        for r in self.records:
            if r["event"] == "batch":
                out.append(set())
            elif r["event"] == "result":
                out[-1].add(r["host"])
        return out

    def changed(self) -> dict[str, list[str]]:
        """Per host, the tasks that reported a change."""
        out = defaultdict(list)
        for r in self.results:
            if r["status"] == "changed":
                out[r["host"]].append(r["task"])
        return dict(out)

    def hosts_with(self, task: str, statuses=None) -> set[str]:
        return {r["host"] for r in self.results
                if r["task"] == task and (statuses is None or r["status"] in statuses)}

    def executed_per_host(self, remote_only=False) -> dict[str, int]:
        """Results that were not skipped, per host (includes count as tasks); remote_only:
        only the tasks that reach the host."""
        out = defaultdict(int)
        for r in self.results:
            local = r["action"].rsplit(".", 1)[-1] in LOCAL_ACTIONS
            if r["status"] != "skipped" and not (remote_only and local):
                out[r["host"]] += 1
        return dict(out)

    def task_walls(self) -> dict[tuple[str, str], float]:
        """Wall time per (task name, action), summed over the batches: from the task's start
        to its last host's result."""
        walls = defaultdict(float)
        start, last, key = None, None, None
        for r in self.records + [{"event": "end"}]:
            if r["event"] in ("task", "batch", "recap", "end"):
                if start is not None and last is not None:
                    walls[key] += last - start
                start, last = (r["t"], None) if r["event"] == "task" else (None, None)
                key = (r.get("task"), r.get("action"))
            elif r["event"] == "result":
                last = r["t"]
        return dict(walls)

    def figures(self) -> dict:
        hosts = sorted(self.recap)
        per_host = self.executed_per_host()
        busy = defaultdict(float)
        for r in self.results:
            busy[r["host"]] += r["seconds"] or 0.0
        walls = self.task_walls()
        ended = max((r["t"] for r in self.records), default=0.0)
        return {
            "label": self.label, "args": " ".join(self.args), "rc": self.rc, "load": self.load,
            "seconds": round(self.seconds, 1), "hosts": len(hosts),
            "per_host": round(self.seconds / len(hosts), 2) if hosts else None,
            "batches": len(self.batches()),
            "tasks_per_host": sorted(set(per_host.values())),
            "remote_per_host": sorted(set(self.executed_per_host(remote_only=True).values())),
            "local_wall": round(sum(s for (_name, action), s in walls.items()
                                    if action.rsplit(".", 1)[-1] in LOCAL_ACTIONS), 1),
            "host_busy_median": round(statistics.median(busy.values()), 1) if busy else None,
            "changed": sum(r["changed"] for r in self.recap.values()),
            "startup": round(self.seconds - ended, 1),
            "top_tasks": sorted(((name, s) for (name, _action), s in walls.items()), key=lambda kv: -kv[1])[:8],
            "tasks_wall": round(sum(walls.values()), 1),
        }


class Fleet:
    """N containers in groups, their inventory, and playbook runs against them."""

    def __init__(self, size: int):
        self.size = size
        self.groups: dict[str, list[str]] = {}
        counts = [int(share * size) for share, _values in GROUPS.values()]
        counts[0] += size - sum(counts)
        for group, count in zip(GROUPS, counts, strict=True):
            self.groups[group] = [f"{group}{i:02d}" for i in range(1, count + 1)]
        self.hosts = [h for members in self.groups.values() for h in members]
        self.group_of = {h: g for g, members in self.groups.items() for h in members}
        # A deep copy: the tests change a group's vars.
        self.group_vars = {g: json.loads(json.dumps(values)) for g, (_share, values) in GROUPS.items()}
        self.ports: dict[str, int] = {}
        self.inventory = WORK / "inventory"
        self.vault_pass = WORK / "vault-pass"
        self.smtp_password = hashlib.sha256(os.urandom(16)).hexdigest()[:24]
        self.runs: list[Run] = []

    # -- containers ---------------------------------------------------------------------

    def _start(self, host: str) -> None:
        proc = subprocess.run(
            ["bash", str(LAB / "container.sh"), "start", DIST, PREFIX + host, str(WORK / "hosts" / host)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"container.sh start {host} failed (rc {proc.returncode}):\n{proc.stdout}")
        self.ports[host] = int((WORK / "hosts" / host / "port").read_text())

    def start(self) -> float:
        """Start every container, the first alone (container.sh imports the image once),
        the others in parallel; return the seconds it took."""
        started = time.monotonic()
        shutil.rmtree(WORK, ignore_errors=True)
        (WORK / "hosts").mkdir(parents=True)
        self._start(self.hosts[0])
        with ThreadPoolExecutor(max_workers=len(self.hosts)) as pool:
            list(pool.map(self._start, self.hosts[1:]))
        return time.monotonic() - started

    # -- inventory ----------------------------------------------------------------------

    def write_inventory(self) -> None:
        """hosts.yml with the groups, group_vars/all (the example's settings as they are,
        the vaulted password, the lab connection), group_vars/GROUP.yml."""
        inv = self.inventory
        (inv / "group_vars" / "all").mkdir(parents=True)
        (inv / "host_vars").mkdir()

        def connection(host):
            return {"ansible_host": "127.0.0.1", "ansible_port": self.ports[host],
                    "ansible_ssh_private_key_file": str(WORK / "hosts" / host / "id_ed25519")}

        children = {group: {"hosts": {h: connection(h) for h in members}}
                    for group, members in self.groups.items()}
        self._yaml(inv / "hosts.yml", {"audit_mail_alert": {"children": children}},
                   "The fleet's hosts: systemd containers on this machine (tests/fleet).")
        shutil.copy(EXAMPLE / "group_vars" / "all" / "audit_mail_alert.yml",
                    inv / "group_vars" / "all" / "audit_mail_alert.yml")
        self._yaml(inv / "group_vars" / "all" / "lab.yml", {
            "ansible_user": "root",
            "ansible_python_interpreter": "/usr/bin/python3",
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
            "audit_mail_alert_manage_auditd": False,
        }, "Containers share this machine's kernel: files only (docs/lab.md, Scenario docker).")
        self.vault_pass.write_text(hashlib.sha256(os.urandom(16)).hexdigest() + "\n")
        self.vault_pass.chmod(0o600)
        vault = inv / "group_vars" / "all" / "vault.yml"
        self._yaml(vault, {"vault_audit_mail_alert_smtp_password": self.smtp_password})
        subprocess.run(["ansible-vault", "encrypt", "--vault-password-file", str(self.vault_pass), str(vault)],
                       stdout=subprocess.DEVNULL, check=True)
        for group in self.groups:
            self.write_group_vars(group)

    def write_group_vars(self, group: str) -> None:
        self._yaml(self.inventory / "group_vars" / f"{group}.yml", self.group_vars[group])

    def write_host_vars(self, host: str, values: dict | None) -> None:
        path = self.inventory / "host_vars" / f"{host}.yml"
        if values is None:
            path.unlink(missing_ok=True)
        else:
            self._yaml(path, values)

    @staticmethod
    def _yaml(path: Path, data, comment: str = "") -> None:
        head = f"---\n# {comment}\n" if comment else "---\n"
        path.write_text(head + yaml.safe_dump(data, sort_keys=False, default_flow_style=False))

    def batches(self) -> list[list[str]]:
        """The serial batches of deploy.yml over this inventory, as ansible builds them: the
        play's hosts in inventory order, cut into pct_to_int(serial) hosts each."""
        from ansible.inventory.manager import InventoryManager
        from ansible.parsing.dataloader import DataLoader

        play = playbook_settings()
        manager = InventoryManager(loader=DataLoader(), sources=[str(self.inventory / "hosts.yml")])
        ordered = [h.name for h in manager.get_hosts(play["hosts"], order="inventory")]
        size = serial_size(play["serial"], len(ordered))
        return [ordered[i:i + size] for i in range(0, len(ordered), size)]

    # -- runs ---------------------------------------------------------------------------

    def playbook(self, label: str, *args: str) -> Run:
        """Run playbooks/deploy.yml (the collection's own, not a copy) across the fleet."""
        logs = WORK / "runs"
        logs.mkdir(exist_ok=True)
        n = len(self.runs) + 1
        log, record = logs / f"{n:02d}-{label}.log", logs / f"{n:02d}-{label}.jsonl"
        env = dict(
            os.environ,
            ANSIBLE_COLLECTIONS_PATH=str(BUILD),
            ANSIBLE_HOME=str(BUILD / "ansible-home"),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_RETRY_FILES_ENABLED="false",
            ANSIBLE_PIPELINING="true",
            ANSIBLE_TIMEOUT="60",
            ANSIBLE_FORKS=str(max(5, len(self.batches()[0]))),
            ANSIBLE_CALLBACK_PLUGINS=str(HERE / "callback_plugins"),
            ANSIBLE_CALLBACKS_ENABLED="fleet_record",
            FLEET_RECORD=str(record),
        )
        cmd = ["ansible-playbook", "-i", str(self.inventory), "--vault-password-file",
               str(self.vault_pass), str(PLAYBOOK), *args]
        print(f"==> fleet {label}: ansible-playbook {' '.join(cmd[5:])}", flush=True)
        load = os.getloadavg()[0]
        started = time.monotonic()
        with log.open("w") as out:
            proc = subprocess.run(cmd, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=900, check=False)
        run = Run(label, cmd[5:], proc.returncode, time.monotonic() - started, log, record)
        run.load = (load, os.getloadavg()[0])
        changed = sum(r["changed"] for r in run.recap.values())
        print(f"    rc {run.rc}, {len(run.recap)} hosts, changed={changed}, {run.seconds:.1f} s",
              flush=True)
        self.runs.append(run)
        return run

    # -- what is on the hosts -----------------------------------------------------------

    def probe(self, host: str) -> dict:
        proc = subprocess.run(
            ["docker", "exec", PREFIX + host, "/usr/bin/python3", "-c", PROBE,
             json.dumps(sorted({*role_paths().values(), *package_paths()})), json.dumps(FIND_PRODUCT)],
            capture_output=True, text=True, check=True)
        return json.loads(proc.stdout)

    def probe_all(self, hosts=None) -> dict[str, dict]:
        hosts = list(hosts or self.hosts)
        with ThreadPoolExecutor(max_workers=8) as pool:
            return dict(zip(hosts, pool.map(self.probe, hosts), strict=True))

    # -- what the inventory says a host must have ---------------------------------------

    def base_settings(self) -> dict:
        """group_vars/all/audit_mail_alert.yml as the fleet's inventory holds it (the example's)."""
        return yaml.safe_load((self.inventory / "group_vars" / "all" / "audit_mail_alert.yml").read_text())

    def rules_of(self, host: str) -> list[dict]:
        extra = self.group_vars[self.group_of[host]].get("audit_mail_alert_extra_rules", [])
        return self.base_settings()["audit_mail_alert_base_rules"] + extra

    def expected_config(self, host: str) -> dict[str, dict[str, str]]:
        """The plugin config (docs/plugin.md) that the inventory describes for the host."""
        settings = {**self.base_settings(), **self.group_vars[self.group_of[host]]}
        paths = role_paths()
        config = {
            "mail": {"to": ", ".join(settings["audit_mail_alert_to"]),
                     "from": settings["audit_mail_alert_from"],
                     "transport": settings["audit_mail_alert_transport"],
                     "smtp_host": settings["audit_mail_alert_smtp_host"],
                     "smtp_port": str(settings["audit_mail_alert_smtp_port"]),
                     "smtp_tls": settings["audit_mail_alert_smtp_tls"],
                     "smtp_user": settings["audit_mail_alert_smtp_user"],
                     "smtp_password_file": paths["password_file"]},
            "limits": {"max_mails": str(settings["audit_mail_alert_max_mails"]),
                       "window": str(settings["audit_mail_alert_window"])},
            "spool": {"dir": paths["spool_dir"]},
        }
        for rule in self.rules_of(host):
            section = "rule " + re.sub(r"[^A-Za-z0-9_.-]", "_", rule["key"])
            if section in config:
                continue
            config[section] = {"keys": rule["key"]}
            for option in ("to", "max_mails", "window"):
                if option in rule:
                    value = rule[option]
                    config[section][option] = ", ".join(value) if isinstance(value, list) else str(value)
        return config

    def expected_rules(self, host: str) -> list[str]:
        return [f"{r['rule']} -k {r['key']}" if "rule" in r else
                f"-a always,exit -F path={r['path']} -F perm={r['perm']} -F key={r['key']}"
                for r in self.rules_of(host)]

    def deployment_problems(self, host: str, state: dict) -> list[str]:
        """What differs on the host from a complete deployment as the inventory says."""
        paths = role_paths()
        files = state["paths"]
        problems = []

        def check(name, mode, is_dir=False):
            entry = files[paths[name]]
            if entry is None:
                problems.append(f"{paths[name]} missing")
                return None
            if (entry["mode"], entry["uid"], entry["gid"], entry["dir"]) != (mode, 0, 0, is_dir):
                problems.append(f"{paths[name]}: mode {entry['mode']:o} uid {entry['uid']} "
                                f"gid {entry['gid']} dir {entry['dir']}, want {mode:o} root:root")
            return entry

        plugin = check("plugin_bin", 0o750)
        # the collection's program under the #! line the role writes (the plugin's interpreter)
        want = hashlib.sha256(b"#!/usr/bin/python3\n" + PLUGIN_SRC.read_bytes()).hexdigest()
        if plugin and plugin.get("sha256") != want:
            problems.append(f"{paths['plugin_bin']} is not the collection's files/audisp_mailalert.py under #!/usr/bin/python3")
        check("lib_dir", 0o755, is_dir=True)
        for installed, source in package_paths().items():
            module = files[installed]
            if module is None or (module["mode"], module["uid"], module.get("sha256")) != (
                    0o644, 0, hashlib.sha256(source.read_bytes()).hexdigest()):
                problems.append(f"{installed} is not the collection's {source.relative_to(COLLECTION)}")
        config = check("config", 0o640)
        if config:
            parser = configparser.ConfigParser(interpolation=None)
            parser.read_string(config["text"])
            got = {s: dict(parser[s]) for s in parser.sections()}
            if got != self.expected_config(host):
                problems.append(f"config {got} != expected {self.expected_config(host)}")
        password = check("password_file", 0o600)
        if password and password["text"] != self.smtp_password + "\n":
            problems.append("the password file does not hold the vaulted password")
        entry = check("plugin_conf", 0o640)
        if entry:
            conf = dict(re.findall(r"^(\w+) = (.*)$", entry["text"], re.MULTILINE))
            if (conf.get("active"), conf.get("path"), conf.get("args")) != (
                    "yes", paths["plugin_bin"], f"--config {paths['config']}"):
                problems.append(f"plugins.d entry {conf}")
        rules = check("rules_file", 0o640)
        if rules:
            lines = [ln for ln in rules["text"].splitlines() if ln and not ln.startswith("#")]
            if lines != self.expected_rules(host):
                problems.append(f"rules {lines} != expected {self.expected_rules(host)}")
        check("spool_dir", 0o700, is_dir=True)
        want_found = sorted(state["real"][paths[n]] for n in
                            ("plugin_bin", "lib_dir", "config", "password_file", "plugin_conf", "rules_file",
                             "spool_dir", "watchdog_service", "watchdog_timer"))
        if state["found"] != want_found:
            problems.append(f"product files on the host {state['found']}, want exactly {want_found}")
        return problems


def figures_text(fleet: Fleet, start_seconds: float, total_seconds: float) -> str:
    """The figures for docs/lab.md ("Fleet"), from the runs of one `make test-fleet`."""
    groups = ", ".join(f"{g} {len(m)}" for g, m in fleet.groups.items())
    head = (f"fleet of {fleet.size} containers ({groups}), batches of {len(fleet.batches()[0])};"
            f" containers started in {start_seconds:.0f} s; whole test {total_seconds:.0f} s")
    lines = [head]
    for run in fleet.runs:
        f = run.figures()
        lines.append(f"{f['label']}: {f['seconds']} s wall (rc {f['rc']}), {f['hosts']} hosts in {f['batches']} "
                     f"batches, {f['per_host']} s per host, changed={f['changed']}, tasks executed per host "
                     f"{f['tasks_per_host']} (reaching the host {f['remote_per_host']}), host busy median {f['host_busy_median']} s, task walls "
                     f"{f['tasks_wall']} s (controller-only tasks {f['local_wall']} s), start-up and exit {f['startup']} s, load average {f['load'][0]:.1f} "
                     f"before, {f['load'][1]:.1f} after")
        lines.append("    slowest tasks (wall, summed over batches): "
                     + "; ".join(f"{name} {sec:.1f} s" for name, sec in f["top_tasks"]))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] == ["teardown"]:
        teardown()
    else:
        sys.exit(__doc__)
