"""Sifting the audit stream: only the records of events that may match reach auparse.

auparse groups records into events by their time stamp (node, seconds, milliseconds,
serial) and ends an event at a record of a "last record" type (EOE, PROCTITLE, the
single-record user and daemon types), or when a record at least EOE_TIMEOUT seconds
newer is added (or at feed_age_events, or flush_feed). The sifter groups the same way,
with the same rules (save where auparse 3.0.9 splits an event: LAST_RECORD_TYPES; the
sifter feeds it whole), so that auparse gets every record of every event that holds a
candidate record (a key field that may hold a watched key, or a type of
ALWAYS_CANDIDATE_TYPES), each event's records in stream order, and nothing else in the
common case.

Most of the stream is cut with one regex in C: a run of events whose records are
contiguous, end with a last-record type and hold no candidate line is dropped whole.
What that regex cannot vouch for (records of events interleaved with others, an event
that does not end, a line that is not a plain record) goes line by line through the
exact grouping below; a line that cannot be read as a record is fed as it is.

key_pattern builds the scan of the keys; mark_candidates is the reference path's scan
(every line fed to auparse)."""

# Python 3.6 (RHEL 8) has no list[str] or X | None in annotations: keep typing's names.
# ruff: noqa: UP006, UP035, UP045

import re
from bisect import bisect_left
from collections import OrderedDict
from typing import List, Optional

from .config import Rule
from .tamper import TAMPER_TYPES

EOE_TIMEOUT = 1  # seconds after which auparse completes an event that got no EOE record
# A record's time stamp: "[node=N ]type=T msg=audit(SEC.MILLI:SERIAL):" (N, SEC, MILLI, SERIAL)
SERIAL_RE = re.compile(rb"(?:node=(\S+) )?type=\S+ msg=audit\((\d+)\.(\d+):(\d+)\)")
# Events holding a record of one of these types always reach auparse, whatever their key:
# the tamper rule's records (extend TAMPER_TYPES to add one).
ALWAYS_CANDIDATE_TYPES = tuple(kind.encode() for kind in TAMPER_TYPES)


