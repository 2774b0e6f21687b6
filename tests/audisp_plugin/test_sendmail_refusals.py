"""The sendmail transport's exit status, told apart in the log and status.json: the sysexits
codes by which a sendmail refuses the message itself (EX_DATAERR, EX_NOUSER, EX_NOHOST) are
permanent; EX_TEMPFAIL, and EX_UNAVAILABLE that postfix's sendmail gives while its daemon is
down, are temporary. A temporary failure leaves the alert spooled for a retry; a refusal
moves it to the spool's bad/ directory. Exit status 0 is a delivery, whatever the children
sendmail leaves behind."""

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
    kept, other = ("bad", "queue") if refusal else ("queue", "bad")
    [name] = os.listdir(spool / kept)
    assert os.listdir(spool / other) == []
    status = json.loads((spool / "status.json").read_text())
    assert status["last_error"] == f"{name}: {words}"
    assert status["last_error_permanent"] is (refusal is not None)
    assert (status["queue"], status["bad"]) == ((0, 1) if refusal else (1, 0))


def test_exit_0_is_a_delivery_even_while_a_child_holds_stderr(tmp_path):
    """A sendmail that hands the message on, starts a background child that keeps its
    stderr open (a queue runner), and exits 0 within the timeout: delivered once, and
    gone from the spool. Waiting for stderr to close instead took it for a hang, and
    mailed it again at every retry."""
    out = tmp_path / "delivered"
    out.mkdir()
    sendmail = tmp_path / "sendmail"
    sendmail.write_text(f"#!/bin/sh\nname=$(date +%s%N).$$\ncat > {out}/.$name\n"
                        f"mv {out}/.$name {out}/$name.eml\nsleep 4 &\nexit 0\n")
    sendmail.chmod(0o755)
    spool = tmp_path / "spool"
    config = write_config(tmp_path, (
        f"[mail]\nsendmail = {sendmail}\ntimeout = 2\n[spool]\ndir = {spool}\n"
        "retry_min = 1\nretry_max = 1\n[rule r]\nkeys = amx-multi\n"))
    result = run_plugin(["--config", config], log_bytes("multi-key"))
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    assert "did not finish" not in stderr
    assert os.listdir(spool / "queue") == [], "delivered, so no longer spooled"
    assert len(list(out.glob("*.eml"))) == 1
    assert json.loads((spool / "status.json").read_text())["last_error"] is None
