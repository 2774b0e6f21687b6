"""Drive the real plugin as auditd does, against the sendmail stand-in next to this file.

The plugin runs as a subprocess reading audit records on stdin; its `sendmail` is the
`sendmail` script in this directory (linked into the test's own directory so each test
has its own mode file and mailbox). Events are real captured records
(`../data/captured-raw.log`, made by `benchmarks/capture_events.sh`) given new serials.
"""

import email.policy
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterable
from email.parser import BytesParser
from pathlib import Path

FAKES = Path(__file__).resolve().parent
REPO = FAKES.parents[2]
# The plugin under test; AUDISP_MAILALERT_FILES may name another copy (see conftest.py).
PLUGIN = Path(os.environ.get("AUDISP_MAILALERT_FILES") or REPO / "files") / "audisp_mailalert.py"
CAPTURED = FAKES.parent / "data" / "captured-raw.log"
# The interpreter auditd runs the plugin with (its shebang): the system one, with auparse.
PYTHON = "/usr/bin/python3"

# The key of the captured file-watch events, and the rule the tests give it.
WATCH_KEY = "mailalert_watch"
WATCH_RULE = "watch"

EVENT_ID_RE = re.compile(rb"msg=audit\((\d+\.\d+):(\d+)\)")


# ---------------------------------------------------------------------------------------
# Captured events, given new identities.

def load_events(path: Path = CAPTURED) -> list[list[bytes]]:
    """The captured records grouped by event (TIME:SERIAL), in capture order."""
    events = {}  # type: Dict[bytes, List[bytes]]
    for line in path.read_bytes().splitlines(keepends=True):
        found = EVENT_ID_RE.search(line)
        if found:
            events.setdefault(found.group(0), []).append(line)
    return list(events.values())


def event_key(records: list[bytes]) -> str | None:
    found = re.search(rb' key="([^"]*)"', b"".join(records))
    return found.group(1).decode() if found else None


def restamp(records: list[bytes], seconds: int, serial: int) -> bytes:
    """The event's records with the identity audit(SECONDS.000:SERIAL)."""
    stamp = b"msg=audit(%d.000:%d)" % (seconds, serial)
    return b"".join(EVENT_ID_RE.sub(stamp, line, count=1) for line in records)


def event_id(seconds: int, serial: int) -> str:
    """What X-Audit-Event starts with for an event restamped with these values."""
    return f"{seconds}.000:{serial}"


class EventSource:
    """Hands out captured events with fresh, rising serials and their expected ids."""

    def __init__(self, first_serial: int = 1000, seconds: int | None = None) -> None:
        events = load_events()
        self.watch = [e for e in events if event_key(e) == WATCH_KEY and b"type=SYSCALL" in e[0]]
        self.other = [e for e in events if event_key(e) != WATCH_KEY]
        assert self.watch and self.other, f"{CAPTURED} lacks watch or other events"
        self.serial = first_serial
        self.seconds = seconds or int(time.time())

    def matching(self, count: int) -> "tuple[bytes, list[str]]":
        """count events that the watch rule matches, with their expected event ids."""
        data, ids = [], []
        for i in range(count):
            self.serial += 1
            data.append(restamp(self.watch[i % len(self.watch)], self.seconds, self.serial))
            ids.append(event_id(self.seconds, self.serial))
        return b"".join(data), ids

    def noise(self, count: int) -> bytes:
        data = []
        for i in range(count):
            self.serial += 1
            data.append(restamp(self.other[i % len(self.other)], self.seconds, self.serial))
        return b"".join(data)


# ---------------------------------------------------------------------------------------
# The sendmail stand-in and what it received.

class Mail:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.raw = path.read_bytes()
        self.argv = path.with_suffix(".argv").read_bytes().split(b"\0")[:-1]
        self.message = BytesParser(policy=email.policy.default).parsebytes(self.raw)

    @property
    def event_id(self) -> str:
        """TIME:SERIAL of X-Audit-Event (the @NODE part is the host name)."""
        return str(self.message.get("X-Audit-Event", "")).rsplit("@", 1)[0]


class Sendmail:
    """The stand-in, linked to <root>/bin/sendmail, with its mode file and mailbox there."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "bin"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "sendmail"
        self.restore()

    def set_mode(self, mode: str) -> None:
        temporary = self.dir / "mode.tmp"
        temporary.write_text(mode + "\n")
        temporary.rename(self.dir / "mode")  # a run never reads half a mode

    def remove(self) -> None:
        """The 'missing' fault: nothing at the configured path."""
        self.path.unlink()

    def restore(self) -> None:
        if not self.path.exists():
            self.path.symlink_to(FAKES / "sendmail")

    def mails(self) -> list[Mail]:
        new = self.dir / "mail" / "new"
        return [Mail(p) for p in sorted(new.glob("*.eml"))] if new.is_dir() else []

    def hung_pids(self) -> list[int]:
        hung = self.dir / "hung"
        return [int(p.name) for p in hung.iterdir()] if hung.is_dir() else []

    def kill_hung(self) -> None:
        for pid in self.hung_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def processes_mentioning(text: str) -> list[int]:
    """Pids of live processes with text in their command line: the plugin, a child it
    forked, the stand-in it runs (an orphan once the plugin is killed)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                if text.encode() in (entry / "cmdline").read_bytes() and alive(int(entry.name)):
                    pids.append(int(entry.name))
            except OSError:
                pass  # ended meanwhile
    return pids


