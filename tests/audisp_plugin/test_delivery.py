"""The delivery path, with a sendmail stand-in that keeps argv and message: explicit
recipients and -oi in an argument list, spool files written whole and removed only after
delivery, status.json, and spooled alerts that survive a failed delivery and a restart.
(Hangs, crashes and other faults: test_faults.py.)"""

import json
import os
import stat
import subprocess

from conftest import (
    PLUGIN,
    PYTHON,
    delivered,
    events_with_key,
    log_bytes,
    run_plugin,
    write_config,
)
from mailalert.spool import Spool
from polling import wait_for


def config_text(sendmail, spool, extra=""):
    return ("[mail]\nto = sec@example.com, ops@example.com\nfrom = audit@example.com\n"
            f"sendmail = {sendmail}\ntimeout = 10\n[spool]\ndir = {spool}\nretry_min = 1\nretry_max = 2\n"
            f"[limits]\nmax_mails = 100\n[rule hostile]\nkeys = amx-hostile\n{extra}")


def test_alerts_are_piped_to_sendmail_with_explicit_recipients(tmp_path, fake_sendmail):
    program, out = fake_sendmail
    spool = tmp_path / "spool"
    data = log_bytes("hostile")
    config = write_config(tmp_path, config_text(program, spool))
    result = run_plugin(["--config", config], data)
    assert result.returncode == 0, result.stderr.decode()
    mails = delivered(out)
    assert len(mails) == len(events_with_key(data, "amx-hostile"))
    for argv, message in mails:
        assert argv == ["-oi", "-f", "audit@example.com", "--",
                        "sec@example.com", "ops@example.com"]
        assert message["X-Audit-Rule"] == "hostile"
    assert sorted(m["X-Audit-Event"].split("@")[0] for _argv, m in mails) == sorted(
        f"{t}:{s}" for t, s in events_with_key(data, "amx-hostile"))
    # delivered means gone from the queue; nothing half-written is left behind
    assert os.listdir(spool / "queue") == []
    assert stat.S_IMODE(os.stat(spool).st_mode) == 0o700


def test_status_file_reports_rules_queue_and_delivery(tmp_path, fake_sendmail):
    program = fake_sendmail[0]
    spool = tmp_path / "spool"
    data = log_bytes("flood")
    config = write_config(tmp_path, config_text(
        program, spool, "[rule flood]\nkeys = amx-flood\nmax_mails = 4\nwindow = 3600\n"))
    assert run_plugin(["--config", config], data).returncode == 0
    status = json.loads((spool / "status.json").read_text())
    assert set(status) == {"pid", "updated", "rules", "queue", "last_error",
                           "last_error_permanent", "last_delivery", "bad", "unspooled",
                           "dropped", "long_lines", "tamper_suppressed", "state_reads",
                           "running", "auditd_ended", "tamper_reported"}
    assert status["queue"] == 0 and status["last_error"] is None
    # A clean end; no kernel state read outside auditd (a pipe, not auditd's socket).
    assert (status["running"], status["auditd_ended"], status["state_reads"]) == (False, False, 0)
    assert (status["bad"], status["unspooled"], status["dropped"], status["long_lines"]) == (0, 0, 0, 0)
    assert status["last_delivery"] >= status["updated"] - 60
    flood = status["rules"]["flood"]
    assert flood["keys"] == ["amx-flood"] and flood["sent"] == 4
    assert flood["held"] == 0, "the held events went into the digest at exit"
    assert flood["window_end"] > status["updated"]
    assert status["rules"]["hostile"] == {"keys": ["amx-hostile"], "window_end": None, "ignored": 0,
                                          "sent": 0, "held": 0}


def test_failed_delivery_stays_spooled_and_a_restart_delivers_it(tmp_path, fake_sendmail):
    program, out = fake_sendmail
    failing = tmp_path / "failing-sendmail"
    failing.write_text("#!/bin/sh\ncat >/dev/null\necho 'queue unavailable' >&2\nexit 75\n")
    failing.chmod(0o755)
    spool = tmp_path / "spool"
    data = log_bytes("multi-key")
    text = config_text(program, spool, "[rule multi]\nkeys = amx-second\n")

    config = write_config(tmp_path, text.replace(str(program), str(failing)))
    result = run_plugin(["--config", config], data)
    assert result.returncode == 0
    assert "exited with 75: queue unavailable" in result.stderr.decode()
    queued = os.listdir(spool / "queue")
    assert len(queued) == 1 and queued[0].endswith(".eml")
    spooled = (spool / "queue" / queued[0]).read_bytes()
    assert b"X-Audit-Key: amx-second" in spooled
    status = json.loads((spool / "status.json").read_text())
    assert status["queue"] == 1 and "queue unavailable" in status["last_error"]

    # The next start (no new input at all) finds the spooled alert and delivers it.
    config = write_config(tmp_path, text)
    assert run_plugin(["--config", config], b"").returncode == 0
    mails = delivered(out)
    assert len(mails) == 1
    assert mails[0][1].as_bytes().replace(b"\r\n", b"\n") == spooled
    assert os.listdir(spool / "queue") == []


def test_spool_files_are_complete_or_absent(tmp_path):
    spool = Spool(str(tmp_path / "spool"))
    spool.prepare()
    names = [spool.add(b"Subject: %d\n\nbody\n" % i) for i in range(5)]
    assert spool.names() == sorted(names) == names, "names sort in acceptance order"
    assert all(not n.startswith(".") for n in os.listdir(spool.queue_dir))
    assert [spool.read(n) for n in names] == [b"Subject: %d\n\nbody\n" % i for i in range(5)]
    (tmp_path / "spool" / "queue" / ".half-written.eml.tmp").write_bytes(b"Subj")
    assert spool.names() == names, "a temporary file is never taken for a message"
    spool.remove(names[0])
    assert spool.names() == names[1:]


def test_a_message_that_always_fails_does_not_block_the_others(tmp_path, fake_sendmail):
    program, out = fake_sendmail
    picky = tmp_path / "picky-sendmail"
    picky.write_text('#!/bin/sh\nfor a in "$@"; do [ "$a" = bad@example.com ] && '
                     '{ echo "user unknown" >&2; exit 67; }; done\nexec ' + str(program)
                     + ' "$@"\n')
    picky.chmod(0o755)
    spool = tmp_path / "spool"
    (spool / "queue").mkdir(parents=True)
    # the oldest file in the queue, left by an earlier run, for a recipient the MTA refuses
    poison = spool / "queue" / "00000000000000001-1-000001.eml"
    refused = b"From: a@example.com\nTo: bad@example.com\nSubject: old\n\nold\n"
    poison.write_bytes(refused)
    data = log_bytes("hostile")
    config = write_config(tmp_path, config_text(picky, spool))
    plugin = subprocess.Popen([PYTHON, str(PLUGIN), "--config", str(config)],
                              stdin=subprocess.PIPE, stderr=subprocess.PIPE, env={})
    try:
        plugin.stdin.write(data)
        plugin.stdin.flush()
        expected = len(events_with_key(data, "amx-hostile"))
        wait_for(lambda: len(delivered(out)) == expected, timeout=30)
    finally:
        plugin.stdin.close()
        assert plugin.wait(timeout=30) == 0
    assert "exited with 67: user unknown" in plugin.stderr.read().decode()
    # Refused for good (EX_NOUSER): out of the queue, kept whole in bad/, never dropped.
    assert os.listdir(spool / "queue") == []
    assert os.listdir(spool / "bad") == [poison.name]
    assert (spool / "bad" / poison.name).read_bytes() == refused
