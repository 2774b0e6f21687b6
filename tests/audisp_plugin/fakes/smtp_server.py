"""An SMTP server for the smtp transport's tests: just enough SMTP for smtplib (EHLO,
STARTTLS, AUTH PLAIN, MAIL, RCPT, DATA, QUIT), in the clear, with STARTTLS or with implicit
TLS (the stdlib's ssl on the server side).

It records every command with whether TLS was up when it arrived, every byte that came in
the clear, and every failed TLS handshake, so that a test can prove what was, and what was
not, sent without TLS. Like a strict real server (Postfix >= 3.9) it refuses, with a 554 at
the end of DATA, a message holding a CR or LF that is not part of a CRLF. Call stop() before
reading the records: it waits for the sessions to end.
"""

import base64
import socketserver
import ssl
import threading

SESSION_TIMEOUT = 10  # seconds a session waits for the client before it gives up


class Session(socketserver.BaseRequestHandler):
    """One SMTP session. EHLO advertises AUTH PLAIN always (even in the clear, as a careless
    server would, so that a client that logs in before TLS is caught) and STARTTLS when the
    server offers it and TLS is not up yet."""

    def handle(self) -> None:
        self.tls = False
        self.sock = self.request
        self.sock.settimeout(SESSION_TIMEOUT)
        self.rfile = self.wfile = None
        try:
            if self.server.tls != "implicit" or self._start_tls():
                self._dialogue()
        finally:
            for stream in (self.rfile, self.wfile, self.sock):
                if stream is not None:
                    stream.close()

    def _dialogue(self) -> None:
        server = self.server
        if self.rfile is None:
            self._open()
        envelope = {"from": None, "to": [], "auth": None}
        self.reply("220 test ESMTP")
        while True:
            line = self.readline()
            if not line:
                return
            command = line.decode("ascii", "replace").strip()
            verb = command.split(" ", 1)[0].upper()
            server.commands.append((verb, self.tls))
            if verb == "EHLO":
                self.reply("250-test")
                if server.tls == "starttls" and not self.tls:
                    self.reply("250-STARTTLS")
                self.reply("250 AUTH PLAIN")
            elif verb == "STARTTLS":
                if server.starttls_reply != "220":
                    self.reply(server.starttls_reply)
                    continue
                self.reply("220 ready to start TLS")
                if not self._start_tls():
                    return
                envelope = {"from": None, "to": [], "auth": None}  # RFC 3207: forget it all
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
                lines, bare = [], None
                for number, raw in enumerate(iter(self.readline, b""), 1):
                    if raw == b".\r\n":
                        break
                    # As strict as Postfix >= 3.9: CR and LF only as CRLF (RFC 5321 2.3.8).
                    if bare is None and (not raw.endswith(b"\r\n") or b"\r" in raw[:-2]):
                        bare = number
                    lines.append(raw[1:] if raw.startswith(b"..") else raw)
                if bare is not None:
                    server.refused.append(dict(envelope, data=b"".join(lines), tls=self.tls))
                    self.reply(f"554 5.6.0 bare CR or LF in line {bare} of the message")
                else:
                    server.received.append(dict(envelope, data=b"".join(lines), tls=self.tls))
                    self.reply("250 queued")
                envelope = {"from": None, "to": [], "auth": envelope["auth"]}
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("250 ok")

    def _start_tls(self) -> bool:
        """The server side of the handshake. False (and the error recorded) when it fails,
        as it does when the client refuses the certificate."""
        for stream in (self.rfile, self.wfile):
            if stream is not None:
                stream.close()
        self.rfile = self.wfile = None
        try:
            self.sock = self.server.context.wrap_socket(self.sock, server_side=True)
        except (ssl.SSLError, OSError) as err:
            self.server.tls_errors.append(str(err))
            self.sock = None  # closed by the failed wrap
            return False
        self.tls = True
        self._open()
        return True

    def _open(self) -> None:
        self.rfile = self.sock.makefile("rb")
        self.wfile = self.sock.makefile("wb", buffering=0)

    def readline(self) -> bytes:
        line = self.rfile.readline()
        if not self.tls:
            self.server.cleartext.extend(line)
        return line

    def reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")


class FakeSMTPServer(socketserver.ThreadingTCPServer):
    """Listens on 127.0.0.1 (a free port) from construction until stop().

    tls: "none" (no STARTTLS offered), "starttls" (offered; the reply to it is
    starttls_reply, "220" to go ahead) or "implicit" (TLS from the first byte). context: the
    server's ssl.SSLContext, with its certificate loaded."""

    daemon_threads = False
    block_on_close = True  # server_close() waits for the sessions: the records are complete
    handler = Session  # a subclass may play another server (fakes/hostile_smtp.py)

    def __init__(self, tls: str = "none", context=None, starttls_reply: str = "220") -> None:
        super().__init__(("127.0.0.1", 0), self.handler)
        self.tls = tls
        self.context = context
        self.starttls_reply = starttls_reply
        self.commands = []  # (VERB, TLS was up) of every command, in order
        self.cleartext = bytearray()  # every byte received before TLS was up
        self.tls_errors = []  # the server side's message of each failed handshake
        self.received = []  # one dict per message: from, to, auth, data, tls
        self.refused = []  # the same for each message refused for a bare CR or LF
        self._stopped = False
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self.server_address[1]

    def verbs(self, tls=None) -> list:
        """The commands received (only those with TLS up, or down, when tls is given)."""
        return [verb for verb, up in self.commands if tls is None or up == tls]

    def stop(self) -> None:
        """Stop listening and wait until every session has ended (at QUIT, at the client's
        disconnect, or after SESSION_TIMEOUT)."""
        if self._stopped:
            return
        self._stopped = True
        self.shutdown()
        self.server_close()
        self._thread.join()


def server_context(cert, key) -> ssl.SSLContext:
    """A server-side TLS context presenting the certificate (PEM files)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    return context
