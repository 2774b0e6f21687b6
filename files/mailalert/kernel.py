"""The kernel's audit status read over the audit netlink socket."""

import os
import socket
import struct


class KernelAuditStatus:
    """The kernel's audit status, as `auditctl -s` prints it, read over netlink (AUDIT_GET);
    needs CAP_AUDIT_CONTROL (auditd's plugins run as root)."""

    NETLINK_AUDIT = 9
    AUDIT_GET = 1000
    NLMSG_ERROR = 2
    NLM_F_REQUEST = 1
    HEADER = struct.Struct("=IHHII")  # struct nlmsghdr
    FIELDS = ("mask", "enabled", "failure", "pid", "rate_limit", "backlog_limit", "lost", "backlog")

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, self.NETLINK_AUDIT)
        self.sock.settimeout(1.0)
        self.seq = 0

    def read(self) -> dict:
        self.seq += 1
        self.sock.send(self.HEADER.pack(self.HEADER.size, self.AUDIT_GET, self.NLM_F_REQUEST, self.seq, 0))
        while True:
            reply = self.sock.recv(65536)
            _length, kind, _flags, seq, _pid = self.HEADER.unpack_from(reply)
            if seq != self.seq:
                continue
            if kind == self.NLMSG_ERROR:
                code = -struct.unpack_from("=i", reply, self.HEADER.size)[0]
                raise OSError(code, os.strerror(code))
            return dict(zip(self.FIELDS, struct.unpack_from("=8I", reply, self.HEADER.size)))