# The record types after which auparse 3.0.9 ends an event at once (probed by feeding it
# each type it knows followed by a second record of the same time stamp). It ends an event
# at the record just added when its type is EOE, PROCTITLE, KERNEL, a NetLabel type
# (MAC_UNLBL_ALLOW to MAC_CALIPSO_DEL), 2100 or above, or below 1300: LOGIN, USER, and every
# type whose name it does not know (a newer node's LANDLOCK_ACCESS reads as -1). A record of
# such a type that comes before the last record of its time stamp splits the event: auparse
# hands over the records up to it as one event and the rest as another event of the same
# time stamp (the kernel logs LOGIN before the SYSCALL record of its write). The sifter
# does not split: it ends its groups at this list only, and LOGIN (which newer auparse
# versions no longer end at) and the names it cannot know are not on it, so it feeds a
# split event whole; each part is an event of its own to match, and a part without the
# candidate record does not use the mark up (Candidates). A type missing here costs speed
# in the sifter (its group waits for EOE or the timeout); one too many would end a group
# whose later records auparse still adds to the event.
LAST_RECORD_TYPES = frozenset(b"""
    EOE PROCTITLE KERNEL USER USER_AUTH USER_ACCT USER_MGMT CRED_ACQ CRED_DISP USER_START
    USER_END USER_AVC USER_CHAUTHTOK USER_ERR CRED_REFR USYS_CONFIG USER_LOGIN USER_LOGOUT
    ADD_USER DEL_USER ADD_GROUP DEL_GROUP DAC_CHECK CHGRP_ID TEST TRUSTED_APP
    USER_SELINUX_ERR USER_CMD USER_TTY CHUSER_ID GRP_AUTH SYSTEM_BOOT SYSTEM_SHUTDOWN
    SYSTEM_RUNLEVEL SERVICE_START SERVICE_STOP GRP_MGMT GRP_CHAUTHTOK MAC_CHECK ACCT_LOCK
    ACCT_UNLOCK USER_DEVICE SOFTWARE_UPDATE DAEMON_START DAEMON_END DAEMON_ABORT
    DAEMON_CONFIG DAEMON_ROTATE DAEMON_RESUME DAEMON_ACCEPT DAEMON_CLOSE DAEMON_ERR
    MAC_UNLBL_ALLOW MAC_CIPSOV4_ADD MAC_CIPSOV4_DEL MAC_MAP_ADD MAC_MAP_DEL MAC_IPSEC_ADDSA
    MAC_IPSEC_DELSA MAC_IPSEC_ADDSPD MAC_IPSEC_DELSPD MAC_IPSEC_EVENT MAC_UNLBL_STCADD
    MAC_UNLBL_STCDEL MAC_CALIPSO_ADD MAC_CALIPSO_DEL ANOM_LOGIN_FAILURES ANOM_LOGIN_TIME
    ANOM_LOGIN_SESSIONS ANOM_LOGIN_ACCT ANOM_LOGIN_LOCATION ANOM_MAX_DAC ANOM_MAX_MAC
    ANOM_AMTU_FAIL ANOM_RBAC_FAIL ANOM_RBAC_INTEGRITY_FAIL ANOM_CRYPTO_FAIL ANOM_ACCESS_FS
    ANOM_EXEC ANOM_MK_EXEC ANOM_ADD_ACCT ANOM_DEL_ACCT ANOM_MOD_ACCT ANOM_ROOT_TRANS
    ANOM_LOGIN_SERVICE ANOM_LOGIN_ROOT ANOM_ORIGIN_FAILURES ANOM_SESSION RESP_ANOMALY
    RESP_ALERT RESP_KILL_PROC RESP_TERM_ACCESS RESP_ACCT_REMOTE RESP_ACCT_LOCK_TIMED
    RESP_ACCT_UNLOCK_TIMED RESP_ACCT_LOCK RESP_TERM_LOCK RESP_SEBOOL RESP_EXEC RESP_SINGLE
    RESP_HALT RESP_ORIGIN_BLOCK RESP_ORIGIN_BLOCK_TIMED RESP_ORIGIN_UNBLOCK_TIMED
    USER_ROLE_CHANGE ROLE_ASSIGN ROLE_REMOVE LABEL_OVERRIDE LABEL_LEVEL_CHANGE
    USER_LABELED_EXPORT USER_UNLABELED_EXPORT DEV_ALLOC DEV_DEALLOC FS_RELABEL
    USER_MAC_POLICY_LOAD ROLE_MODIFY USER_MAC_CONFIG_CHANGE USER_MAC_STATUS CRYPTO_TEST_USER
    CRYPTO_PARAM_CHANGE_USER CRYPTO_LOGIN CRYPTO_LOGOUT CRYPTO_KEY_USER CRYPTO_FAILURE_USER
    CRYPTO_REPLAY_USER CRYPTO_SESSION CRYPTO_IKE_SA CRYPTO_IPSEC_SA VIRT_CONTROL
    VIRT_RESOURCE VIRT_MACHINE_ID VIRT_INTEGRITY_CHECK VIRT_CREATE VIRT_DESTROY
    VIRT_MIGRATE_IN VIRT_MIGRATE_OUT""".split())


SIFT_BUFFER_MAX = 2 << 20  # bytes of undecided events held; beyond, they are fed to auparse
SIFT_OPEN_MAX = 10000  # events open at once (held or passing through); beyond, the oldest goes
CARRY_MAX = 256 << 10  # bytes of an unfinished event at the end of a chunk kept for the next
MAX_CANDIDATES = 10000  # marked events waiting for auparse (Candidates); beyond, the oldest goes
# An event whose one change record loads a rule that is not on the exclude list (auditctl
# -a/-w, augenrules --load, one per rule): never an alert (its first record is of a
# TAMPER_TYPES type) nor a tamper finding (events.rule_loads_only), so it need not reach
# auparse. ` op=` is the op field itself: the kernel hex-encodes a value holding a space,
# and the enriched part after \x1d is not looked at. An event with a second change record
# (one netlink message, several changes) goes to auparse whole.
RULE_LOAD_RE = re.compile(rb"(?:node=[^ \n]+ )?type=CONFIG_CHANGE msg=audit\([0-9.:]+\):[^\n\x1d]*? op=add_rule "
                          rb"(?![^\n\x1d]*? list=5 )")
CHANGE_RECORD = b"type=CONFIG_CHANGE "
# One record's head as auparse reads it: [node=N ]type=T msg=audit(SEC.MILLI:SERIAL). The
# kernel writes `): ` after it; auparse reads the stamp up to the `)` and ignores what
# follows in that word, so a record without the colon (a saved or forged log) is one of
# its event all the same, and its key is read: it must be grouped and marked like any.
RECORD_HEAD_RE = re.compile(rb"(?:node=([^ \n]+) )?type=([^ \n]+) msg=audit\(([0-9]+)\.([0-9]+):([0-9]+)\)")


