"""The spool directory's layout and its one owner: queue/, bad/, verify/, status.json and the
role's maintenance marker; files written whole or not at all."""

# Python 3.6 (RHEL 8) has no list[str] or X | None in annotations: keep typing's names.
# ruff: noqa: UP006, UP035, UP045

import errno
import json
import os
import re
import stat
import threading
import time
from typing import List, Optional

from .log import Log
from .transports import DeliveryError

TOKEN_RE = re.compile(r"[A-Za-z0-9-]{1,64}\Z")
MAX_MESSAGE_BYTES = 4 << 20  # a queue file larger than any alert or digest can be
SPOOL_MAX_FILES = 10000  # alerts waiting in queue/ (an MTA down for long)...
SPOOL_MAX_BYTES = 256 << 20  # ...and their bytes; beyond either, an alert is held in memory
MAINTENANCE_MAX = 900  # seconds: the longest window a marker can hold open
MAX_DEPLOYED_BYTES = 16 << 20  # deployed.json: 10,000 rules of the longest kind fit  # seconds: the longest window the role's marker can open
# A verification request (verify/<pid>) is honoured for this long after it was written (its
# mtime), and only while the process that wrote it runs: the module writes it just before
# the command whose event it marks. Older ones, and those of ended processes, are removed.
VERIFY_MAX_AGE = 600
VERIFY_CLOCK_SLACK = 2  # seconds a request's mtime may lie ahead of the clock


def process_start(pid: str) -> Optional[str]:
    """When process PID started (clock ticks after boot: field 22 of /proc/PID/stat), or None
    when there is none. With the pid it names one process: a later process that gets the
    same pid started later."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read(4096)
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2:].split()  # after the command name, which may hold anything
    return fields[19].decode("ascii", "replace") if len(fields) > 19 else None


def stale_request(pid: str, fields: List[str], mtime: float) -> Optional[str]:
    """Why the verification request of process PID (its words, its mtime) no longer holds:
    it is older than VERIFY_MAX_AGE, or PID has ended, or PID is another process than the
    one that wrote it (its start time is not the one the request names). None if it holds."""
    age = time.time() - mtime
    if not -VERIFY_CLOCK_SLACK <= age <= VERIFY_MAX_AGE:
        return f"written {age:.0f} s ago (a request holds for {VERIFY_MAX_AGE} s)"
    start = process_start(pid)
    if start is None:
        return f"process {pid} has ended"
    named = fields[1] if len(fields) > 1 else "none"
    if named != start:
        return f"process {pid} is not the one that wrote it (start time {start}, the request names {named})"
    return None


class SpoolFull(OSError):
    """The queue holds SPOOL_MAX_FILES files or SPOOL_MAX_BYTES already."""


def check_private_dir(path: str, follow: bool) -> None:
    """Refuse a directory that someone else could have filled or can change: one not owned
    by the plugin's user (root) or writable by group or others; with follow False, a
    symbolic link too. Its files are mailed out by root."""
    info = os.stat(path) if follow else os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise PermissionError(f"{path} is not a directory (a symbolic link?)")
    if info.st_uid != os.geteuid():
        raise PermissionError(f"{path} is owned by uid {info.st_uid}, not {os.geteuid()}")
    if info.st_mode & 0o022:
        raise PermissionError(f"{path} is writable by group or others "
                              f"(mode {stat.S_IMODE(info.st_mode):o}); make it 0700")


def sync_dir(path: str) -> None:
    """fsync a directory, so that a file created, renamed or removed in it stays so after
    a power failure. Best effort: the change itself is done, and a directory that cannot
    be synced is no reason to take it back."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_whole(temporary: str, path: str, data: bytes, mode: int, durable: bool) -> None:
    """Write path whole or not at all: into temporary (created new, so never through a
    planted link), synced first when durable, then renamed over path."""
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def replace_file(path: str, data: bytes) -> None:
    """Write path anew through path.tmp, renamed over it. A .tmp left behind, or planted (a
    symbolic link to another file), is removed first: never followed, never written through."""
    temporary = path + ".tmp"
    try:
        os.unlink(temporary)
    except FileNotFoundError:
        pass
    write_whole(temporary, path, data, 0o644, durable=False)


