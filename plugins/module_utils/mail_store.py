# Copyright (c) audit mail alert developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Where alert mail ends up: a local mailbox (mbox file or Maildir) and the MTA queue.

Mailboxes are read with the standard `mailbox` package, headers only, without locking
(the reader never writes; a message caught half-written is simply seen on the next poll).
"""

import fcntl
import mailbox
import os
import re
import struct
from typing import List, Optional, Tuple

from ansible_collections.linux_audit.mail_alert.plugins.module_utils.alert_plugin import (
    alert_headers,
)
from ansible_collections.linux_audit.mail_alert.plugins.module_utils.audit_state import (
    C_LOCALE,
    normalize_event_id,
)

# Queue id lines of `mailq` (sendmail -bp) as the common MTAs print them.
_QUEUE_ID_PATTERNS = (
    # dma: "ID\t: 16000c.555729782f20"
    re.compile(r"^ID\s*:\s*(\S+)"),
    # postfix and sendmail: "A1B2C3D4E5*     432 Thu Nov 26 09:42:26  root@host"
    re.compile(r"^([0-9A-Za-z]{6,})[*!]?\s+\d+\s+[A-Z][a-z]{2}\s"),
    # exim: " 0m   320 1tFg8s-0001Ab-2C <root@host>"
    re.compile(r"^\s*\d+[smhdw]\s+[\d.]+[KMG]?\s+(\S+-\S+-\S+)\s"),
)
# FS_IOC_GETFLAGS = _IOR('f', 1, long) and the inode flag that forbids every write.
FS_IOC_GETFLAGS = (2 << 30) | (struct.calcsize("l") << 16) | (ord("f") << 8) | 1
FS_IMMUTABLE_FL = 0x10


def _immutable(path: str) -> bool:
    """Whether PATH carries the immutable attribute (chattr +i); False if unknown."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        flags = fcntl.ioctl(descriptor, FS_IOC_GETFLAGS, bytes(8))
        return bool(struct.unpack("i", flags[:4])[0] & FS_IMMUTABLE_FL)
    except OSError:  # a file system without inode flags (tmpfs)
        return False
    finally:
        os.close(descriptor)


def mailbox_unwritable(path: str) -> Optional[str]:
    """Why an MTA running as root could not deliver into the mailbox, or None.

    Root ignores permission bits, so what stops it is an immutable mailbox (or its
    directory, when the mailbox does not exist yet) and a read-only file system.
    """
    target = os.path.join(path, "new") if os.path.isdir(path) else path
    if not os.path.exists(target):
        target = os.path.dirname(target) or "."
    if _immutable(target):
        return f"{target} is immutable (chattr +i)"
    try:
        if os.statvfs(target).f_flag & os.ST_RDONLY:
            return f"{target} is on a read-only file system"
    except OSError as error:
        return f"{target}: {error.strerror}"
    return None


def mailbox_state(path: str) -> dict:
    """What the mailbox looks like now: {"path", "kind", "exists", "size", "mtime"}."""
    kind = "maildir" if os.path.isdir(path) else "mbox"
    state = {"path": path, "kind": kind, "exists": os.path.exists(path), "size": None,
             "mtime": None}
    if kind == "maildir":
        # A delivery adds a file to new/ (tmp/ then rename), which changes new/'s mtime.
        path = os.path.join(path, "new")
    try:
        stat = os.stat(path)
    except OSError:
        return state
    state["size"], state["mtime"] = stat.st_size, stat.st_mtime
    return state


def open_mailbox(path: str) -> Optional[mailbox.Mailbox]:
    """The mailbox at PATH (a directory is a Maildir, a file an mbox), or None if absent."""
    if os.path.isdir(path):
        return mailbox.Maildir(path, factory=None, create=False)
    if os.path.isfile(path):
        return mailbox.mbox(path, create=False)
    return None


def alert_messages(path: str, key: str) -> List[dict]:
    """Headers of the messages in the mailbox whose X-Audit-Key is KEY.

    Each: {"key", "event" (normalized TIME:SERIAL), "event_header", "verify", "tamper",
    "subject", "message_id", "delivered" (file time of a Maildir message, else None)}.
    """
    box = open_mailbox(path)
    if box is None:
        return []
    found = []
    try:
        for message_key in box.keys():  # noqa: SIM118 (iterating a Mailbox yields messages)
            try:
                with box.get_file(message_key) as handle:
                    headers = alert_headers(handle)
            except (KeyError, OSError):
                continue  # removed by a mail reader meanwhile
            if headers["key"] != key:
                continue
            delivered = None
            if isinstance(box, mailbox.Maildir):
                # A MaildirMessage's date is its file's mtime: the delivery time.
                delivered = box.get_message(message_key).get_date()
            found.append(dict(headers, event=normalize_event_id(headers["event"]),
                              event_header=headers["event"], delivered=delivered))
    finally:
        box.close()
    return found


class MailboxWatch:
    """The alerts with one key in a mailbox, re-read only when the mailbox's size or
    mtime changed since the last look (a stat per poll, a parse per delivery)."""

    def __init__(self, path: str, key: str):
        self.path, self.key = path, key
        self.seen = None
        self.messages: List[dict] = []

    def look(self) -> Tuple[List[dict], dict]:
        """(the alert messages now, the mailbox state now)."""
        state = mailbox_state(self.path)
        if (state["size"], state["mtime"]) != self.seen:
            self.seen = (state["size"], state["mtime"])
            self.messages = alert_messages(self.path, self.key)
        return self.messages, state


def mail_queue(module) -> Optional[dict]:
    """The MTA's queue (mailq): {"ids": queue ids, "error": why mailq failed or None};
    None when there is no mailq to ask. A failing mailq still lists what it read: postfix's
    exits 69 with "Mail system is down" and shows the queue when its daemon is not running."""
    mailq = module.get_bin_path("mailq")
    if not mailq:
        return None
    rc, out, err = module.run_command([mailq], environ_update=C_LOCALE)
    error = None
    if rc != 0:
        error = f"mailq exited {rc}: {' '.join(err.split())[:300] or 'no message'}"
    return {"ids": parse_mail_queue(out), "error": error}


def parse_mail_queue(text: str) -> List[str]:
    """Queue ids in `mailq` output; an empty queue ("Mail queue is empty") gives []."""
    ids = []
    for line in text.splitlines():
        for pattern in _QUEUE_ID_PATTERNS:
            match = pattern.match(line)
            if match:
                ids.append(match.group(1))
                break
    return ids
