"""audit_mail_alert_maintenance on a real spool directory under tmp_path, with the clocks
and the boot id fixed (see conftest.py for the module runner)."""

from __future__ import annotations

import os
import stat
from unittest import mock

import pytest
from ansible.module_utils import basic
from ansible_collections.linux_audit.mail_alert.plugins.module_utils import alert_plugin
from ansible_collections.linux_audit.mail_alert.plugins.modules import (
    audit_mail_alert_maintenance as maintenance,
)

NOW = 1795685868  # the epoch clock (time.time)
UP = 5000.25  # the boot clock (/proc/uptime)
BOOT = "7753bc49-7a4f-4b9c-ad47-65cc2f987fa6"
OTHER_BOOT = "0b7a2f4e-1c3d-4e5f-8a9b-0c1d2e3f4a5b"


@pytest.fixture
def spool(host, monkeypatch):
    """The fake host's spool directory; its owner stands for root when not run as root.
    Both clocks and the boot id are fixed."""
    monkeypatch.setattr(maintenance, "ROOT_UID", os.getuid())
    monkeypatch.setattr(maintenance.time, "time", lambda: NOW + 0.75)
    monkeypatch.setattr(alert_plugin, "read_boot_id", lambda: BOOT)
    monkeypatch.setattr(alert_plugin, "read_uptime", lambda: UP)
    return host.spool


def line(start, end, opened, until, boot=BOOT):
    return f"{start} {end} {boot} {opened:.2f} {until:.2f}\n"


def run(run_module, spool, state, check_mode=False, diff=False):
    args = {"state": state, "spool_dir": str(spool)}
    if diff:
        args["_ansible_diff"] = True
    return run_module(maintenance.main, args, check_mode=check_mode)


def marker(spool):
    return (spool / "maintenance").read_text()


def written(run_module, spool, state, **kwargs):
    outcome = run(run_module, spool, state, **kwargs)
    assert not outcome.failed, outcome.result.get("msg")
    return outcome.result


def test_started_opens_a_window_with_a_lease_of_30_seconds(run_module, spool):
    result = written(run_module, spool, "started")
    assert marker(spool) == f"{NOW} {NOW + 30} {BOOT} 5000.25 5030.25\n"
    assert result == {"changed": True, "path": str(spool / "maintenance"), "start": NOW,
                      "end": NOW + 30, "boot_id": BOOT, "opened": UP, "until": UP + 30,
                      "open": True}
    st = os.lstat(spool / "maintenance")
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.getuid()
    assert sorted(os.listdir(spool)) == ["maintenance", "queue"], "a temporary file was left"


def test_written_marker_is_what_module_utils_parses(run_module, spool):
    written(run_module, spool, "started")
    assert alert_plugin.parse_maintenance(marker(spool)) == alert_plugin.Maintenance(
        NOW, NOW + 30, BOOT, UP, UP + 30)


@pytest.mark.parametrize(("opened", "until"), [
    (UP - 20, UP + 10),  # open, 10 s of lease left
    (UP - 29.5, UP),  # the lease ends this very moment: still open
])
def test_start_in_an_open_window_keeps_start_and_renews_the_lease(run_module, spool, opened, until):
    (spool / "maintenance").write_text(line(NOW - 20, NOW + 10, opened, until))
    result = written(run_module, spool, "started")
    assert marker(spool) == line(NOW - 20, NOW + 30, opened, UP + 30)
    assert (result["start"], result["opened"], result["until"], result["open"]) == \
        (NOW - 20, opened, UP + 30, True)


def test_start_never_cuts_a_longer_lease(run_module, spool):
    (spool / "maintenance").write_text(line(NOW - 1, NOW + 40, UP - 1, UP + 40))
    result = written(run_module, spool, "started")
    assert result["changed"] is False
    assert marker(spool) == line(NOW - 1, NOW + 40, UP - 1, UP + 40)


@pytest.mark.parametrize("content", [
    line(NOW - 60, NOW - 20, UP - 60, UP - 0.01),  # lease ended a moment ago: closed
    line(NOW - 60, NOW - 20, UP - 60, UP - 40),  # closed by the role's end
    line(NOW - 5, NOW + 25, UP - 5, UP + 25, boot=OTHER_BOOT),  # of another boot
    line(NOW + 5, NOW + 35, UP + 5, UP + 35),  # opened ahead of the boot clock: not ours
    f"{NOW - 10} {NOW + 890}\n",  # the old format START END
])
def test_start_opens_a_new_window_unless_one_of_this_boot_is_open(run_module, spool, content):
    (spool / "maintenance").write_text(content)
    result = written(run_module, spool, "started")
    assert marker(spool) == line(NOW, NOW + 30, UP, UP + 30)
    assert result["changed"] is True


