"""Framing the input: the stream comes in chunks of any size; the sifter takes whole lines."""

from .log import Log
from .status import Status

MAX_LINE = 65536  # bytes of one record line; the kernel writes at most about 9 KB


class LineFramer:
    """Cuts the chunks read from stdin into whole lines and hands them on (`lines(bytes)`):
    a line that a chunk's end cuts waits for its rest; a line longer than MAX_LINE is dropped
    (no audit record is: a longer one, from a saved log of unknown origin, would be buffered
    whole by auparse) and counted in Status.long_lines; a NUL byte becomes ^@."""

    def __init__(self, lines, status: Status, log: Log) -> None:
        self.lines = lines
        self.status = status
        self.log = log
        self.partial = b""  # the start of a line whose end has not come yet
        self.skipping = False  # inside a line longer than MAX_LINE: drop up to its end

    def feed(self, data: bytes) -> None:
        """One chunk, as read."""
        if b"\0" in data:
            # auparse ends a record at a NUL byte, which would hide a key= after it; the
            # kernel never writes one raw, so only hostile input has it: show it as ^@.
            data = data.replace(b"\0", b"^@")
        if self.skipping:
            end = data.find(b"\n")
            if end < 0:
                return
            self.skipping = False
            data = data[end + 1:]
        last = data.rfind(b"\n")
        if last < 0:
            self._keep_partial(data)
            return
        start = 0
        if self.partial:  # the line begun in an earlier chunk ends here
            start = data.find(b"\n") + 1
            self._hand_on(self.partial + data[:start])
            self.partial = b""
        self._hand_on(data[start:last + 1])  # the chunk itself when it is all whole lines
        self._keep_partial(data[last + 1:])

    def finish(self) -> None:
        """End of input: a last line without its newline still counts."""
        if self.partial:
            self._hand_on(self.partial + b"\n")
            self.partial = b""

    def _hand_on(self, lines: bytes) -> None:
        """Hand on complete lines, leaving out those longer than MAX_LINE."""
        if len(lines) > MAX_LINE:  # else none of them can be that long
            kept = [line for line in lines.split(b"\n")[:-1] if len(line) <= MAX_LINE]
            self._count_long_lines(lines.count(b"\n") - len(kept))
            lines = b"".join(line + b"\n" for line in kept)
        if lines:
            self.lines(lines)

    def _keep_partial(self, data: bytes) -> None:
        if len(self.partial) + len(data) > MAX_LINE:
            self.partial = b""
            self.skipping = True
            self._count_long_lines(1)
        else:
            self.partial += data

    def _count_long_lines(self, count: int) -> None:
        """One log line for the first; status.json (and the log at exit) has the count."""
        if not count:
            return
        if not self.status.long_lines:
            self.log.warning(f"dropped a line longer than {MAX_LINE} bytes (no audit record is); "
                             "the others are only counted (long_lines in status.json)")
        self.status.long_lines += count
        self.status.changed = True
