"""What the kernel's audit system enforces, read over one NETLINK_AUDIT socket: the status
(AUDIT_GET, `struct audit_status`) and the loaded rules (AUDIT_LIST_RULES, one `struct
audit_rule_data` per rule). Needs CAP_AUDIT_CONTROL; under SELinux, the netlink_audit_socket
permissions nlmsg_read (status) and nlmsg_readpriv (rules).

Every read is bounded: a timeout on each recv and on the whole reply, a cap on the rules and
the bytes read. Only messages from the kernel (port 0) that answer this request (its sequence
number) count; anything else is skipped, and counted against the byte cap. A kernel error
(NLMSG_ERROR) is raised as OSError; after any failure the socket is closed and the next read
opens a new one, so the rest of an abandoned reply never meets a later request.

Layouts: include/uapi/linux/audit.h and kernel/auditfilter.c (audit_krule_to_data) of Linux.
"""

# Python 3.6 (RHEL 8) has no list[str] or X | None in annotations: keep typing's names.
# ruff: noqa: UP006, UP035, UP045

import errno
import os
import socket
import struct
import time
from collections import namedtuple
from typing import Dict, Iterator, List, Optional, Tuple

NETLINK_AUDIT = 9
AUDIT_GET = 1000
AUDIT_LIST_RULES = 1013
NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 1

NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
NLMSGERR = struct.Struct("=i")  # the error code; the request's header follows
# struct audit_status: 32-bit fields, as many as the running kernel has (8 before 3.12).
STATUS_FIELDS = ("mask", "enabled", "failure", "pid", "rate_limit", "backlog_limit", "lost",
                 "backlog", "feature_bitmap", "backlog_wait_time", "backlog_wait_time_actual")
# struct audit_rule_data before its string buffer: flags, action, field_count,
# mask[AUDIT_BITMASK_SIZE], fields[AUDIT_MAX_FIELDS], values[..], fieldflags[..], buflen.
AUDIT_BITMASK_SIZE = 64
AUDIT_MAX_FIELDS = 64
RULE_HEAD = struct.Struct("=3I64I64I64I64II")

# One rule as the kernel lists it: flags (the filter list's number), action, mask (64 words
# of syscall bits), fields ((field, fieldflags, value) for each of field_count; for a string
# field, value is its length in buf), buf (the string fields, concatenated, no NULs).
RuleData = namedtuple("RuleData", "flags action mask fields buf")

# A reply message of rules can hold, besides the fixed part, up to AUDIT_MAX_FIELDS strings
# of at most PATH_MAX bytes: the receive buffer takes the largest one whole.
RECV_BUFFER = NLMSGHDR.size + RULE_HEAD.size + AUDIT_MAX_FIELDS * 4096 + 4096


def decode_rule(payload: bytes) -> RuleData:
    """One `struct audit_rule_data`; ValueError when it is shorter than it says."""
    if len(payload) < RULE_HEAD.size:
        raise ValueError(f"audit rule of {len(payload)} bytes, shorter than its header")
    words = RULE_HEAD.unpack_from(payload)
    flags, action, count = words[0:3]
    mask = words[3:67]
    fields, values, fieldflags = words[67:131], words[131:195], words[195:259]
    buflen = words[259]
    if count > AUDIT_MAX_FIELDS or len(payload) < RULE_HEAD.size + buflen:
        raise ValueError(f"audit rule with {count} fields and {buflen} bytes of strings in "
                         f"{len(payload)} bytes")
    triples = tuple(zip(fields[:count], fieldflags[:count], values[:count]))
    buf = bytes(payload[RULE_HEAD.size:RULE_HEAD.size + buflen])
    return RuleData(flags, action, tuple(mask), triples, buf)