@pytest.mark.parametrize("content", [
    "", "garbage\n", "12 x\n", "200 100\n", "1 2 3\n", "\x00\xff",
    f"{NOW} {NOW + 30} {BOOT} {UP + 30:.2f} {UP:.2f}\n",  # OPENED after UNTIL
    f"{NOW + 30} {NOW} {BOOT} {UP:.2f} {UP + 30:.2f}\n",  # START after END
    f"{NOW} {NOW + 30} {BOOT} 5000.255 5030.25\n",  # three decimals
    f"{NOW} {NOW + 30} {BOOT.upper()} {UP:.2f} {UP + 30:.2f}\n",  # not as the kernel writes it
    f"{NOW} {NOW + 30} {BOOT} {UP:.2f} {UP + 30:.2f}\nextra\n",  # two lines
])
def test_start_replaces_a_marker_that_does_not_parse(run_module, spool, content):
    (spool / "maintenance").write_text(content)
    written(run_module, spool, "started")
    assert marker(spool) == line(NOW, NOW + 30, UP, UP + 30)


def test_ended_closes_the_window_now(run_module, spool):
    (spool / "maintenance").write_text(line(NOW - 20, NOW + 10, UP - 20, UP + 10))
    result = written(run_module, spool, "ended")
    assert result["changed"] is True and result["open"] is False
    assert marker(spool) == line(NOW - 20, NOW, UP - 20, UP)
    assert (result["end"], result["until"]) == (NOW, UP)
    again = written(run_module, spool, "ended")
    assert again["changed"] is False and marker(spool) == line(NOW - 20, NOW, UP - 20, UP)


def test_start_then_end_in_one_instant(run_module, spool):
    written(run_module, spool, "started")
    written(run_module, spool, "ended")
    assert marker(spool) == line(NOW, NOW, UP, UP)


@pytest.mark.parametrize("content", [
    line(NOW - 200, NOW - 100, UP - 200, UP - 100),  # closed
    line(NOW - 60, NOW - 30, UP - 60, UP - 0.5),  # its lease ran out
    line(NOW - 5, NOW + 25, UP - 5, UP + 25, boot=OTHER_BOOT),  # of another boot
    f"{NOW - 10} {NOW + 890}\n",  # the old format: the plugin ignores it, so does ended
])
def test_ended_never_reopens_nor_rewrites_what_is_not_open(run_module, spool, content):
    (spool / "maintenance").write_text(content)
    result = written(run_module, spool, "ended")
    assert result["changed"] is False and result["open"] is False
    assert marker(spool) == content


def test_ended_without_a_marker_writes_nothing(run_module, spool):
    result = written(run_module, spool, "ended")
    assert result["changed"] is False
    assert (result["start"], result["end"], result["boot_id"], result["opened"],
            result["until"], result["open"]) == (None, None, None, None, None, False)
    assert not (spool / "maintenance").exists()


def test_ended_leaves_no_window_ahead(run_module, spool):
    """A window opened ahead (the epoch clock went back; a marker written by hand) is
    closed now on both clocks: START <= END and OPENED <= UNTIL stay true."""
    (spool / "maintenance").write_text(line(NOW + 60, NOW + 90, UP + 60, UP + 90))
    written(run_module, spool, "ended")
    assert marker(spool) == line(NOW, NOW, UP, UP)


