"""The `chain` fixture: every test gets a fresh real chain (realchain.py) under the host
auditd lock, and leaves the host as it found it: no plugins.d file, no rule of its own,
auditd running with its own configuration, dma's configuration and queue as they were."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from realchain import (
    AUDITD_CONF,
    COLLECTIONS,
    DMA_CONF,
    MAILBOX,
    PLUGINS_D,
    Chain,
    run,
    wait_for,
)


@pytest.fixture
def chain(host_auditd):
    """A working chain for the test's own key; everything restored afterwards."""
    for tool in ("auditctl", "ausearch", "service", "sendmail", "mailq"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (see mk/apt-packages)")
    if not Path(COLLECTIONS, "ansible_collections/linux_audit/mail_alert").is_dir():
        pytest.skip(f"no collection tree in {COLLECTIONS}: run `make collection-tree`")
    saved = {path: path.read_bytes() for path in (AUDITD_CONF, DMA_CONF)}
    # Not under tmp_path: run_as users must be able to reach the watched program.
    directory = Path(tempfile.mkdtemp(prefix="amx-modtest-"))
    directory.chmod(0o755)
    parts = Chain(directory)
    try:
        parts.write_plugins_d()
        parts.restart_auditd()
        parts.wait_plugin()
        parts.load_rule()
        parts.record_state()
        yield parts
    finally:
        for path, content in saved.items():
            if path.read_bytes() != content:
                path.write_bytes(content)
        run("chattr", "-i", MAILBOX, check=False)
        parts.delete_rule()
        PLUGINS_D.unlink(missing_ok=True)
        parts.restart_auditd()
        wait_for(lambda: not parts.plugin_pids(), what="the test plugin to stop")
        # Mail a test left in dma's queue (DEFER) is delivered now, not left behind.
        run("dma", "-q", check=False)
        shutil.rmtree(directory)
