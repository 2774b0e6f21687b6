"""The sendmail transport's exit status, told apart in the log and status.json: the sysexits
codes by which a sendmail refuses the message itself (EX_DATAERR, EX_NOUSER, EX_NOHOST) are
permanent; EX_TEMPFAIL, and EX_UNAVAILABLE that postfix's sendmail gives while its daemon is
down, are temporary. Either way the alert stays spooled for a retry."""

import json
import os

import pytest
from conftest import log_bytes, run_plugin, write_config

# exit status: (its sysexits name when it is a refusal, else None)
EXITS = {65: "EX_DATAERR", 67: "EX_NOUSER", 68: "EX_NOHOST", 69: None, 75: None}


@pytest.mark.parametrize("code", sorted(EXITS))
def test_a_refusing_exit_status_is_permanent_and_the_rest_temporary(tmp_path, code):
    sendmail = tmp_path / "sendmail"
    sendmail.write_text(f"#!/bin/sh\ncat >/dev/null\necho 'no go' >&2\nexit {code}\n")
    sendmail.chmod(0o755)
    spool = tmp_path / "spool"
    config = write_config(tmp_path, (
        f"[mail]\nsendmail = {sendmail}\ntimeout = 10\n[spool]\ndir = {spool}\n"
        "[rule r]\nkeys = amx-multi\n"))
    result = run_plugin(["--config", config], log_bytes("multi-key"))
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    refusal = EXITS[code]
    words = f"{sendmail} exited with {code}: no go" + (
        f" ({refusal}: refused, a permanent failure)" if refusal else "")
    assert words + "\n" in stderr
    [name] = os.listdir(spool / "queue")
    status = json.loads((spool / "status.json").read_text())
    assert status["last_error"] == f"{name}: {words}"
    assert status["last_error_permanent"] is (refusal is not None)
