"""The smtp transport against an SMTP server that is not ours: aiosmtpd (PyPI), in the test's
python, with STARTTLS required before anything else and AUTH (user and password checked)
before MAIL, presenting a certificate of the throwaway CA (pki.py) that the plugin trusts
through smtp_ca_file. The plugin runs under the system python3, as auditd runs it.

aiosmtpd reads DATA up to each CRLF: a message with bare LF reaches it as one long line,
refused with "500 Line too long" when it is over 1001 bytes and accepted when it is shorter
(the first test shows it). So the handler refuses any CR or LF outside a CRLF itself, as
Postfix >= 3.9 does.

Proven: an alert arrives whole (the spooled file with CRLF line ends, parsing under
email.policy.strict to the same headers and body); a 5xx reply to MAIL, RCPT or DATA is
logged as "refused by the server: CODE TEXT", marked permanent in status.json and moved to
the spool's bad/ directory, while a 4xx and a server that is down are temporary and leave
the alert spooled for a retry."""

import email.policy
import json
import os
import re
import smtplib
import socket
import ssl
from email.parser import BytesParser

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from conftest import log_bytes, run_plugin, write_config
from fakes.smtp_server import server_context
from pki import PKI

USER, PASSWORD = "alerts", "aio s3cret"
BARE_CR_OR_LF = re.compile(rb"\r(?!\n)|(?<!\r)\n")
EVENTS = log_bytes("multi-key")  # one event with the key amx-multi: one alert


class Relay:
    """aiosmtpd's handler: keeps each accepted message; replies[VERB] (MAIL, RCPT or DATA),
    when set, answers that command instead of accepting. strict: refuse a bare CR or LF."""

    def __init__(self) -> None:
        self.received = []  # dicts: from, to, content (the raw bytes), tls, user
        self.replies = {}
        self.strict = True

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if "MAIL" in self.replies:
            return self.replies["MAIL"]
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if "RCPT" in self.replies:
            return self.replies["RCPT"]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.strict and BARE_CR_OR_LF.search(envelope.original_content):
            return "554 5.6.0 bare CR or LF in the message (RFC 5321 2.3.8)"
        if "DATA" in self.replies:
            return self.replies["DATA"]
        self.received.append({"from": envelope.mail_from, "to": envelope.rcpt_tos,
                              "content": envelope.original_content,
                              "tls": session.ssl is not None, "user": session.auth_data})
        return "250 OK"


def authenticator(server, session, envelope, mechanism, auth_data):
    good = (auth_data.login, auth_data.password) == (USER.encode(), PASSWORD.encode())
    return AuthResult(success=good, auth_data=auth_data.login.decode() if good else None)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def relay(pki):
    handler = Relay()
    controller = Controller(
        handler, hostname="127.0.0.1", port=free_port(), server_hostname="localhost",
        tls_context=server_context(*pki.localhost), require_starttls=True,
        auth_required=True, auth_require_tls=True, authenticator=authenticator)
    controller.start()
    handler.port = controller.port
    yield handler
    controller.stop()


