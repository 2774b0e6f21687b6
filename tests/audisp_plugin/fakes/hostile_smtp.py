"""An SMTP server that plays a hostile peer before TLS, for the tests of the smtp
transport's session bounds (test_smtp_bounds.py), and a good one when told.

mode (set it at any time; each new session plays the mode of its start):
- "flood": greets, reads EHLO, then sends `250-` continuation lines of 4 KB as fast as the
  client takes them, never the last line of the reply.
- "drip-greeting": sends a `220-` continuation line every DRIP_INTERVAL seconds, never the
  last one.
- "drip-ehlo": greets, reads EHLO, then sends a `250-` continuation line every
  DRIP_INTERVAL seconds, never the last one.
- "good": the in-test server of smtp_server.py (STARTTLS as configured, AUTH, delivery).

With STARTTLS all of the hostile part comes before TLS, where anyone on the path can
write it. Each hostile session is recorded in `hostile` (mode, start, end: monotonic
seconds; end when the client went away, None while it stays) and `flooded` counts the
bytes the client took. A session ends when the client closes (or at stop())."""

import select
import socket
import time

from .smtp_server import FakeSMTPServer, Session

DRIP_INTERVAL = 2.0  # seconds between two lines of a drip: shorter than any read timeout
FLOOD_LINE = b"250-" + b"x" * (4096 - 6) + b"\r\n"  # 4 KB
MAX_SESSION = 120  # seconds: a hostile session that outlives a test ends anyway


class HostileSession(Session):
    def handle(self) -> None:
        mode = self.server.mode
        if mode == "good":
            super().handle()
            return
        record = {"mode": mode, "start": time.monotonic(), "end": None}
        self.server.hostile.append(record)
        self.sock = self.request
        self.tls = False
        try:
            if mode == "drip-greeting":
                self._drip(lambda n: b"220-drip %d\r\n" % n)
            else:
                self.sock.sendall(b"220 hostile ESMTP\r\n")
                self.sock.settimeout(DRIP_INTERVAL * 5)
                self.rfile = self.sock.makefile("rb")
                if not self.rfile.readline().upper().startswith(b"EHLO"):
                    return
                if mode == "flood":
                    self._flood()
                else:
                    self._drip(lambda n: b"250-drip %d\r\n" % n)
        except OSError:
            pass  # the client went away (reset) or timed out
        finally:
            record["end"] = time.monotonic()
            self.request.close()

    def _until(self) -> float:
        return time.monotonic() + MAX_SESSION

    def _drip(self, piece) -> None:
        """piece(n) every DRIP_INTERVAL seconds, until the client goes away."""
        until = self._until()
        number, next_at = 0, time.monotonic()
        while not self.server.stopping and time.monotonic() < until:
            if time.monotonic() >= next_at:
                number += 1
                self.sock.sendall(piece(number))
                next_at = time.monotonic() + DRIP_INTERVAL
            readable, _w, _x = select.select([self.sock], [], [], max(0.0, next_at - time.monotonic()))
            if readable and not self.sock.recv(4096, socket.MSG_DONTWAIT):
                return  # EOF: the client closed

    def _flood(self) -> None:
        """4 KB lines in 64 KB writes, as fast as the client reads them."""
        chunk = memoryview(FLOOD_LINE * 16)
        self.sock.settimeout(1)
        until = self._until()
        at = 0
        while not self.server.stopping and time.monotonic() < until:
            try:
                sent = self.sock.send(chunk[at:])
            except TimeoutError:
                continue  # the client does not read: wait for it, or for stop()
            self.server.flooded += sent
            at = (at + sent) % len(chunk)


class HostileSMTPServer(FakeSMTPServer):
    handler = HostileSession

    def __init__(self, mode: str, tls: str = "none", context=None) -> None:
        self.mode = mode
        self.hostile = []  # one dict per hostile session: mode, start, end
        self.flooded = 0  # bytes of flood the clients took
        self.stopping = False
        super().__init__(tls, context)

    def stop(self) -> None:
        self.stopping = True
        super().stop()
