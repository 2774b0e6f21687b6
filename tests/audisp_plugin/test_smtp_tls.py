"""The smtp transport over real TLS: the plugin (system python3, its smtplib and ssl) against
the in-test SMTP server (fakes/smtp_server.py, the stdlib's ssl on the server side), with a
throwaway CA and server certificates made by the openssl CLI.

Proven: STARTTLS and implicit TLS deliver when smtp_ca_file trusts the server's CA; with
STARTTLS nothing but EHLO and STARTTLS crosses the wire before TLS is up; a certificate from
another CA, one the system store does not know, or one for another host name is refused,
and so is a server that does not offer (or refuses) STARTTLS: then the server never sees
AUTH, MAIL or DATA, the password never crosses the wire, and the alert stays spooled.
smtp_ca_file is checked at start (exit 2 naming the key) and at SIGHUP (the old bundle
stays in force)."""

import base64
import os
import signal
import ssl
import subprocess
import threading

import pytest
from conftest import PLUGIN, PYTHON, log_bytes, run_plugin, write_config
from fakes.smtp_server import FakeSMTPServer, server_context
from mailalert.config import load_config
from pki import PKI
from polling import wait_for

PASSWORD = "tls-only s3cret"
# How the password would look on the wire: AUTH PLAIN sends base64("\0user\0password").
PASSWORD_ON_WIRE = (PASSWORD.encode(), base64.b64encode(b"\0alerts\0" + PASSWORD.encode()))
SECRET_VERBS = {"AUTH", "MAIL", "RCPT", "DATA"}
EVENTS = log_bytes("multi-key")  # one event with the key amx-multi: one alert


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def smtp_servers():
    """Start FakeSMTPServer(tls, certificate, starttls_reply); all are stopped at the end."""
    started = []

    def start(tls, cert=None, starttls_reply="220"):
        context = server_context(*cert) if cert else None
        server = FakeSMTPServer(tls, context, starttls_reply)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def smtp_config(tmp_path, port, tls, ca_file=None):
    secret = tmp_path / "pass"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    return write_config(tmp_path, (
        "[mail]\nto = sec@example.com\nfrom = audit@example.com\ntransport = smtp\n"
        f"smtp_host = localhost\nsmtp_port = {port}\nsmtp_tls = {tls}\n"
        + (f"smtp_ca_file = {ca_file}\n" if ca_file else "")
        + f"smtp_user = alerts\nsmtp_password_file = {secret}\ntimeout = 10\n"
        f"[spool]\ndir = {tmp_path / 'spool'}\n[rule r]\nkeys = amx-multi\n"))


def queued(tmp_path):
    return os.listdir(tmp_path / "spool" / "queue")


def assert_nothing_secret_in_the_clear(server):
    assert not SECRET_VERBS & set(server.verbs()), server.commands
    assert server.received == []
    for secret in PASSWORD_ON_WIRE:
        assert secret not in server.cleartext


def test_starttls_trusting_the_private_ca_delivers_and_sends_only_ehlo_in_the_clear(
        tmp_path, pki, smtp_servers):
    server = smtp_servers("starttls", pki.localhost)
    result = run_plugin(["--config", smtp_config(tmp_path, server.port, "starttls", pki.ca[0])],
                        EVENTS)
    server.stop()
    assert result.returncode == 0, result.stderr.decode()
    assert len(server.received) == 1, server.commands
    mail = server.received[0]
    assert mail["tls"] and mail["auth"] == ("alerts", PASSWORD)
    assert (mail["from"], mail["to"]) == ("audit@example.com", ["sec@example.com"])
    assert b"X-Audit-Key: amx-multi" in mail["data"]
    # Before the handshake only EHLO and STARTTLS; the login and the mail after it.
    assert server.verbs(tls=False) == ["EHLO", "STARTTLS"]
    assert SECRET_VERBS <= set(server.verbs(tls=True))
    assert server.verbs().index("STARTTLS") < min(server.verbs().index(v) for v in SECRET_VERBS)
    for secret in PASSWORD_ON_WIRE:
        assert secret not in server.cleartext
    assert server.tls_errors == []
    assert queued(tmp_path) == []


def test_implicit_tls_trusting_the_private_ca_delivers(tmp_path, pki, smtp_servers):
    server = smtp_servers("implicit", pki.localhost)
    result = run_plugin(["--config", smtp_config(tmp_path, server.port, "tls", pki.ca[0])], EVENTS)
    server.stop()
    assert result.returncode == 0, result.stderr.decode()
    assert len(server.received) == 1, server.commands
    assert server.received[0]["tls"] and server.received[0]["auth"] == ("alerts", PASSWORD)
    assert server.cleartext == b"", "with implicit TLS not one byte goes in the clear"
    assert SECRET_VERBS <= set(server.verbs(tls=True))
    assert queued(tmp_path) == []


# (server certificate, smtp_ca_file, words of the client's verification error)
REFUSED = {
    "other CA": ("rogue_localhost", "ca", "unable to get local issuer certificate"),
    "system store": ("localhost", None, "unable to get local issuer certificate"),
    "host name mismatch": ("other_name", "ca", "Hostname mismatch"),
}


