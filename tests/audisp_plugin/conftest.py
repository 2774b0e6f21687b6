"""Helpers for the plugin's tests: run it as auditd does (stdin pipe, empty environment),
read what it printed or delivered as parsed mail messages."""

import email
import email.policy
import mailbox
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# AUDISP_MAILALERT_FILES names another copy of the collection's files/ (the program and
# its package) to test, e.g. an older version from `git archive REV files | tar -x -C DIR`,
# to see a test fail before a fix.
FILES = Path(os.environ.get("AUDISP_MAILALERT_FILES") or ROOT / "files")
PLUGIN = FILES / "audisp_mailalert.py"
# The in-process tests import the package (mailalert) from there.
sys.path.insert(0, str(FILES))
DATA = Path(__file__).resolve().parent / "data"
# The interpreter auditd would use: the system python3, which carries auparse.
PYTHON = "/usr/bin/python3"

# A sendmail stand-in for the delivery path's unit tests: it keeps argv and the message.
FAKE_SENDMAIL = """#!/bin/sh
out={out}
name=$(date +%s%N).$$
printf '%s\\n' "$@" > "$out/.$name.argv"
cat > "$out/.$name.eml" || exit 74
mv "$out/.$name.argv" "$out/$name.argv"
mv "$out/.$name.eml" "$out/$name.eml"
"""


def log_bytes(*names: str) -> bytes:
    """The concatenated captured logs (tests/audisp_plugin/data/NAME.log)."""
    return b"".join((DATA / (name + ".log")).read_bytes() for name in names)


def events_with_key(data: bytes, key: str, record_type: str = "SYSCALL") -> list:
    """An oracle independent of auparse: the (time, serial) of each record of that type
    whose key field names the key, quoted or inside a hex \\x01 list."""
    found = []
    hexed = key.encode().hex().upper()
    for line in data.splitlines():
        match = re.match(rb"type=(\S+) msg=audit\((\d+\.\d+):(\d+)\):.* key=(\S+)", line)
        if not match or match.group(1).decode() != record_type:
            continue
        value = match.group(4).split(b"\x1d")[0].decode()
        if value.startswith('"'):
            keys = [value.strip('"')]
        elif value == "(null)":
            keys = []
        else:
            keys = bytes.fromhex(value).decode().split("\x01")
        if key in keys or hexed in keys:
            found.append((match.group(2).decode(), int(match.group(3))))
    return found


# The captured logs end with the removal of their rules, which tamper alerts (on by
# default) would mail: the suites about alerts switch them off unless the config says
# otherwise; test_tamper*.py prove them.
ALERTS_ONLY = "[tamper]\nenabled = no\n"


def write_config(directory: Path, text: str) -> Path:
    path = directory / "mailalert.conf"
    path.write_text(text if "[tamper]" in text else text + "\n" + ALERTS_ONLY)
    return path


def run_plugin(args, stdin: bytes = b"", timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the plugin to EOF the way auditd starts it: empty environment, stdin a pipe."""
    return subprocess.run([PYTHON, str(PLUGIN)] + [str(a) for a in args], input=stdin,
                          capture_output=True, env={}, timeout=timeout, check=False)


def parse_mbox(output: bytes, tmp_path: Path) -> list:
    """The messages of --print output (mbox), parsed with the modern email policy."""
    path = tmp_path / "print.mbox"
    path.write_bytes(output)
    box = mailbox.mbox(str(path), factory=None, create=False)
    messages = [email.message_from_bytes(m.as_bytes(), policy=email.policy.default)
                for m in box]
    box.close()
    return messages


def print_messages(tmp_path: Path, config_text: str, stdin: bytes, *extra) -> list:
    """Run with --print on the config and input; assert a clean exit; the messages."""
    config = write_config(tmp_path, config_text)
    result = run_plugin(["--config", config, "--print"] + list(extra), stdin)
    assert result.returncode == 0, result.stderr.decode()
    return parse_mbox(result.stdout, tmp_path)


@pytest.fixture
def fake_sendmail(tmp_path):
    """A sendmail stand-in in tmp_path; returns (program, directory of delivered mail)."""
    out = tmp_path / "delivered"
    out.mkdir()
    program = tmp_path / "sendmail"
    program.write_text(FAKE_SENDMAIL.format(out=out))
    program.chmod(0o755)
    return program, out


def delivered(out: Path) -> list:
    """(argv, parsed message) of each mail the stand-in received, oldest first."""
    result = []
    for eml in sorted(out.glob("*.eml")):
        if eml.name.startswith("."):  # still being written (pathlib's * matches dotfiles)
            continue
        argv = eml.with_suffix(".argv").read_text().splitlines()
        result.append((argv, email.message_from_bytes(eml.read_bytes(),
                                                      policy=email.policy.default)))
    return result