def _alternation(words) -> bytes:
    """A regex for exactly these words, as a trie: a word that is not one of them fails at
    its first byte instead of being compared with each."""
    branches, optional = {}, False
    for word in words:
        if word:
            branches.setdefault(word[:1], set()).add(word[1:])
        else:
            optional = True
    if not branches:
        return b""
    parts = [re.escape(first) + _alternation(rest) for first, rest in sorted(branches.items())]
    if len(parts) == 1 and not optional:
        return parts[0]
    return b"(?:" + b"|".join(parts) + b")" + (b"?" if optional else b"")


# A record of ALWAYS_CANDIDATE_TYPES: found by its needle, checked at the line's start.
ALWAYS_CANDIDATE_RE = re.compile(rb"(?:^|\n)(?:node=[^ \n]+ )?type=" + _alternation(ALWAYS_CANDIDATE_TYPES)
                                 + rb" msg=audit\([0-9]+\.[0-9]+:([0-9]+)\)")


ALWAYS_CANDIDATE_NEEDLES = tuple(b"type=" + kind + b" msg=audit(" for kind in ALWAYS_CANDIDATE_TYPES)


def _event_pattern(last_types, excluded_types) -> bytes:
    """A regex for one event whose records are contiguous and whose last record ends it
    (by auparse's rule): either a lone record of a last-record type, or records of one time
    stamp and node, of which only the last is of such a type. No record may be of an
    excluded type."""
    last = _alternation(set(last_types) - set(excluded_types))
    other = b"(?!" + _alternation(excluded_types) + b" )[^ \n]+" if excluded_types else b"[^ \n]+"
    stamp = rb"[0-9]+\.[0-9]+:[0-9]+"
    lone = rb"(?:node=[^ \n]+ )?type=" + last + rb" msg=audit\(" + stamp + rb"\):.*\n"
    first = rb"(?P<node>(?:node=[^ \n]+ )?)type=" + other + rb" msg=audit\((?P<stamp>" + stamp + rb")\):.*\n"
    same = rb"(?P=node)type=" + other + rb" msg=audit\((?P=stamp)\):.*\n"
    end = rb"(?P=node)type=" + last + rb" msg=audit\((?P=stamp)\):.*\n"
    return b"(?:" + lone + b"|" + first + b"(?:" + same + b")*?" + end + b")"


class _Open:
    """An event the sifter has seen records of and auparse has not ended yet: held (its
    records wait for the decision) or passing (it is a candidate: records go to auparse)."""

    __slots__ = ("records", "sec", "size")

    def __init__(self, sec: int) -> None:
        self.sec = sec
        self.records: Optional[List[bytes]] = []  # None once passing
        self.size = 0


