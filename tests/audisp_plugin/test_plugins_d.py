"""plugins_d on its own: which files of plugins.d auditd reads, and whether an active entry
runs the program; and TamperWatch's judgement of the plugin's end by that entry."""

import os
import time

import pytest
from conftest import run_plugin, write_config
from mailalert.plugins_d import counted, entry_active
from mailalert.spool import Spool
from mailalert.status import Status
from mailalert.tamper_watch import TamperWatch


class Log:
    def __init__(self) -> None:
        self.lines = []

    def info(self, message: str) -> None:
        self.lines.append(message)

    error = warning = info


@pytest.fixture
def auditd_conf(tmp_path):
    directory = tmp_path / "plugins.d"
    directory.mkdir()
    conf = tmp_path / "auditd.conf"
    conf.write_text(f"# test\nlog_file = /var/log/audit/audit.log\nplugin_dir = {directory}\n")
    return conf, directory


def entry(directory, name, path, active="yes"):
    (directory / name).write_text(f"active = {active}\ndirection = out\npath = {path}\ntype = always\n")


@pytest.mark.parametrize("name, read", [
    ("mailalert.conf", True), ("mailalert", True), (".mailalert.conf", False),
    ("mailalert.conf.bak", False), ("mailalert.disabled", False)])
def test_the_files_auditd_reads(name, read):
    assert counted(name) is read


def test_an_active_entry_naming_the_program(auditd_conf, tmp_path):
    conf, directory = auditd_conf
    program = tmp_path / "audisp-mailalert"
    program.write_text("")
    os.symlink(program, tmp_path / "link")
    entry(directory, "other.conf", "/sbin/audisp-remote")
    assert entry_active(str(program), str(conf)) is False
    entry(directory, "mailalert.conf", tmp_path / "link")
    assert entry_active(str(program), str(conf)) is True
    entry(directory, "mailalert.conf", program, active="no")
    assert entry_active(str(program), str(conf)) is False
    (directory / "mailalert.conf").rename(directory / "mailalert.conf.save")
    entry(directory, "mailalert.conf.save", program)
    assert entry_active(str(program), str(conf)) is False


def test_an_unreadable_plugin_dir_is_unknown(tmp_path):
    conf = tmp_path / "auditd.conf"
    conf.write_text(f"plugin_dir = {tmp_path / 'missing'}\n")
    assert entry_active("/sbin/audisp-mailalert", str(conf)) is None


def watch(tmp_path, log):
    tamper = TamperWatch(lambda finding: None, Spool(str(tmp_path / "spool")), Status(), False, True, log)
    return tamper


@pytest.mark.parametrize("entry_state, reconfigured, finding", [
    (True, False, None), (False, False, "plugin-stopped"), (None, False, "plugin-stopped"),
    (None, True, None), (False, True, "plugin-stopped")])
@pytest.mark.parametrize("by_signal", [True, False], ids=["sigterm-from-auditd", "input-closed"])
def test_auditd_ending_the_plugin_is_a_reload_while_its_entry_is_active(
        tmp_path, entry_state, reconfigured, finding, by_signal):
    log = Log()
    tamper = watch(tmp_path, log)
    if reconfigured:
        tamper.reconfigured = time.monotonic()
    stop = (os.getppid(), 0) if by_signal else None
    found = tamper._end_finding(stop, 0.0, entry_state)
    assert (found.kind if found else None) == finding
    if finding is None:
        assert any("a reload" in line for line in log.lines)


def test_sigterm_from_anyone_else_is_a_finding_whatever_the_entry(tmp_path):
    found = watch(tmp_path, Log())._end_finding((1, 0), 0.0, True)
    assert found.kind == "plugin-stopped" and "other than auditd" in found.what[0]


def test_auditds_reconfigure_record_is_read_and_is_no_finding(tmp_path):
    record = (b"type=DAEMON_CONFIG msg=audit(1795686400.000:901): op=reconfigure state=changed "
              b"auid=0 pid=812 subj=unconfined res=success\n")
    config = write_config(tmp_path, "[rule r]\nkeys = amx-flood\n[tamper]\nenabled = yes\n")
    result = run_plugin(["--config", config, "--print"], record)
    assert result.returncode == 0 and result.stdout == b""
    assert b"auditd reloaded its configuration (DAEMON_CONFIG op=reconfigure)" in result.stderr