@pytest.mark.parametrize("tls, server_tls", [("starttls", "starttls"), ("tls", "implicit")])
@pytest.mark.parametrize("case", sorted(REFUSED))
def test_certificate_that_does_not_verify_is_refused_and_the_alert_stays_spooled(
        tmp_path, pki, smtp_servers, case, tls, server_tls):
    cert, ca, reason = REFUSED[case]
    server = smtp_servers(server_tls, getattr(pki, cert))
    config = smtp_config(tmp_path, server.port, tls, getattr(pki, ca)[0] if ca else None)
    result = run_plugin(["--config", config], EVENTS)
    server.stop()
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    assert f"SMTP localhost:{server.port}: " in stderr
    assert "CERTIFICATE_VERIFY_FAILED" in stderr and reason in stderr, stderr
    # The plugin did connect and start the handshake, and then broke it off.
    assert len(server.tls_errors) == 1, (server.tls_errors, server.commands)
    if server_tls == "starttls":
        assert server.verbs() == ["EHLO", "STARTTLS"]
    else:
        assert server.commands == [] and server.cleartext == b""
    assert_nothing_secret_in_the_clear(server)
    assert len(queued(tmp_path)) == 1


def test_server_that_does_not_offer_starttls_gets_nothing_in_the_clear(tmp_path, pki, smtp_servers):
    server = smtp_servers("none")  # advertises AUTH PLAIN in the clear, no STARTTLS
    result = run_plugin(["--config", smtp_config(tmp_path, server.port, "starttls", pki.ca[0])],
                        EVENTS)
    server.stop()
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    assert f"SMTP localhost:{server.port}: the server does not offer STARTTLS" in stderr
    assert server.verbs()[0] == "EHLO" and set(server.verbs()) <= {"EHLO", "HELO", "QUIT"}
    assert_nothing_secret_in_the_clear(server)
    assert len(queued(tmp_path)) == 1


def test_server_that_refuses_starttls_gets_nothing_in_the_clear(tmp_path, pki, smtp_servers):
    server = smtp_servers("starttls", pki.localhost, starttls_reply="454 TLS not available")
    result = run_plugin(["--config", smtp_config(tmp_path, server.port, "starttls", pki.ca[0])],
                        EVENTS)
    server.stop()
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    assert f"SMTP localhost:{server.port}: (454, b'TLS not available')" in stderr
    assert server.verbs()[:2] == ["EHLO", "STARTTLS"]
    assert_nothing_secret_in_the_clear(server)
    assert len(queued(tmp_path)) == 1


def bad_ca_files(pki, tmp_path):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    return {
        "relative path": ("certs/ca.pem", "must be an absolute path"),
        "missing file": (tmp_path / "missing.pem", "No such file"),
        "directory": (tmp_path, "cannot load the CA bundle"),
        "not PEM": (junk, "cannot load the CA bundle"),
        "private key only": (pki.ca[1], "cannot load the CA bundle"),
        "CRL only": (pki.crl_only, "holds no certificate"),
    }


@pytest.mark.parametrize("case", ["relative path", "missing file", "directory", "not PEM",
                                  "private key only", "CRL only"])
def test_bad_smtp_ca_file_is_refused_at_start_naming_the_key(tmp_path, pki, case):
    value, words = bad_ca_files(pki, tmp_path)[case]
    config = smtp_config(tmp_path, 25, "starttls", value)
    result = run_plugin(["--config", config, "--print"], EVENTS)
    message = result.stderr.decode()
    assert result.returncode == 2, message
    assert f"bad config: {config}: [mail] smtp_ca_file: " in message
    assert words in message
    assert result.stdout == b"", "nothing may be processed with a bad config"


def test_smtp_ca_file_is_the_only_trust_and_verification_stays_on(tmp_path, pki):
    config = load_config(
        str(smtp_config(tmp_path, 25, "starttls", pki.ca[0])), [], True)
    context = config.smtp_context
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    # Exactly the bundle: its one CA, none of the system store's.
    assert context.cert_store_stats()["x509_ca"] == 1
    without = load_config(str(smtp_config(tmp_path, 25, "starttls")), [], True)
    assert without.smtp_context is None


def _drain(stream, buffer):
    for chunk in iter(lambda: stream.read1(65536), b""):
        buffer.extend(chunk)


def test_sighup_with_a_broken_bundle_keeps_the_loaded_one(tmp_path, pki, smtp_servers):
    server = smtp_servers("starttls", pki.localhost)
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(pki.ca[0].read_bytes())
    config = smtp_config(tmp_path, server.port, "starttls", bundle)
    process = subprocess.Popen([PYTHON, str(PLUGIN), "--config", str(config)], env={},
                               stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    stderr = bytearray()
    reader = threading.Thread(target=_drain, args=(process.stderr, stderr), daemon=True)
    reader.start()
    try:
        process.stdin.write(EVENTS)
        process.stdin.flush()
        wait_for(lambda: len(server.received) == 1, what="the first alert over TLS")

        bundle.write_text("not a certificate any more\n")
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: b"reload refused" in stderr, what="the refused reload")
        assert b"[mail] smtp_ca_file" in stderr
        process.stdin.write(EVENTS)  # the bundle loaded at start still verifies the server
        process.stdin.flush()
        wait_for(lambda: len(server.received) == 2, what="the second alert over TLS")
        process.stdin.close()
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join(5)
    server.stop()
    assert all(mail["tls"] for mail in server.received)
    assert queued(tmp_path) == []