def test_a_link_is_replaced_never_followed(run_module, spool, tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text(line(NOW - 10, NOW + 20, UP - 10, UP + 20))
    (spool / "maintenance").symlink_to(target)
    written(run_module, spool, "started")
    assert not os.path.islink(spool / "maintenance")
    assert marker(spool) == line(NOW, NOW + 30, UP, UP + 30), "the link's target was read as the marker"
    assert target.read_text() == line(NOW - 10, NOW + 20, UP - 10, UP + 20)


def test_ended_leaves_a_link_alone(run_module, spool, tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text(line(NOW - 10, NOW + 20, UP - 10, UP + 20))
    (spool / "maintenance").symlink_to(target)
    assert written(run_module, spool, "ended")["changed"] is False
    assert os.path.islink(spool / "maintenance")
    assert target.read_text() == line(NOW - 10, NOW + 20, UP - 10, UP + 20)


def test_check_mode_writes_nothing_and_shows_the_diff(run_module, spool):
    result = written(run_module, spool, "started", check_mode=True, diff=True)
    assert result["changed"] is True and result["start"] == NOW
    assert result["diff"]["before"] == "" and result["diff"]["after"] == line(NOW, NOW + 30, UP, UP + 30)
    assert not (spool / "maintenance").exists()
    (spool / "maintenance").write_text(line(NOW - 10, NOW + 20, UP - 10, UP + 20))
    result = written(run_module, spool, "ended", check_mode=True, diff=True)
    assert result["changed"] is True and result["end"] == NOW
    assert result["diff"] == {"before": line(NOW - 10, NOW + 20, UP - 10, UP + 20),
                              "after": line(NOW - 10, NOW, UP - 10, UP),
                              "before_header": str(spool / "maintenance"),
                              "after_header": str(spool / "maintenance")}
    assert marker(spool) == line(NOW - 10, NOW + 20, UP - 10, UP + 20)


def test_no_boot_clock_is_refused(run_module, spool, monkeypatch):
    def missing():
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(alert_plugin, "read_uptime", missing)
    outcome = run(run_module, spool, "started")
    assert outcome.failed and "/proc/uptime" in outcome.result["msg"]
    assert not (spool / "maintenance").exists()


def refused(run_module, spool_dir, expect):
    outcome = run_module(maintenance.main, {"state": "started", "spool_dir": str(spool_dir)})
    assert outcome.failed, outcome.result
    assert outcome.result["msg"].startswith(f"spool_dir {spool_dir} "), outcome.result["msg"]
    assert expect in outcome.result["msg"]
    return outcome.result["msg"]


def test_missing_spool_dir_is_refused(run_module, spool):
    refused(run_module, spool / "missing", "No such file or directory")


def test_spool_dir_through_a_link_is_refused(run_module, spool, tmp_path):
    (tmp_path / "spool-link").symlink_to(spool)
    refused(run_module, tmp_path / "spool-link", "not a symbolic link")
    assert not (spool / "maintenance").exists()


@pytest.mark.parametrize("mode", [0o770, 0o702, 0o777])
def test_spool_dir_writable_by_others_is_refused(run_module, spool, mode):
    os.chmod(spool, mode)
    refused(run_module, spool, f"mode {mode:04o}")
    assert not (spool / "maintenance").exists()


def test_spool_dir_of_another_owner_is_refused(run_module, spool, monkeypatch):
    monkeypatch.setattr(maintenance, "ROOT_UID", os.getuid() + 1)
    refused(run_module, spool, f"owner uid {os.getuid()}")
    assert not (spool / "maintenance").exists()


def test_marker_that_is_a_directory_is_refused(run_module, spool):
    (spool / "maintenance").mkdir()
    outcome = run(run_module, spool, "started")
    assert outcome.failed and "is a directory" in outcome.result["msg"]


def test_not_root_is_refused(run_module, spool, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    outcome = run(run_module, spool, "started")
    assert outcome.failed and "root" in outcome.result["msg"]
    assert not (spool / "maintenance").exists()


def test_marker_gets_the_context_of_its_own_path(run_module, spool):
    """On SELinux hosts the new file takes the marker path's default context (what
    restorecon would set), so that the role's restorecon finds nothing to relabel."""
    context = ["system_u", "object_r", "audisp_mailalert_spool_t", "s0"]
    with mock.patch.object(basic.AnsibleModule, "selinux_default_context",
                           return_value=context) as default, \
            mock.patch.object(basic.AnsibleModule, "set_context_if_different",
                              return_value=True) as set_context:
        written(run_module, spool, "started")
    default.assert_called_once_with(str(spool / "maintenance"))
    tmp_path, given, _changed = set_context.call_args.args
    assert os.path.dirname(tmp_path) == str(spool) and given == context


def test_failed_rename_leaves_no_temporary_file(run_module, spool, monkeypatch):
    def refuse(*_args, **_kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(maintenance.os, "rename", refuse)
    outcome = run(run_module, spool, "started")
    assert outcome.failed and "could not write" in outcome.result["msg"]
    assert "Permission denied" in outcome.result["msg"]
    assert sorted(os.listdir(spool)) == ["queue"]
