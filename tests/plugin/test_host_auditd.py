"""The captured logs are not stale: on this machine's kernel and auditd, a watch with a key
is loaded, a file with a hostile name is created for real, and the plugin alerts on what
`ausearch --raw` returns for it. (Holds the host auditd lock; needs root.)"""

import os
import re
import shutil
import subprocess
import uuid

import pytest
from conftest import parse_mbox, run_plugin, write_config
from polling import wait_for


def auditctl(*args):
    return subprocess.run(["auditctl", *args], capture_output=True, check=False)


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

    def logged():
        found = subprocess.run(["ausearch", "--raw", "-k", key], capture_output=True,
                               check=False).stdout
        return found if b"type=SYSCALL" in found else None

    log = wait_for(logged, timeout=20, interval=0.2)
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