def boot_id() -> str:
    """This boot's id (a marker of another boot is no window now)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def uptime() -> float:
    """Seconds since boot, suspend included: CLOCK_BOOTTIME, the clock of /proc/uptime that
    the role's marker is written with, which setting the date cannot move. Read from the
    kernel, not from /proc (the plugin's SELinux domain may not read /proc/uptime); Python
    3.6 lacks the constant, whose value on Linux is 7."""
    return time.clock_gettime(getattr(time, "CLOCK_BOOTTIME", 7))


class Marker:
    """The role's maintenance marker: START END (epoch seconds, for people) and the window
    itself on this boot's clock: BOOT_ID, OPENED and UNTIL (seconds since boot)."""

    def __init__(self, start: int, end: int, boot: str, opened: float, until: float) -> None:
        self.start, self.end = start, end
        self.boot, self.opened = boot, opened
        self.until = min(until, opened + MAINTENANCE_MAX)

    @classmethod
    def parse(cls, raw: bytes) -> Optional["Marker"]:
        fields = raw.decode("ascii", "replace").split()
        if len(fields) != 5 or not fields[0].isdigit() or not fields[1].isdigit() \
                or not re.fullmatch(r"[0-9a-f-]{36}", fields[2]):
            return None
        try:
            opened, until = float(fields[3]), float(fields[4])
        except ValueError:
            return None
        if not 0 <= opened <= until:
            return None
        return cls(int(fields[0]), int(fields[1]), fields[2], opened, until)

    def covers(self, boot: str, now: float, early: float, late: float) -> bool:
        """Whether the window of this boot holds now, give or take early and late."""
        return self.boot == boot and self.opened - early <= now <= self.until + late


class Spool:
    """The spool directory's layout, its one owner here (docs/design.md): `<dir>/queue/`
    holds one complete message per file (written under a temporary name, then renamed); a
    file is deleted only after its delivery succeeded. `<dir>/bad/` holds the files that no
    delivery can succeed with (refused for good, or unreadable as mail). `status.json`, the
    `verify/` requests and the role's `maintenance` marker are read and written here too."""

    def __init__(self, directory: str) -> None:
        self.dir = directory
        self.queue_dir = os.path.join(directory, "queue")
        self.bad_dir = os.path.join(directory, "bad")
        self.verify_dir = os.path.join(directory, "verify")
        self.status_path = os.path.join(directory, "status.json")
        self.maintenance_path = os.path.join(directory, "maintenance")
        self.deployed_path = os.path.join(directory, "deployed.json")
        self.watchdog_path = os.path.join(directory, "watchdog.json")
        self.bad_count = 0  # files in bad/: counted at start, plus those moved there since
        self._seq = 0
        self._lock = threading.Lock()  # guards _seq, _sizes and _bytes: two threads use them
        self._sizes = {}  # type: dict  # name -> bytes of each file in queue/
        self._bytes = 0  # their sum

    def prepare(self) -> None:
        """Make or check the directories: PermissionError when someone else could have put
        files there (check_private_dir)."""
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        check_private_dir(self.dir, follow=True)  # the configured path may be a link
        os.chmod(self.dir, 0o700)
        for path in (self.queue_dir, self.bad_dir):
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                pass
            check_private_dir(path, follow=False)
            self._remove_leftovers(path)
        self.remove_stale_requests()
        self.bad_count = len([n for n in os.listdir(self.bad_dir) if not n.startswith(".")])
        for name in self.names():
            try:
                self._note(name, os.lstat(os.path.join(self.queue_dir, name)).st_size)
            except OSError:
                pass

    @staticmethod
    def _remove_leftovers(directory: str) -> None:
        """Remove the .NAME.tmp files of writes that a kill or a crash cut short: no other
        process writes here, and the plugin has not begun to."""
        for name in os.listdir(directory):
            if name.startswith(".") and name.endswith(".tmp"):
                os.unlink(os.path.join(directory, name))

    def new_name(self) -> str:
        """A name that sorts by acceptance time, unique in the plugin's lifetime."""
        with self._lock:
            self._seq += 1
            return f"{int(time.time() * 1e6):017d}-{os.getpid()}-{self._seq:06d}.eml"

    def add(self, data: bytes) -> str:
        """Accept a message into the queue; its name. OSError when the spool cannot take it:
        SpoolFull at the queue's bound (SPOOL_MAX_FILES, SPOOL_MAX_BYTES)."""
        with self._lock:
            if len(self._sizes) >= SPOOL_MAX_FILES or self._bytes + len(data) > SPOOL_MAX_BYTES:
                raise SpoolFull(f"the queue is at its bound: {len(self._sizes)} files, "
                                f"{self._bytes >> 20} MB")
        name = self.new_name()
        self._write(self.queue_dir, name, data)
        self._note(name, len(data))
        return name

    def _note(self, name: str, size: int) -> None:
        with self._lock:
            self._sizes[name] = size
            self._bytes += size

    def forget(self, name: str) -> None:
        """A queue file is gone: it no longer counts towards the bound."""
        with self._lock:
            self._bytes -= self._sizes.pop(name, 0)

    def add_bad(self, name: str, data: bytes) -> None:
        """Keep a message that was never spooled, and cannot be delivered, in bad/."""
        self._write(self.bad_dir, name, data)
        self.bad_count += 1

    @staticmethod
    def _write(directory: str, name: str, data: bytes) -> None:
        """Write the file whole or not at all: under a temporary name, synced, renamed."""
        write_whole(os.path.join(directory, "." + name + ".tmp"), os.path.join(directory, name),
                    data, 0o600, durable=True)
        sync_dir(directory)  # the rename itself must survive a power failure

    def names(self) -> List[str]:
        try:
            return sorted(n for n in os.listdir(self.queue_dir) if n.endswith(".eml")
                          and not n.startswith("."))
        except OSError:
            return []

    def read(self, name: str) -> bytes:
        """The message. FileNotFoundError when it is gone; a permanent DeliveryError when it
        is no file the plugin wrote (a symbolic link, not a regular file, too large), which
        is neither followed nor read; another OSError when reading fails."""
        path = os.path.join(self.queue_dir, name)
        try:  # O_NONBLOCK: opening a FIFO would wait for a writer
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise DeliveryError(f"{path} is a symbolic link (not followed)", permanent=True)
            raise
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise DeliveryError(f"{path} is not a regular file", permanent=True)
            if info.st_size > MAX_MESSAGE_BYTES:
                raise DeliveryError(f"{path} holds {info.st_size} bytes, more than any alert",
                                    permanent=True)
            return os.read(fd, MAX_MESSAGE_BYTES)
        finally:
            os.close(fd)

    def remove(self, name: str) -> None:
        os.unlink(os.path.join(self.queue_dir, name))
        self.forget(name)
        sync_dir(self.queue_dir)  # else a delivered alert may be back after a power failure

    def move_to_bad(self, name: str) -> None:
        os.rename(os.path.join(self.queue_dir, name), os.path.join(self.bad_dir, name))
        self.forget(name)
        sync_dir(self.bad_dir)
        sync_dir(self.queue_dir)
        self.bad_count += 1

    def maintenance(self, log: Log) -> Optional["Marker"]:
        """The role's maintenance marker `<dir>/maintenance` (docs/design.md): None when
        there is none, or when it is not a regular file of root's that only root can write
        holding `START END BOOT_ID OPENED UNTIL` (then it is ignored, and logged)."""
        raw = self._read_root_file(self.maintenance_path, 256, log, "maintenance marker")
        if raw is None:
            return None
        marker = Marker.parse(raw)
        if marker is None:
            log.warning(f"maintenance marker {self.maintenance_path} ignored: it does not hold "
                        "START END BOOT_ID OPENED UNTIL")
        return marker

    def read_deployed(self, log: Log) -> Optional[bytes]:
        """The deployed kernel state `<dir>/deployed.json` as written by --record-state;
        None when there is none or it is not a root-only regular file."""
        return self._read_root_file(self.deployed_path, MAX_DEPLOYED_BYTES, log, "deployed state")

    def write_deployed(self, data: bytes) -> None:
        """Write deployed.json whole (root-only), synced: it outlives a crash."""
        temporary = self.deployed_path + ".tmp"
        try:
            os.unlink(temporary)  # a write that a crash cut short
        except FileNotFoundError:
            pass
        write_whole(temporary, self.deployed_path, data, 0o600, durable=True)
        sync_dir(self.dir)

    @staticmethod
    def _read_root_file(path: str, limit: int, log: Log, what: str) -> Optional[bytes]:
        """A small file the role or --record-state writes: None when it is missing; None,
        and logged, when it is not a regular file of root's that no one else can write (a
        symbolic link is not followed) or is larger than limit."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError as err:  # ELOOP: a symbolic link
            log.warning(f"{what} {path} ignored: {err}")
            return None
        try:
            info = os.fstat(fd)
            raw = os.read(fd, limit + 1) if stat.S_ISREG(info.st_mode) else b""
        finally:
            os.close(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022 \
                or len(raw) > limit:
            log.warning(f"{what} {path} ignored: not a root-only regular file of at most {limit} bytes")
            return None
        return raw

    def read_watchdog(self, log: Log) -> Optional[dict]:
        """The watchdog's state `<dir>/watchdog.json` (the outage it mailed); None when there
        is none, or it is no root-only regular file, or no JSON object."""
        raw = self._read_root_file(self.watchdog_path, 4096, log, "watchdog state")
        try:
            document = json.loads(raw.decode()) if raw is not None else None
        except ValueError:
            return None
        return document if isinstance(document, dict) else None

    def write_watchdog(self, data: bytes) -> None:
        """Write watchdog.json whole (root-only), through watchdog.json.tmp."""
        temporary = self.watchdog_path + ".tmp"
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        write_whole(temporary, self.watchdog_path, data, 0o600, durable=False)

    def write_status(self, document: dict) -> None:
        """Write status.json anew (replace_file: never through a planted link)."""
        replace_file(self.status_path, json.dumps(document, indent=1, sort_keys=True).encode())

    def verify_token(self, ppid: str, log: Log) -> Optional[str]:
        """The token of the verification request `<dir>/verify/<ppid>` when there is one that
        holds (stale_request): `TOKEN START`, START the start time of process PPID. A stale
        request is removed (logged): it is never honoured again."""
        if not ppid.isdigit():
            return None
        path = os.path.join(self.verify_dir, ppid)
        request = self._read_request(path)
        if request is None:
            return None
        fields, mtime = request
        why = stale_request(ppid, fields, mtime)
        if why is not None:
            log.warning(f"verify request {path} removed: {why}")
            self._remove_request(path)
            return None
        if not TOKEN_RE.match(fields[0]) or len(fields) != 2:
            log.warning(f"verify request {self.verify_dir}/{ppid} holds no valid token; ignored")
            return None
        return fields[0]

    def remove_stale_requests(self) -> List[str]:
        """Remove the verification requests that no longer hold (a module ended by SIGKILL
        leaves its request behind); the pids whose requests were removed."""
        try:
            names = os.listdir(self.verify_dir)
        except OSError:
            return []
        removed = []
        for name in names:
            path = os.path.join(self.verify_dir, name)
            request = self._read_request(path) if name.isdigit() else None
            if request is not None and stale_request(name, *request) is not None:
                self._remove_request(path)
                removed.append(name)
        return removed

    @staticmethod
    def _read_request(path: str) -> Optional[tuple]:
        """A request's words and mtime; None when there is none, or it is no regular file (a
        symbolic link is not followed)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return None
            raw = os.read(fd, 128)
        finally:
            os.close(fd)
        return raw.decode("ascii", "replace").split() or [""], info.st_mtime

    @staticmethod
    def _remove_request(path: str) -> None:
        try:
            os.unlink(path)
        except OSError:
            pass  # gone already (the module removed it), or it cannot be: it stays stale
