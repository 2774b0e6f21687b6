"""The plugin with auparse 4.2's feed errors on this machine's older auparse: auparse_feed
consumes the whole chunk, then reports EBADMSG when a line of it was no audit record (a
blank one included), as audit 4.2 does (auparse/auparse.c, consume_feed). The binding is
replaced at the auparse boundary only: everything else is the real plugin.

Usage: python3 auparse_42_feed.py FILES_DIR PLUGIN_ARGS..."""

import errno
import re
import sys

RECORD = re.compile(rb"^(?:node=\S+ )?type=\S+ msg=audit\(\d+\.\d+:\d+\):")

sys.dont_write_bytecode = True
sys.path[0] = sys.argv.pop(1)
import mailalert

mailalert.hold_signals()
from mailalert import events

real = events.auparse.AuParser


class Feed42:
    """An AuParser whose feed says EBADMSG after it consumed a chunk holding a non-record."""

    def __init__(self, *args) -> None:
        self.au = real(*args)

    def feed(self, data: bytes) -> None:
        self.au.feed(data)
        if any(not RECORD.match(line) for line in data.split(b"\n")[:-1]):
            raise OSError(errno.EBADMSG, "Bad message")

    def __getattr__(self, name):
        return getattr(self.au, name)


events.auparse.AuParser = Feed42
from mailalert.cli import main

sys.exit(main())
