"""Delivery to an SMTP server: STARTTLS, implicit TLS or plain, optional login, in a
session bounded in time and in the size of each reply (BoundedSMTP)."""

# Python 3.6 (RHEL 8) has no X | None in annotations: keep typing's names.
# ruff: noqa: UP045

import re
import smtplib
import socket
import ssl
import threading
from typing import Optional

from ..config import Config
from ..text import escape_text
from . import DeliveryError, envelope

# The bounds of one SMTP session (docs/plugin.md, "Spool, delivery and retries"). Each read
# and write waits at most `timeout` (smtplib's socket timeout); the whole session, from the
# connection to the end of QUIT, at most SESSION_FACTOR * timeout: a server that sends a
# line every few seconds keeps each read short and would otherwise hold the delivery
# thread as long as it likes. With STARTTLS the greeting and the EHLO reply come before
# TLS, so anyone on the path can play that server.
SESSION_FACTOR = 2
REPLY_LINE_MAX = 8192  # bytes of one reply line (smtplib's own limit; RFC 5321 says 512)
REPLY_MAX_LINES = 100  # lines of one reply (a real EHLO reply has about 10)
REPLY_MAX_BYTES = 64 << 10  # bytes of one reply, all its lines


class SessionBoundError(smtplib.SMTPException):
    """The server broke a bound of the session: a reply too long. Never a refusal of the
    message: a temporary failure, retried like a server that is down."""


class BoundedSMTP(smtplib.SMTP):
    """smtplib.SMTP whose session a server cannot stretch: a watchdog shuts the connection
    down SESSION_FACTOR * timeout after open() began (whatever it is waiting for then:
    connect, a TLS handshake, a reply, a write), and a reply longer than REPLY_MAX_LINES
    lines or REPLY_MAX_BYTES bytes ends the session (smtplib's getreply takes any number of
    continuation lines). implicit_tls: a context for TLS from the first byte (what
    smtplib.SMTP_SSL does, here under the deadline too). Call close() in any case."""

    def __init__(self, timeout: float, implicit_tls: Optional[ssl.SSLContext] = None) -> None:
        super().__init__(timeout=timeout)  # no host: not connected before open()
        self.sock = None  # what close() reads (Python 3.6 sets it only in connect)
        self.implicit_tls = implicit_tls
        self.limit = SESSION_FACTOR * timeout
        self.expired = False  # the deadline passed: the connection was shut down
        self._guard = threading.Lock()  # _shutter against the watchdog
        # A duplicate of the connection's descriptor, owned here: shutdown() through it
        # reaches the socket whatever smtplib or ssl did to theirs, and it is never reused
        # for another file while the watchdog may still use it.
        self._shutter = None  # type: Optional[socket.socket]
        self._watchdog = threading.Timer(self.limit, self._expire)
        self._watchdog.daemon = True

    def open(self, host: str, port: int) -> None:
        """Connect and read the greeting (a reply other than 220 fails, as smtplib's
        constructor would have it)."""
        self._host = host  # smtplib's name for the host a certificate must name
        self._watchdog.start()
        code, message = self.connect(host, port)
        if code != 220:
            raise smtplib.SMTPConnectError(code, message)

    def _get_socket(self, host, port, timeout):
        sock = socket.create_connection((host, port), timeout, self.source_address)
        try:
            with self._guard:
                self._shutter = socket.fromfd(sock.fileno(), sock.family, socket.SOCK_STREAM)
                if self.expired:  # the deadline passed while connecting
                    self._shutter.shutdown(socket.SHUT_RDWR)
        except OSError:
            sock.close()
            raise
        if self.implicit_tls is None:
            return sock
        return self.implicit_tls.wrap_socket(sock, server_hostname=host)

    def _expire(self) -> None:
        with self._guard:
            self.expired = True
            if self._shutter is not None:
                try:
                    self._shutter.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # not connected (any more): nothing waits on it

    def close(self) -> None:
        self._watchdog.cancel()
        with self._guard:
            if self._shutter is not None:
                self._shutter.close()
                self._shutter = None
        super().close()

    def getreply(self):
        """smtplib's getreply (the code, and the lines' texts joined by newlines), bounded:
        REPLY_LINE_MAX bytes a line, REPLY_MAX_LINES lines, REPLY_MAX_BYTES bytes."""
        if self.file is None:
            self.file = self.sock.makefile("rb")
        texts, size = [], 0
        while True:
            try:
                line = self.file.readline(REPLY_LINE_MAX + 1)
            except OSError as err:
                self.close()
                raise smtplib.SMTPServerDisconnected(f"Connection unexpectedly closed: {err}")
            if not line:
                self.close()
                raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
            size += len(line)
            if len(line) > REPLY_LINE_MAX:
                self.close()
                raise SessionBoundError(f"a reply line longer than {REPLY_LINE_MAX} bytes")
            texts.append(line[4:].strip(b" \t\r\n"))
            try:
                code = int(line[:3])
            except ValueError:
                return -1, b"\n".join(texts)  # not a reply: no continuation is read
            if line[3:4] != b"-":
                return code, b"\n".join(texts)
            if len(texts) >= REPLY_MAX_LINES or size >= REPLY_MAX_BYTES:
                self.close()
                raise SessionBoundError(f"a reply of more than {REPLY_MAX_LINES} lines or "
                                        f"{REPLY_MAX_BYTES} bytes")


