"""auparse's feed, whose errors never stop the read path.

Since audit 4.2 auparse_feed and auparse_flush_feed report what went wrong while they
consumed the data (the Python binding raises OSError):
- EBADMSG: a line that is not an audit record (no `type=... msg=audit(...)` head; a blank
  line is one) was skipped. auparse read the rest of the data all the same and handed over
  every event in it: nothing was lost, and the records it skipped could not be events.
  The sifter's own blank line after each chunk (sifter.py) is such a line, so with 4.2
  nearly every feed reports it: it is no error, and is not logged as one.
- EIO, ENOMEM: the parser stopped; what it did not read stays in its buffer and is read
  with the next feed. Logged as an error, once per kind until a feed succeeds again.
- EINVAL: no callback, or not a feed parser: a bug of the plugin's.
auparse 3.x and 4.0/4.1 raise only when they cannot buffer the data (ENOMEM)."""

# Python 3.6 (RHEL 8) has no list[str] or X | None in annotations: keep typing's names.
# ruff: noqa: UP045

import errno
from typing import Optional

from .log import Log


class Feeder:
    """Feeds one auparse feed parser (au) and takes what it raises: the callers (the
    sifter, the timer, the end of input) go on whatever auparse says."""

    def __init__(self, au, log: Log) -> None:
        self.au = au
        self.log = log
        self.skipped = 0  # feeds in which auparse skipped a line that is no record (EBADMSG)
        self.failing: Optional[str] = None  # the error last logged, until a feed succeeds

    def feed(self, data: bytes) -> None:
        try:
            self.au.feed(data)
        except OSError as err:
            self._failed("feed", err)
        else:
            self.failing = None

    def age(self) -> None:
        try:
            self.au.feed_age_events()
        except OSError as err:
            self._failed("feed_age_events", err)

    def flush(self) -> None:
        try:
            self.au.flush_feed()
        except OSError as err:
            self._failed("flush_feed", err)

    def _failed(self, step: str, err: OSError) -> None:
        if err.errno == errno.EBADMSG:
            if not self.skipped:
                self.log.info("auparse skips lines that are no audit record and says so "
                              "(EBADMSG, audit 4.2 and later): the rest of the input is read")
            self.skipped += 1
            return
        what = f"auparse {step}: {err}"
        if what != self.failing:
            self.log.error(f"{what}; what it did not read is read with the next input")
        self.failing = what
