"""The captured logs are not stale: on this machine's kernel and auditd, a watch with a key
is loaded, a file with a hostile name is created for real, and the plugin alerts on what
`ausearch --raw` returns for it. (Holds the host auditd lock; needs root.)"""

import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from conftest import parse_mbox, run_plugin, write_config
from polling import wait_for


def auditctl(*args):
    return subprocess.run(["auditctl", *args], capture_output=True, check=False)


def host_audit_report() -> str:
    """What a failure needs to say which hop broke: kernel status, loaded rules, log tail."""
    status = auditctl("-s").stdout.decode(errors="replace")
    rules = auditctl("-l").stdout.decode(errors="replace")
    try:
        tail = b"\n".join(Path("/var/log/audit/audit.log").read_bytes().splitlines()[-5:])
    except OSError as error:
        tail = str(error).encode()
    return (f"auditctl -s:\n{status}auditctl -l:\n{rules}"
            f"audit.log tail:\n{tail.decode(errors='replace')}")


@pytest.mark.usefixtures("host_auditd")
def test_real_event_with_hostile_name_raises_one_clean_alert(tmp_path):
    if shutil.which("auditctl") is None or auditctl("-s").returncode != 0:
        pytest.skip("the kernel's audit is not usable here (auditctl -s fails)")
    if re.search(rb"^pid 0$", auditctl("-s").stdout, re.MULTILINE):
        pytest.skip("auditd is not running, so ausearch would find nothing")
    key = "amx-test-" + uuid.uuid4().hex[:8]
    watched = tmp_path / "watched"
    watched.mkdir()
    name = b"evil\nBcc: victim@example.com =?utf-8?q?x?= \xff"  # \xff: not UTF-8
    assert auditctl("-w", str(watched), "-p", "wa", "-k", key).returncode == 0
    try:
        fd = os.open(os.path.join(os.fsencode(watched), name), os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)
    finally:
        auditctl("-W", str(watched), "-p", "wa", "-k", key)

    # The rule's own CONFIG_CHANGE events carry the key too (with auditctl's SYSCALL record,
    # key=(null)); wait for the file creation's SYSCALL record, which names the key.
    creation = re.compile(rb"^type=SYSCALL .* key=\"" + re.escape(key.encode()) + rb"\"",
                          re.MULTILINE)

    def logged():
        # --input-logs: read auditd's log even when stdin happens to be a pipe.
        found = subprocess.run(["ausearch", "--input-logs", "--raw", "-k", key],
                               stdin=subprocess.DEVNULL, capture_output=True,
                               check=False).stdout
        return found if creation.search(found) else None

    try:
        log = wait_for(logged, timeout=20, interval=0.2, what="the file creation in the log")
    except AssertionError as error:
        raise AssertionError(f"{error}\n{host_audit_report()}") from None
    config = write_config(tmp_path, f"[rule live]\nkeys = {key}\n")
    result = run_plugin(["--config", config, "--print"], log)
    assert result.returncode == 0, result.stderr.decode()
    messages = parse_mbox(result.stdout, tmp_path)
    assert len(messages) == 1
    alert = messages[0]
    assert alert["X-Audit-Key"] == key and alert["Bcc"] is None
    assert "\n" not in alert["Subject"] and alert["Subject"].startswith("[audit] " + key)
    shown = "/evil\\x0aBcc: victim@example.com =?utf-8?q?x?= \\xff"
    assert f"object:   {watched}{shown}\n" in alert.get_content()
    assert alert["X-Audit-Event"].split(":")[1].split("@")[0] in log.decode()