def crlf(data: bytes) -> bytes:
    """The message with the CRLF line endings SMTP requires (RFC 5321 2.3.8): the spool holds
    LF, as sendmail wants it, and smtplib sends bytes unchanged. An existing CRLF stays one,
    a lone CR becomes one, as smtplib itself does for a str message."""
    return re.sub(rb"\r\n|\r|\n", b"\r\n", data)


def _reply(code: int, text: bytes) -> str:
    """A server's reply as one line: its code and its text, escaped like any server text."""
    return f"{code} {escape_text(text.decode('utf-8', 'replace'), 300)}"


def _refused_recipients(where: str, refused: dict) -> DeliveryError:
    """RCPT refused for some or all recipients ({address: (code, text)}): permanent when
    every reply is a 5xx (a 4xx, such as greylisting, may pass later)."""
    replies = "; ".join(f"{_reply(code, text)} (RCPT {address})"
                        for address, (code, text) in refused.items())
    if all(code >= 500 for code, _text in refused.values()):
        return DeliveryError(f"SMTP {where}: refused by the server: {replies}", permanent=True)
    return DeliveryError(f"SMTP {where}: recipient(s) not accepted: {replies}")


def send_smtp(config: Config, data: bytes) -> None:
    """Hand the message to an SMTP server: STARTTLS, implicit TLS or plain, optional login.
    The server's certificate and host name are verified against smtp_ca_file or the system
    store. With starttls nothing but EHLO and STARTTLS is sent before TLS is up: a server
    that does not offer it (or refuses it) fails the delivery, there is no plaintext fallback.
    The session is bounded (BoundedSMTP): past its deadline, or at a reply too long, the
    attempt fails as a temporary failure."""
    sender, recipients = envelope(data)
    where = f"{config.smtp_host}:{config.smtp_port}"
    context = None
    if config.smtp_tls != "none":
        context = config.smtp_context or ssl.create_default_context()
    server = BoundedSMTP(config.timeout, context if config.smtp_tls == "tls" else None)
    try:
        try:
            server.open(config.smtp_host, config.smtp_port)
            if config.smtp_tls == "starttls":
                try:
                    server.starttls(context=context)
                except smtplib.SMTPNotSupportedError:
                    raise DeliveryError(f"SMTP {where}: the server does not offer STARTTLS; "
                                        "nothing is sent without TLS (smtp_tls = starttls)")
            if config.smtp_user:
                server.login(config.smtp_user, config.smtp_password)
            refused = server.sendmail(sender, recipients, crlf(data))
        finally:
            try:
                server.quit()
            except (smtplib.SMTPException, OSError):
                pass
            server.close()
    except (smtplib.SMTPException, OSError) as err:  # ssl.SSLError is an OSError
        raise _failure(where, err, server)
    if refused:
        raise _refused_recipients(where, refused)


def _failure(where: str, err: Exception, server: BoundedSMTP) -> DeliveryError:
    """The DeliveryError for what smtplib raised: permanent for a 5xx to MAIL, RCPT or DATA."""
    if server.expired:  # whatever the shut connection made smtplib raise
        return DeliveryError(f"SMTP {where}: no end of the session within {server.limit:g} s "
                             f"({SESSION_FACTOR} x timeout): given up")
    if isinstance(err, SessionBoundError):
        return DeliveryError(f"SMTP {where}: the server sent {err}: given up")
    if isinstance(err, smtplib.SMTPRecipientsRefused):  # every one; some is the dict returned
        return _refused_recipients(where, err.recipients)
    if isinstance(err, (smtplib.SMTPSenderRefused, smtplib.SMTPDataError)) and err.smtp_code >= 500:
        return DeliveryError(f"SMTP {where}: refused by the server: "
                             f"{_reply(err.smtp_code, err.smtp_error)}", permanent=True)
    return DeliveryError(f"SMTP {where}: {err}")