class EventSifter:
    """Takes the stream in chunks of whole lines; hands auparse (`feed`) the lines of every
    event that may match (each event's in stream order; held ones when their event turns
    out to be a candidate) and calls `mark(node, sec, milli, serial)` (Candidates.mark) for
    each of its candidate records. `age(now)` mirrors auparse's feed_age_events, `finish()`
    its flush_feed: call them just before those."""

    def __init__(self, pattern: "re.Pattern", feed, mark) -> None:
        self.pattern = pattern
        self.feed = feed
        self.mark = mark
        self.open = OrderedDict()  # type: OrderedDict  # (node, sec, milli, serial) -> _Open
        self.oldest = 0  # no open event is older (seconds): aging looks no further before
        self.held = 0  # bytes of records held by open events
        self.carry = b""  # an unfinished event cut by the end of the last chunk
        self.fallbacks = 0  # times the buffer was full and held records went to auparse
        self.run_re = re.compile(b"(?:" + _event_pattern(LAST_RECORD_TYPES, ALWAYS_CANDIDATE_TYPES) + b")*")
        self.event_re = re.compile(_event_pattern(LAST_RECORD_TYPES, ()))
        self.tail_re = re.compile(rb"(?P<node>(?:node=[^ \n]+ )?)type=[^ \n]+ msg=audit\((?P<stamp>[0-9]+\.[0-9]+:[0-9]+)\):.*\n"
                                  rb"(?:(?P=node)type=[^ \n]+ msg=audit\((?P=stamp)\):.*\n)*\Z")

    def sift(self, data: bytes) -> None:
        """One chunk of whole lines (each ending in \\n)."""
        if self.carry:
            data, self.carry = self.carry + data, b""
        out = []  # type: List[bytes]
        marks = [data.rfind(b"\n", 0, m.start()) + 1 for m in self.pattern.finditer(data)]
        end, pos, next_mark = len(data), 0, 0
        fed_from = fed_to = 0  # contiguous ended events to feed, sliced once (a flood)
        while pos < end:
            if not self.open:
                if next_mark < len(marks) and marks[next_mark] < pos:
                    next_mark = bisect_left(marks, pos, next_mark)
                limit = marks[next_mark] if next_mark < len(marks) else end
                if limit > pos:
                    pos = self.run_re.match(data, pos, limit).end()  # dropped: no candidate in it
                    if pos == end:
                        break
                found = self.event_re.match(data, pos)
                if found:
                    stop = found.end()
                    if self._is_candidate(data, pos, stop, marks, next_mark):
                        if pos != fed_to:
                            if fed_to:
                                out.append(data[fed_from:fed_to])
                            fed_from = pos
                        fed_to = stop
                    pos = stop
                    continue
                if end - pos <= CARRY_MAX and self.tail_re.match(data, pos):
                    self.carry = data[pos:]  # its end comes with the next chunk (or tick)
                    break
            if fed_to:
                out.append(data[fed_from:fed_to])
                fed_from = fed_to = 0
            pos = self._line(data, pos, out)
        if fed_to:
            out.append(data[fed_from:fed_to])
        if out:
            # auparse hands over an ended event when it reads the next line; an empty one
            # (which it skips) makes that now instead of at the next chunk or tick.
            out.append(b"\n")
            self.feed(b"".join(out))

    def _is_candidate(self, data: bytes, start: int, stop: int, marks: List[int], next_mark: int) -> bool:
        """Whether a contiguous, ended event holds a candidate line; if so its serial is noted.
        A rule load is none, whatever keys it names (Plugin.handle passes it over)."""
        if not (next_mark < len(marks) and marks[next_mark] < stop) and not any(
                data.find(needle, start, stop) >= 0 for needle in ALWAYS_CANDIDATE_NEEDLES):
            return False
        if RULE_LOAD_RE.match(data, start) and data.count(CHANGE_RECORD, start, stop) == 1:
            return False
        node, _kind, sec, milli, serial = RECORD_HEAD_RE.match(data, start).groups()
        self.mark(node, sec, milli, serial)
        return True

    def _line(self, data: bytes, pos: int, out: List[bytes]) -> int:
        """Group one line exactly as auparse would; returns where the next line starts."""
        stop = data.index(b"\n", pos) + 1
        line = data[pos:stop]
        head = RECORD_HEAD_RE.match(line)
        if head is None:  # not a record the sifter can read: auparse gets it as before
            out.append(line)
            return stop
        node, kind, sec, milli, serial = head.groups()
        key = (node, int(sec), int(milli), int(serial))
        candidate = kind in ALWAYS_CANDIDATE_TYPES or self.pattern.search(line) is not None
        seconds = key[1]
        ended_passing = self._age_open(seconds) if self.open and seconds >= self.oldest + EOE_TIMEOUT else False
        event = self.open.get(key)
        if event is None:
            if not self.open or seconds < self.oldest:
                self.oldest = seconds
            event = self.open[key] = _Open(seconds)
            if len(self.open) > SIFT_OPEN_MAX:
                self._evict(out)
        if candidate:
            self.mark(node, sec, milli, serial)
        if event.records is not None and (candidate or ended_passing):
            # It may match (or this record must reach auparse to end an event there, as
            # it would without the sifter): its held records go first, then all of it.
            out.extend(event.records)
            self.held -= event.size
            event.records = None
        if event.records is None:
            out.append(line)
        else:
            event.records.append(line)
            event.size += len(line)
            self.held += len(line)
            if self.held > SIFT_BUFFER_MAX:
                self._overflow(out)
        if kind in LAST_RECORD_TYPES:
            self._close(key)
        return stop

    def _age_open(self, sec: int) -> bool:
        """auparse ends every event at least EOE_TIMEOUT seconds older than a record it adds.
        True when a passing event ended so: the record must then reach auparse too."""
        ended_passing = False
        for key in [k for k, event in self.open.items() if event.sec + EOE_TIMEOUT <= sec]:
            ended_passing = self._close(key) or ended_passing
        self.oldest = min((event.sec for event in self.open.values()), default=0)
        return ended_passing

    def _close(self, key) -> bool:
        """auparse ended the event: held records are dropped. True if it was passing."""
        event = self.open.pop(key)
        if event.records is None:
            return True
        self.held -= event.size
        return False

    def _overflow(self, out: List[bytes]) -> None:
        """The buffer is full: every held event goes to auparse and passes from now on."""
        self.fallbacks += 1
        for event in self.open.values():
            if event.records is not None:
                out.extend(event.records)
                event.records = None
        self.held = 0

    def _evict(self, out: List[bytes]) -> None:
        """Too many open events: the oldest one's held records go to auparse and the sifter
        forgets it (its later records are grouped anew: they cannot hide a candidate)."""
        _key, event = self.open.popitem(last=False)
        if event.records is not None:
            out.extend(event.records)
            self.held -= event.size

    def age(self, now: int) -> None:
        """The timer: auparse ends events that got no record for EOE_TIMEOUT seconds of the
        clock; an unfinished event carried over is sifted first (no more data came)."""
        out = []  # type: List[bytes]
        if self.carry:
            data, self.carry = self.carry, b""
            pos = 0
            while pos < len(data):
                pos = self._line(data, pos, out)
        if self.open:
            self._age_open(now)
        if out:
            self.feed(b"".join(out))

    def finish(self) -> None:
        """End of input: auparse ends every event; held ones never matched."""
        self.age(0)
        self.open.clear()
        self.held = 0


