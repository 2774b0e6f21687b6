"""audit_mail_alert_maintenance on a real spool directory under tmp_path, with the clock
fixed (see conftest.py for the module runner)."""

from __future__ import annotations

import os
import stat
from unittest import mock

import pytest
from ansible.module_utils import basic
from ansible_collections.linux_audit.mail_alert.plugins.modules import (
    audit_mail_alert_maintenance as maintenance,
)

NOW = 1795685868


@pytest.fixture
def spool(host, monkeypatch):
    """The fake host's spool directory; its owner stands for root when not run as root."""
    monkeypatch.setattr(maintenance, "ROOT_UID", os.getuid())
    monkeypatch.setattr(maintenance.time, "time", lambda: NOW + 0.75)
    return host.spool


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


def test_started_opens_a_window_of_900_seconds(run_module, spool):
    result = written(run_module, spool, "started")
    assert result["changed"] is True
    assert marker(spool) == f"{NOW} {NOW + 900}\n"
    assert result == {"changed": True, "path": str(spool / "maintenance"), "start": NOW,
                      "end": NOW + 900, "open": True}
    st = os.lstat(spool / "maintenance")
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.getuid()
    assert sorted(os.listdir(spool)) == ["maintenance", "queue"], "a temporary file was left"


def test_second_start_keeps_the_open_window(run_module, spool):
    (spool / "maintenance").write_text(f"{NOW - 60} {NOW - 60 + 900}\n")
    result = written(run_module, spool, "started")
    assert result["changed"] is False
    assert (result["start"], result["end"]) == (NOW - 60, NOW + 840)


@pytest.mark.parametrize(("content", "kept"), [
    (f"{NOW - 60} {NOW - 3}\n", True),  # ended 3 s ago: within the plugin's grace, still open
    (f"{NOW - 600} {NOW - 6}\n", False),  # ended 6 s ago: closed
    (f"{NOW - 901} {NOW + 100}\n", False),  # START + 900 has passed: the plugin ignores the rest
    (f"{NOW + 60} {NOW + 960}\n", False),  # START in the future (the clock went back)
])
def test_start_keeps_start_only_while_the_window_is_open(run_module, spool, content, kept):
    (spool / "maintenance").write_text(content)
    result = written(run_module, spool, "started")
    start = int(content.split()[0]) if kept else NOW
    assert marker(spool) == f"{start} {start + 900}\n"
    assert result["changed"] is True


@pytest.mark.parametrize("content", ["", "garbage\n", "12 x\n", "200 100\n", "1 2 3\n", "\x00\xff"])
def test_start_replaces_a_marker_that_does_not_parse(run_module, spool, content):
    (spool / "maintenance").write_text(content)
    written(run_module, spool, "started")
    assert marker(spool) == f"{NOW} {NOW + 900}\n"


def test_ended_closes_the_window_now(run_module, spool):
    written(run_module, spool, "started")
    result = written(run_module, spool, "ended")
    assert result["changed"] is True and result["open"] is False
    assert marker(spool) == f"{NOW} {NOW}\n"
    again = written(run_module, spool, "ended")
    assert again["changed"] is False and marker(spool) == f"{NOW} {NOW}\n"


def test_ended_never_widens_a_closed_window(run_module, spool):
    (spool / "maintenance").write_text(f"{NOW - 200} {NOW - 100}\n")
    result = written(run_module, spool, "ended")
    assert result["changed"] is False
    assert marker(spool) == f"{NOW - 200} {NOW - 100}\n"
    assert (result["start"], result["end"], result["open"]) == (NOW - 200, NOW - 100, False)


def test_ended_without_a_marker_writes_nothing(run_module, spool):
    result = written(run_module, spool, "ended")
    assert result["changed"] is False
    assert (result["start"], result["end"], result["open"]) == (None, None, False)
    assert not (spool / "maintenance").exists()


def test_ended_leaves_no_window_ahead_after_the_clock_went_back(run_module, spool):
    (spool / "maintenance").write_text(f"{NOW + 60} {NOW + 960}\n")
    written(run_module, spool, "ended")
    assert marker(spool) == f"{NOW} {NOW}\n"


def test_a_link_is_replaced_never_followed(run_module, spool, tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text(f"{NOW - 10} {NOW + 890}\n")
    (spool / "maintenance").symlink_to(target)
    written(run_module, spool, "started")
    assert not os.path.islink(spool / "maintenance")
    assert marker(spool) == f"{NOW} {NOW + 900}\n", "the link's target was read as the marker"
    assert target.read_text() == f"{NOW - 10} {NOW + 890}\n"


def test_ended_leaves_a_link_alone(run_module, spool, tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text(f"{NOW - 10} {NOW + 890}\n")
    (spool / "maintenance").symlink_to(target)
    assert written(run_module, spool, "ended")["changed"] is False
    assert os.path.islink(spool / "maintenance")
    assert target.read_text() == f"{NOW - 10} {NOW + 890}\n"


def test_check_mode_writes_nothing_and_shows_the_diff(run_module, spool):
    result = written(run_module, spool, "started", check_mode=True, diff=True)
    assert result["changed"] is True and result["start"] == NOW
    assert result["diff"]["before"] == "" and result["diff"]["after"] == f"{NOW} {NOW + 900}\n"
    assert not (spool / "maintenance").exists()
    (spool / "maintenance").write_text(f"{NOW - 60} {NOW + 840}\n")
    result = written(run_module, spool, "ended", check_mode=True, diff=True)
    assert result["changed"] is True and result["end"] == NOW
    assert result["diff"] == {"before": f"{NOW - 60} {NOW + 840}\n", "after": f"{NOW - 60} {NOW}\n",
                              "before_header": str(spool / "maintenance"),
                              "after_header": str(spool / "maintenance")}
    assert marker(spool) == f"{NOW - 60} {NOW + 840}\n"


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