def alive(pid: int) -> bool:
    """True while pid runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


class PeakRss:
    """The peak resident size of a running process, sampled from /proc/PID/status (VmHWM,
    which exec resets; wait4's ru_maxrss would count the test's own memory, copied at
    fork) until it exits. peak: megabytes. kill_above: megabytes at which the process is
    killed (SIGKILL), so that a test of a bound cannot eat the machine's memory when the
    bound is missing; killed tells that it was."""

    def __init__(self, pid: int, interval: float = 0.01, kill_above: float | None = None) -> None:
        self.pid = pid
        self.peak = 0.0
        self.interval = interval
        self.kill_above = kill_above
        self.killed = False
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while True:
            try:
                with open(f"/proc/{self.pid}/status") as handle:
                    found = re.search(r"^VmHWM:\s+(\d+) kB", handle.read(), re.MULTILINE)
            except OSError:
                return  # gone
            if not found:
                return  # a zombie: its memory is gone
            self.peak = max(self.peak, int(found.group(1)) / 1024)
            if self.kill_above is not None and self.peak >= self.kill_above and not self.killed:
                self.killed = True
                os.kill(self.pid, signal.SIGKILL)
            time.sleep(self.interval)

    def result(self, timeout: float = 10) -> float:
        """The peak, once the process has exited (call after waiting for it)."""
        self.thread.join(timeout)
        return self.peak


# ---------------------------------------------------------------------------------------
# Config and the plugin process.

def write_config(path: Path, sendmail: Path, spool: Path, max_mails: int = 100000,
                 window: int = 300, timeout: int = 2, keys: Iterable[str] = (WATCH_KEY,),
                 retry_min: int = 1, retry_max: int = 2) -> Path:
    """A config for one rule named WATCH_RULE; short timeout and retries keep tests fast."""
    path.write_text(
        "[mail]\n"
        "to = security@example.com\n"
        "from = audit@example.com\n"
        "transport = sendmail\n"
        f"sendmail = {sendmail}\n"
        f"timeout = {timeout}\n"
        "[limits]\n"
        f"max_mails = {max_mails}\n"
        f"window = {window}\n"
        "[spool]\n"
        f"dir = {spool}\n"
        f"retry_min = {retry_min}\n"
        f"retry_max = {max(retry_min, retry_max)}\n"
        f"[rule {WATCH_RULE}]\n"
        f"keys = {', '.join(keys)}\n")
    return path


class PluginProcess:
    """The plugin as auditd runs it: records on stdin, output to files for the report."""

    def __init__(self, config: Path, spool: Path, logs: Path) -> None:
        self.config = config
        self.spool = spool
        self.logs = logs
        self.process = None  # type: Optional[subprocess.Popen]
        self.runs = 0

    def start(self, *args: str, prefix: Iterable[str] = ()) -> "PluginProcess":
        """Run it with these arguments; prefix: a command that execs it (setpriv ...)."""
        self.runs += 1
        with open(self.logs / f"plugin-{self.runs}.out", "wb") as out, \
                open(self.logs / f"plugin-{self.runs}.err", "wb") as err:
            self.process = subprocess.Popen(
                [*prefix, PYTHON, str(PLUGIN), "--config", str(self.config), *args],
                stdin=subprocess.PIPE, stdout=out, stderr=err, cwd="/", start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def write(self, data: bytes) -> None:
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def close(self, timeout: float = 30) -> int:
        """EOF on stdin, as when auditd stops; the plugin must exit on its own."""
        self.process.stdin.close()
        return self.wait(timeout)

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the plugin did not exit within {timeout} s; "
                                 f"stderr: {self.stderr()[-2000:]!r}")

    def signal(self, number: int) -> None:
        self.process.send_signal(number)

    def stderr(self) -> str:
        return (self.logs / f"plugin-{self.runs}.err").read_text(errors="replace")

    def stop(self) -> None:
        """Cleanup: the process must not outlive its test."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.process and self.process.stdin and not self.process.stdin.closed:
            try:
                self.process.stdin.close()
            except BrokenPipeError:
                pass

    def queued(self) -> list[Path]:
        queue = self.spool / "queue"
        return sorted(p for p in queue.glob("*.eml") if not p.name.startswith(".")) \
            if queue.is_dir() else []

    def queued_event_ids(self) -> list[str]:
        ids = []
        for path in self.queued():
            try:
                message = BytesParser(policy=email.policy.default).parsebytes(path.read_bytes())
            except FileNotFoundError:
                continue  # delivered meanwhile
            ids.append(str(message.get("X-Audit-Event", "")).rsplit("@", 1)[0])
        return ids
