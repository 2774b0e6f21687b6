"""Fixtures of the module unit tests: a fake host (fake_host.py) and a module runner."""

from __future__ import annotations

import os
from unittest import mock

import pytest
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args
from ansible_collections.linux_audit.mail_alert.plugins.module_utils import audit_state
from ansible_collections.linux_audit.mail_alert.tests.unit.plugins.modules.fake_host import (
    AUDITD_PID,
    BINARIES,
    FakeHost,
    ModuleExit,
)


@pytest.fixture
def host(tmp_path, monkeypatch):
    fake = FakeHost(tmp_path)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(audit_state, "find_processes", fake.processes)
    monkeypatch.setattr(audit_state, "process_name",
                        lambda pid, proc="/proc": "auditd" if pid == AUDITD_PID else None)
    return fake


@pytest.fixture
def run_module(host):
    """run_module(main, args, check_mode=False) -> ModuleExit, with the host mocked."""

    def exit_json(_module, **result):
        raise ModuleExit(False, result)

    def fail_json(_module, **result):
        raise ModuleExit(True, result)

    def get_bin_path(_module, name, required=False, opt_dirs=None):
        return BINARIES.get(name)

    def run(main, args, check_mode=False):
        if check_mode:
            args = dict(args, _ansible_check_mode=True)
        with mock.patch.multiple(basic.AnsibleModule, exit_json=exit_json, fail_json=fail_json,
                                 get_bin_path=get_bin_path,
                                 run_command=lambda _module, argv, **kw: host.run_command(argv, **kw)), \
                patch_module_args(args), pytest.raises(ModuleExit) as caught:
            main()
        return caught.value

    return run
