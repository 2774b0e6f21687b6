"""The smtp transport against a small in-test SMTP server (plain, with AUTH PLAIN): envelope,
login with the password from its private file, and the message bytes as spooled. TLS is
the stdlib's own (ssl.create_default_context) and is not re-tested here."""

import base64
import email
import email.policy
import os
import socketserver
import threading

import pytest
from conftest import events_with_key, log_bytes, run_plugin, write_config


class Session(socketserver.StreamRequestHandler):
    """Just enough SMTP for smtplib: EHLO (advertising AUTH PLAIN), AUTH, MAIL, RCPT, DATA."""

    def reply(self, line):
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self):
        server = self.server
        envelope = {"from": None, "to": [], "auth": None}
        self.reply("220 test ESMTP")
        while True:
            line = self.rfile.readline()
            if not line:
                return
            command = line.decode().strip()
            verb = command.split(" ", 1)[0].upper()
            if verb == "EHLO":
                self.reply("250-test")
                self.reply("250 AUTH PLAIN")
            elif verb == "AUTH":
                user, password = base64.b64decode(command.split()[2]).split(b"\0")[1:]
                envelope["auth"] = (user.decode(), password.decode())
                self.reply("235 ok")
            elif verb == "MAIL":
                envelope["from"] = command.split(":", 1)[1].strip().strip("<>").split(">")[0]
                self.reply("250 ok")
            elif verb == "RCPT":
                envelope["to"].append(command.split(":", 1)[1].strip().strip("<>"))
                self.reply("250 ok")
            elif verb == "DATA":
                self.reply("354 go on")
                lines = []
                for raw in iter(self.rfile.readline, b""):
                    if raw == b".\r\n":
                        break
                    lines.append(raw[1:] if raw.startswith(b"..") else raw)
                server.received.append(dict(envelope, data=b"".join(lines)))
                envelope = {"from": None, "to": [], "auth": envelope["auth"]}
                self.reply("250 queued")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("250 ok")


@pytest.fixture
def smtp_server():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Session)
    server.daemon_threads = True
    server.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


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
    assert os.listdir(tmp_path / "spool" / "queue") == []


def test_unreachable_smtp_server_leaves_the_alert_spooled(tmp_path):
    config = write_config(tmp_path, (
        "[mail]\ntransport = smtp\nsmtp_host = 127.0.0.1\nsmtp_port = 9\nsmtp_tls = none\n"
        "timeout = 5\n[spool]\ndir = {}\n[rule r]\nkeys = amx-multi\n").format(tmp_path / "spool"))
    result = run_plugin(["--config", config], log_bytes("multi-key"))
    assert result.returncode == 0
    assert "SMTP 127.0.0.1:9" in result.stderr.decode()
    assert len(os.listdir(tmp_path / "spool" / "queue")) == 1