def decode_status(payload: bytes) -> Dict[str, int]:
    """Every field of `struct audit_status` that the payload holds."""
    count = min(len(payload) // 4, len(STATUS_FIELDS))
    if count < 8:
        raise ValueError(f"audit status of {len(payload)} bytes, shorter than 8 fields")
    return dict(zip(STATUS_FIELDS, struct.unpack_from(f"={count}I", payload)))


class AuditNetlink:
    """One NETLINK_AUDIT socket, opened on first use; `status()` and `rules()` ask the kernel.

    timeout: seconds for each recv and for a whole reply; max_rules, max_bytes: what one
    rules() reads at most (all messages received, also those skipped)."""

    def __init__(self, timeout: float = 2.0, max_rules: int = 10000,
                 max_bytes: int = 32 * 1024 * 1024) -> None:
        self.timeout = timeout
        self.max_rules = max_rules
        self.max_bytes = max_bytes
        self.sock: Optional[socket.socket] = None
        self.seq = int.from_bytes(os.urandom(2), "little")  # a fresh socket's first seq varies
        self.buffer = bytearray(RECV_BUFFER)
        self.last_reply_sizes: List[int] = []  # payload bytes of the last reply's messages

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def status(self) -> Dict[str, int]:
        """The kernel's audit status (`auditctl -s`), every field it returns."""
        try:
            return decode_status(next(self._exchange(AUDIT_GET, multipart=False)))
        except (OSError, ValueError):
            self.close()
            raise

    def rules(self) -> List[RuleData]:
        """The loaded rules (`auditctl -l`), in the kernel's order: filter list by list."""
        found: List[RuleData] = []
        try:
            for payload in self._exchange(AUDIT_LIST_RULES, multipart=True):
                if len(found) >= self.max_rules:
                    raise OSError(errno.E2BIG, f"more than {self.max_rules} audit rules")
                found.append(decode_rule(payload))
        except (OSError, ValueError):
            self.close()
            raise
        return found

    def _exchange(self, request: int, multipart: bool) -> Iterator[bytes]:
        """Send a request without payload; yield the payload of each reply message of the
        request's type, up to NLMSG_DONE (multipart) or the first one."""
        if self.sock is None:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_AUDIT)
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        self.sock.send(NLMSGHDR.pack(NLMSGHDR.size, request, NLM_F_REQUEST, self.seq, 0))
        self.last_reply_sizes = []
        for kind, payload in self._messages(self.seq):
            if kind == NLMSG_DONE and multipart:
                return
            if kind == request:
                self.last_reply_sizes.append(len(payload))
                yield payload
                if not multipart:
                    return

    def _messages(self, seq: int) -> Iterator[Tuple[int, bytes]]:
        """(type, payload) of the kernel's messages with this sequence number, until the
        caller stops; NLMSG_ERROR with an error raises it, an acknowledgement is skipped."""
        deadline = time.monotonic() + self.timeout
        total = 0
        while True:
            size, sender = self._receive(deadline)
            total += size
            if total > self.max_bytes:
                raise OSError(errno.E2BIG, f"audit reply over {self.max_bytes} bytes")
            if sender != 0:  # another process's message, not the kernel's
                continue
            for kind, msg_seq, payload in self._split(memoryview(self.buffer)[:size]):
                if msg_seq != seq or kind == NLMSG_NOOP:
                    continue
                if kind == NLMSG_ERROR:
                    code = -NLMSGERR.unpack_from(payload)[0] if len(payload) >= 4 else errno.EPROTO
                    if code:
                        raise OSError(code, "audit netlink: " + os.strerror(code))
                    continue
                yield kind, bytes(payload)

    def _receive(self, deadline: float) -> Tuple[int, int]:
        """One datagram into the buffer: (its size, the sender's port id)."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no complete audit reply within {self.timeout:.1f} s")
        self.sock.settimeout(left)
        size, address = self.sock.recvfrom_into(self.buffer, 0, socket.MSG_TRUNC)
        if size > len(self.buffer):
            raise OSError(errno.EMSGSIZE, f"audit netlink message of {size} bytes")
        return size, address[0]

    @staticmethod
    def _split(data: memoryview) -> Iterator[Tuple[int, int, memoryview]]:
        """(type, seq, payload) of each netlink message in one datagram."""
        offset = 0
        while offset + NLMSGHDR.size <= len(data):
            length, kind, _flags, seq, _pid = NLMSGHDR.unpack_from(data, offset)
            if length < NLMSGHDR.size or offset + length > len(data):
                raise ValueError(f"netlink message length {length} at offset {offset} "
                                 f"of {len(data)}")
            yield kind, seq, data[offset + NLMSGHDR.size:offset + length]
            offset += (length + 3) & ~3
