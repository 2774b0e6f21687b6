"""The smtp transport against the in-test SMTP server (fakes/smtp_server.py) in the clear,
with AUTH PLAIN: envelope, login with the password from its private file, and the message
bytes as spooled, with CRLF line ends (the server refuses a bare CR or LF, as a strict real
one does). TLS (STARTTLS, implicit TLS, certificate checks): test_smtp_tls.py; a real server
(aiosmtpd) and refusals: test_smtp_aiosmtpd.py."""

import email
import email.policy
import os
import smtplib

import pytest
from conftest import events_with_key, log_bytes, run_plugin, write_config
from fakes.smtp_server import FakeSMTPServer


@pytest.fixture
def smtp_server():
    server = FakeSMTPServer()
    yield server
    server.stop()


def test_alerts_are_sent_over_smtp_with_login(tmp_path, smtp_server):
    secret = tmp_path / "pass"
    secret.write_text("pa ss:w0rd\n")
    os.chmod(secret, 0o600)
    data = log_bytes("hostile")
    config = write_config(tmp_path, (
        "[mail]\nto = sec@example.com, ops@example.com\nfrom = audit@example.com\n"
        "transport = smtp\nsmtp_host = 127.0.0.1\nsmtp_port = {}\nsmtp_tls = none\n"
        "smtp_user = alerts\nsmtp_password_file = {}\ntimeout = 10\n"
        "[spool]\ndir = {}\n[limits]\nmax_mails = 100\n[rule r]\nkeys = amx-hostile\n").format(
            smtp_server.server_address[1], secret, tmp_path / "spool"))
    result = run_plugin(["--config", config], data)
    assert result.returncode == 0, result.stderr.decode()
    received = smtp_server.received
    assert len(received) == len(events_with_key(data, "amx-hostile"))
    for mail in received:
        assert mail["auth"] == ("alerts", "pa ss:w0rd")
        assert mail["from"] == "audit@example.com"
        assert mail["to"] == ["sec@example.com", "ops@example.com"]
        message = email.message_from_bytes(mail["data"], policy=email.policy.default)
        assert message["X-Audit-Key"] == "amx-hostile"
        assert message["Bcc"] is None
    assert smtp_server.refused == []
    assert os.listdir(tmp_path / "spool" / "queue") == []


@pytest.mark.parametrize("bare", [b"\n", b"\r"])
def test_the_server_refuses_a_bare_lf_or_cr_as_a_strict_one_does(smtp_server, bare):
    good = b"Subject: line ends\r\n\r\none\r\ntwo\r\n"
    with smtplib.SMTP("127.0.0.1", smtp_server.port, timeout=10) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("a@example.com", ["b@example.com"], good.replace(b"one\r\n", b"one" + bare))
        assert refused.value.smtp_code == 554
        assert client.sendmail("a@example.com", ["b@example.com"], good) == {}
    smtp_server.stop()
    assert [mail["data"] for mail in smtp_server.received] == [good]
    assert len(smtp_server.refused) == 1


def test_unreachable_smtp_server_leaves_the_alert_spooled(tmp_path):
    config = write_config(tmp_path, (
        "[mail]\ntransport = smtp\nsmtp_host = 127.0.0.1\nsmtp_port = 9\nsmtp_tls = none\n"
        "timeout = 5\n[spool]\ndir = {}\n[rule r]\nkeys = amx-multi\n").format(tmp_path / "spool"))
    result = run_plugin(["--config", config], log_bytes("multi-key"))
    assert result.returncode == 0
    assert "SMTP 127.0.0.1:9" in result.stderr.decode()
    assert len(os.listdir(tmp_path / "spool" / "queue")) == 1