@pytest.fixture
def closed_port():
    """A port bound and not listening: a connection to it is refused (the server is down)."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield holder.getsockname()[1]


def smtp_config(tmp_path, port, pki):
    secret = tmp_path / "pass"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    return write_config(tmp_path, (
        "[mail]\nto = sec@example.com, ops@example.com\nfrom = audit@example.com\n"
        f"transport = smtp\nsmtp_host = localhost\nsmtp_port = {port}\nsmtp_tls = starttls\n"
        f"smtp_ca_file = {pki.ca[0]}\nsmtp_user = {USER}\nsmtp_password_file = {secret}\n"
        f"timeout = 10\n[spool]\ndir = {tmp_path / 'spool'}\n[rule r]\nkeys = amx-multi\n"))


def queued(tmp_path):
    return sorted(os.listdir(tmp_path / "spool" / "queue"))


def status(tmp_path):
    return json.loads((tmp_path / "spool" / "status.json").read_text())


def test_aiosmtpd_alone_takes_a_short_message_with_bare_lf_so_the_handler_refuses_it(
        pki, relay):
    short = b"Subject: short\n\nbody\n"
    with smtplib.SMTP("localhost", relay.port, timeout=10) as client:
        client.starttls(context=ssl.create_default_context(cafile=str(pki.ca[0])))
        client.login(USER, PASSWORD)
        relay.strict = False
        client.sendmail("a@example.com", ["b@example.com"], short)
        assert relay.received[0]["content"] == short + b"\r\n"  # one "line", LFs and all
        relay.strict = True
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("a@example.com", ["b@example.com"], short)
    assert refused.value.smtp_code == 554 and b"bare CR or LF" in refused.value.smtp_error
    assert len(relay.received) == 1


def test_alert_over_starttls_and_auth_arrives_whole(tmp_path, pki, relay, closed_port):
    # First the server is down: the alert stays spooled, and the test has the file.
    result = run_plugin(["--config", smtp_config(tmp_path, closed_port, pki)], EVENTS)
    assert result.returncode == 0, result.stderr.decode()
    [name] = queued(tmp_path)
    spooled = (tmp_path / "spool" / "queue" / name).read_bytes()
    assert b"\r" not in spooled, "the spool keeps LF, as sendmail wants it"

    # The next start delivers that file to the real server.
    result = run_plugin(["--config", smtp_config(tmp_path, relay.port, pki)], b"")
    assert result.returncode == 0, result.stderr.decode()
    assert queued(tmp_path) == [], result.stderr.decode()
    [mail] = relay.received
    assert mail["tls"] and mail["user"] == USER
    assert (mail["from"], mail["to"]) == ("audit@example.com", ["sec@example.com", "ops@example.com"])
    assert mail["content"] == spooled.replace(b"\n", b"\r\n")
    parse = BytesParser(policy=email.policy.strict).parsebytes  # raises on any defect
    arrived, original = parse(mail["content"]), parse(spooled)
    assert arrived.items() == original.items()
    assert arrived["X-Audit-Key"] == "amx-multi"
    assert arrived.get_content().splitlines() == original.get_content().splitlines()
    assert status(tmp_path)["queue"] == 0


MULTILINE = "554-5.7.1 refused by policy\r\n554 5.7.1 see https://example.com/why"
# case: (the command answered, the server's reply, words in the log, permanent)
REPLIES = {
    "5xx at MAIL": ("MAIL", "553 5.7.1 sender not allowed",
                    "refused by the server: 553 5.7.1 sender not allowed", True),
    "5xx at RCPT": ("RCPT", "550 5.1.1 no such user",
                    ("refused by the server: 550 5.1.1 no such user (RCPT sec@example.com); "
                     "550 5.1.1 no such user (RCPT ops@example.com)"), True),
    # A multi-line reply becomes one line, its line break escaped (in the log once more).
    "5xx at DATA": ("DATA", MULTILINE,
                    ("refused by the server: 554 5.7.1 refused by policy\\x0a"
                     "5.7.1 see https://example.com/why"), True),
    "4xx at RCPT": ("RCPT", "450 4.2.0 greylisted",
                    "recipient(s) not accepted: 450 4.2.0 greylisted (RCPT sec@example.com)",
                    False),
    "4xx at DATA": ("DATA", "451 4.3.0 try again later",
                    "(451, b'4.3.0 try again later')", False),
}


@pytest.mark.parametrize("case", sorted(REPLIES))
def test_a_5xx_is_a_permanent_refusal_and_a_4xx_is_temporary(tmp_path, pki, relay, case):
    verb, reply, words, permanent = REPLIES[case]
    relay.replies[verb] = reply
    result = run_plugin(["--config", smtp_config(tmp_path, relay.port, pki)], EVENTS)
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    assert f"SMTP localhost:{relay.port}: {words}".replace("\\", "\\\\") in stderr
    assert ("refused by the server" in stderr) == permanent
    assert relay.received == []
    # refused for good: kept in bad/; else kept in the queue for a retry
    kept, other = ("bad", "queue") if permanent else ("queue", "bad")
    [name] = os.listdir(tmp_path / "spool" / kept)
    assert os.listdir(tmp_path / "spool" / other) == []
    found = status(tmp_path)
    assert found["last_error"].startswith(f"{name}: SMTP localhost:{relay.port}: {words}")
    assert found["last_error_permanent"] is permanent
    assert (found["queue"], found["bad"]) == ((0, 1) if permanent else (1, 0))


def test_a_server_that_is_down_is_a_temporary_failure(tmp_path, pki, closed_port):
    result = run_plugin(["--config", smtp_config(tmp_path, closed_port, pki)], EVENTS)
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    assert f"SMTP localhost:{closed_port}: " in stderr and "refused by the server" not in stderr
    assert len(queued(tmp_path)) == 1
    found = status(tmp_path)
    assert "Connection refused" in found["last_error"]
    assert found["last_error_permanent"] is False