def key_pattern(rules: List[Rule], tamper: bool = False) -> "re.Pattern":
    """A bytes regex that finds a record whose key field may hold one of the keys: quoted
    (`key="k"`) or hex-encoded (several keys joined by \\x01, or a key with special
    characters). False positives only cost a normalization; the exact test comes later.
    The records of TAMPER_TYPES are found apart, whether `tamper` is on or not
    (ALWAYS_CANDIDATE_TYPES: EventSifter, mark_candidates): as an alternative in this regex
    they would cost it its literal prefix `key=`, and the scan would read every byte (1.9 s
    instead of 0.08 s over the 337 MB bench corpus)."""
    del tamper  # see above
    keys = sorted({k for rule in rules for k in rule.keys})
    quoted = b"|".join(re.escape(k.encode()) for k in keys)
    hexed = b"|".join(k.encode().hex().upper().encode() for k in keys)
    return re.compile(b'key=(?:"(?:' + quoted + b')"|[0-9A-F]*?(?:' + hexed + b'))')


def mark_candidates(pattern: "re.Pattern", lines: bytes, mark) -> None:
    """The reference path's scan (FEED_EVERYTHING): `mark(node, sec, milli, serial)` for each
    record whose key looks watched and each record of ALWAYS_CANDIDATE_TYPES, as the sifter
    marks them."""
    for match in pattern.finditer(lines):
        line = lines.rfind(b"\n", 0, match.start()) + 1
        found = SERIAL_RE.match(lines, line)
        if found:
            mark(*found.groups())
    for needle in ALWAYS_CANDIDATE_NEEDLES:
        at = lines.find(needle)
        while at >= 0:
            line = lines.rfind(b"\n", 0, at) + 1
            if ALWAYS_CANDIDATE_RE.match(lines, line - 1 if line else 0):
                mark(*SERIAL_RE.match(lines, line).groups())
            at = lines.find(needle, at + 1)


class Candidates:
    """The events that may match, each named by its whole time stamp (node, seconds,
    milliseconds, serial) as auparse hands it over: an aggregating auditd forwards several
    nodes, each counting its own serials, so a serial alone names no event. A mark holds
    until auparse hands over the part of its event that holds the candidate record (`done`):
    auparse may split one time stamp's records into several events (LAST_RECORD_TYPES), and
    a part without that record does not use the mark up. At most MAX_CANDIDATES marks are
    kept; beyond, the oldest goes."""

    def __init__(self) -> None:
        self.marks = OrderedDict()  # type: OrderedDict  # (node or None, sec, milli, serial) -> None

    def mark(self, node: Optional[bytes], sec: bytes, milli: bytes, serial: bytes) -> None:
        """A candidate record's stamp, as the record's head spells it."""
        self.marks[(node.decode("utf-8", "replace") if node else None, int(sec), int(milli),
                    int(serial))] = None
        if len(self.marks) > MAX_CANDIDATES:
            self.marks.popitem(last=False)

    def __len__(self) -> int:
        return len(self.marks)

    def __contains__(self, stamp) -> bool:
        """Whether the event auparse hands over (its get_timestamp()) is marked."""
        return (stamp.host, stamp.sec, stamp.milli, stamp.serial) in self.marks

    def done(self, stamp) -> None:
        """The part of the event that holds its candidate record was handed over."""
        self.marks.pop((stamp.host, stamp.sec, stamp.milli, stamp.serial), None)
