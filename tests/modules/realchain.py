"""The parts of a real alert chain on this host: the host's auditd and kernel, the plugin
from files/ started by auditd through a plugins.d file, dma delivering to /var/mail/root,
and the modules run through `ansible localhost -m`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import polling
from host_auditd import auditd_running


def wait_for(predicate, timeout=20.0, what="condition"):
    """polling.wait_for with the chain's longer deadline and slower poll (the waits span
    auditd restarts and plugin starts)."""
    return polling.wait_for(predicate, timeout, what, interval=0.1)


ROOT = Path(__file__).resolve().parents[2]
# The program and, beside it, its package (the program imports the one beside it).
PLUGIN_SOURCE = ROOT / "files" / "audisp_mailalert.py"
PACKAGE_SOURCE = ROOT / "files" / "mailalert"
COLLECTIONS = os.environ.get("ANSIBLE_COLLECTIONS_PATH", str(ROOT / "build"))
ANSIBLE = shutil.which("ansible", path=f"{ROOT / '.venv' / 'bin'}:{os.environ.get('PATH', '')}")
PLUGINS_D = Path("/etc/audit/plugins.d/zz-audit-mail-alert-modules-test.conf")
AUDITD_CONF = Path("/etc/audit/auditd.conf")
DMA_CONF = Path("/etc/dma/dma.conf")
MAILBOX = "/var/mail/root"


def run(*argv, check=True) -> subprocess.CompletedProcess:
    result = subprocess.run([str(arg) for arg in argv], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{argv} failed ({result.returncode}): {result.stderr}")
    return result


def processes_running(program: str) -> list[int]:
    """Pids whose argv[0] or argv[1] (a script under its interpreter) is PROGRAM."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
        except OSError:
            continue
        if program.encode() in argv[:2]:
            pids.append(int(entry))
    return pids


class Chain:
    """The parts of one test's chain, and the knobs that break them."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.key = "amx-mod-" + uuid.uuid4().hex[:8]
        self.plugin = directory / "audisp-mailalert"
        self.config = directory / "audisp-mailalert.conf"
        self.spool = directory / "spool"
        self.watched = directory / "watched"
        # The collection ships the program without a #! line; the role writes one (as here).
        self.plugin.write_bytes(b"#!/usr/bin/python3\n" + PLUGIN_SOURCE.read_bytes())
        self.plugin.chmod(0o750)
        shutil.copytree(PACKAGE_SOURCE, directory / "mailalert",
                        ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy("/usr/bin/true", self.watched)
        self.write_config()

    # -- configuration
    def write_config(self, keys=None, max_mails=10, sendmail="/usr/sbin/sendmail", extra=""):
        self.config.write_text(
            f"[mail]\nto = root\ntransport = sendmail\nsendmail = {sendmail}\n{extra}"
            f"[spool]\ndir = {self.spool}\n"
            f"[rule modtest]\nkeys = {keys or self.key}\nmax_mails = {max_mails}\nwindow = 600\n")

    def write_plugins_d(self, active="yes"):
        PLUGINS_D.write_text(f"active = {active}\ndirection = out\npath = {self.plugin}\n"
                             f"type = always\nargs = --config {self.config}\nformat = string\n")

    def load_rule(self):
        run("auditctl", "-w", self.watched, "-p", "x", "-k", self.key)

    def record_state(self):
        """What the role does after it loads rules: the kernel's state becomes the deployed
        state that the plugin's tamper findings compare with."""
        run(self.plugin, "--config", self.config, "--record-state")

    def delete_rule(self):
        run("auditctl", "-W", self.watched, "-p", "x", "-k", self.key, check=False)

    # -- processes
    def restart_auditd(self):
        """Restart auditd (it starts plugins.d programs only at start) and wait until the
        kernel talks to it. Its start reloads audit.rules, which drops our rule."""
        run("service", "auditd", "restart")
        wait_for(auditd_running,
                 what="auditd to register with the kernel")

    def plugin_pids(self):
        return processes_running(str(self.plugin))

    def wait_plugin(self):
        wait_for(self.plugin_pids, what="auditd to start the plugin")
        wait_for((self.spool / "status.json").exists, what="the plugin's status.json")

    def hup_plugin(self):
        """Make the plugin reload its config, and wait until it has (status.json rewritten)."""
        status = self.spool / "status.json"
        before = status.stat().st_mtime_ns
        for pid in self.plugin_pids():
            os.kill(pid, 1)
        wait_for(lambda: status.stat().st_mtime_ns != before, what="the plugin to reload")

    def status(self) -> dict:
        return json.loads((self.spool / "status.json").read_text())

    # -- the modules, through ansible
    def module(self, name, args, check_mode=False) -> dict:
        """Run linux_audit.mail_alert.NAME on localhost; its result as a dict."""
        argv = [ANSIBLE, "localhost", "-m", f"linux_audit.mail_alert.{name}",
                "-a", json.dumps(args)] + (["--check"] if check_mode else [])
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_LOCALHOST_WARNING="0",
                   ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
        done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False,
                              timeout=300)
        # "localhost | SUCCESS => {...}" or "localhost | FAILED! => {...}"
        assert " => " in done.stdout, f"no result from ansible: {done.stdout}\n{done.stderr}"
        head, body = done.stdout.split(" => ", 1)
        result = json.loads(body)
        result["failed"] = "FAILED" in head
        return result

    def verify(self, check_mode=False, **args) -> dict:
        args = dict({"command": [str(self.watched)], "key": self.key, "timeout": 15,
                     "plugin_conf": str(PLUGINS_D)}, **args)
        return self.module("audit_alert_verify", args, check_mode=check_mode)
