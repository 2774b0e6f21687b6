"""The spool's guarantees, on the real plugin with real failures of the file system: what
the plugin cannot deliver, ever, is moved out of the way to bad/ and holds up no other
alert; a spool that someone else could have filled is refused, and nothing in it is
followed through a symbolic link. (Delivery and retries: test_delivery.py, test_faults.py.)"""

import errno
import json
import os
import re
import shutil
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import PLUGIN, PYTHON, run_plugin
from fakes.harness import EventSource, PluginProcess, Sendmail, write_config
from polling import wait_for

CORRUPT_NAME = "00000000000000001-1-000001.eml"  # older than any alert: tried first


class Rig:
    """One plugin, its spool, its own sendmail stand-in and a source of matching events."""

    def __init__(self, root, **config) -> None:
        self.root = root
        self.sendmail = Sendmail(root)
        self.spool = root / "spool"
        self.queue = self.spool / "queue"
        self.bad = self.spool / "bad"
        self.config = write_config(root / "plugin.conf", self.sendmail.path, self.spool, **config)
        self.plugin = PluginProcess(self.config, self.spool, root)
        self.source = EventSource()

    def make_queue(self) -> None:
        """queue/ as the plugin makes it, for a test that puts files there first."""
        self.queue.mkdir(mode=0o700, parents=True)
        self.spool.chmod(0o700)

    def delivered_ids(self) -> "list[str]":
        return sorted(m.event_id for m in self.sendmail.mails())

    def status(self) -> dict:
        try:
            return json.loads((self.spool / "status.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}  # not written yet, or being replaced


@pytest.fixture
def make_rig(tmp_path):
    rigs = []

    def make(**config) -> Rig:
        rigs.append(Rig(tmp_path, **config))
        return rigs[-1]
    yield make
    for rig in rigs:
        rig.plugin.stop()
        rig.sendmail.kill_hung()


def test_a_corrupt_file_goes_to_bad_and_holds_up_no_alert(make_rig):
    """A file without headers (so without a recipient) in the queue, older than any new
    alert: it cannot be delivered, now or later. With retry_min = 30, a plugin that takes
    it for a failure of the transport pauses all delivery for 30 s."""
    rig = make_rig(retry_min=30)
    rig.make_queue()
    corrupt = rig.queue / CORRUPT_NAME
    corrupt.write_bytes(b"\x00\xff not a message: no header, no recipient\n")
    events, ids = rig.source.matching(3)
    rig.plugin.start()
    rig.plugin.write(events)
    started = time.monotonic()
    wait_for(lambda: rig.delivered_ids() == sorted(ids), 15, "the new alerts, without a pause")
    print(f"new alerts delivered {time.monotonic() - started:.1f} s after the events")
    assert [p.name for p in rig.bad.iterdir()] == [CORRUPT_NAME]
    assert (rig.bad / CORRUPT_NAME).read_bytes() == b"\x00\xff not a message: no header, no recipient\n"
    assert not corrupt.exists()
    wait_for(lambda: rig.status().get("bad") == 1, 10, "status.json to count the file in bad/")
    assert rig.plugin.close() == 0
    lines = [line for line in rig.plugin.stderr().splitlines() if CORRUPT_NAME in line]
    assert len(lines) == 1, lines
    assert "failed for good, moved to" in lines[0] and "the message has no recipient" in lines[0]


# ---------------------------------------------------------------------------------------
# Ownership and symbolic links: the plugin runs as root and mails out what the queue holds.

NOBODY = 65534


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give directories to another user")


def make_spool(rig: Rig) -> None:
    rig.make_queue()
    rig.bad.mkdir(mode=0o700)


UNSAFE = {
    # case: (how the spool is spoiled, the words of the refusal)
    "queue mode 0777": (lambda rig: rig.queue.chmod(0o777),
                        "queue is writable by group or others (mode 777); make it 0700"),
    "bad mode 0770": (lambda rig: rig.bad.chmod(0o770),
                      "bad is writable by group or others (mode 770)"),
    "spool mode 0777": (lambda rig: rig.spool.chmod(0o777),
                        "spool is writable by group or others (mode 777)"),
    "spool owned by nobody": (lambda rig: os.chown(rig.spool, NOBODY, NOBODY),
                              f"spool is owned by uid {NOBODY}, not 0"),
    "queue owned by nobody": (lambda rig: os.chown(rig.queue, NOBODY, NOBODY),
                              f"queue is owned by uid {NOBODY}, not 0"),
    "queue a symbolic link": (lambda rig: (rig.queue.rmdir(), (rig.root / "elsewhere").mkdir(mode=0o700),
                                           rig.queue.symlink_to(rig.root / "elsewhere")),
                              "queue is not a directory"),
}


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_a_spool_someone_else_could_fill_is_refused(make_rig, case):
    needs_root()
    rig = make_rig()
    make_spool(rig)
    spoil, words = UNSAFE[case]
    spoil(rig)
    mode = stat.S_IMODE(os.lstat(rig.queue).st_mode)
    result = run_plugin(["--config", rig.config], rig.source.matching(1)[0])
    stderr = result.stderr.decode()
    assert result.returncode == 1, f"{case}: exit {result.returncode}: {stderr}"
    assert f"cannot use the spool directory {rig.spool}: " in stderr and words in stderr, stderr
    assert stat.S_IMODE(os.lstat(rig.queue).st_mode) == mode, "left as it was found"
    assert rig.sendmail.mails() == []


def test_a_planted_status_tmp_link_is_not_written_through(make_rig):
    rig = make_rig()
    make_spool(rig)
    victim = rig.root / "victim"
    victim.write_text("precious\n")
    (rig.spool / "status.json.tmp").symlink_to(victim)
    result = run_plugin(["--config", rig.config], rig.source.matching(1)[0])
    assert result.returncode == 0, result.stderr.decode()
    assert victim.read_text() == "precious\n"
    assert not os.path.lexists(rig.spool / "status.json.tmp")
    assert rig.status()["queue"] == 0


OUTSIDE = b"From: root@example.com\nTo: attacker@example.com\nSubject: a secret\n\nsecret\n"
NOT_FILES = {
    "symbolic link": lambda path, target: path.symlink_to(target),
    "fifo": lambda path, _target: os.mkfifo(path),
    "directory": lambda path, _target: path.mkdir(),
}


@pytest.mark.parametrize("kind", sorted(NOT_FILES))
def test_what_is_no_regular_file_in_the_queue_is_neither_followed_nor_mailed(make_rig, kind):
    """A symbolic link to a message elsewhere (that root would mail out), a FIFO (opening
    it waits for a writer), a directory: each goes to bad/ as it is; the alert that comes
    next is delivered."""
    rig = make_rig()
    make_spool(rig)
    outside = rig.root / "outside.eml"
    outside.write_bytes(OUTSIDE)
    NOT_FILES[kind](rig.queue / CORRUPT_NAME, outside)
    events, ids = rig.source.matching(1)
    rig.plugin.start()
    rig.plugin.write(events)
    wait_for(lambda: set(ids) <= set(rig.delivered_ids()), 30, "the alert after it")
    assert rig.plugin.close() == 0
    assert all(m.message["Subject"] != "a secret" for m in rig.sendmail.mails()), "mailed out"
    assert rig.delivered_ids() == ids
    assert [p.name for p in rig.bad.iterdir()] == [CORRUPT_NAME]
    moved = rig.bad / CORRUPT_NAME
    assert {"symbolic link": moved.is_symlink, "fifo": moved.is_fifo,
            "directory": moved.is_dir}[kind]()
    assert outside.read_bytes() == OUTSIDE
    assert f"{CORRUPT_NAME} failed for good" in rig.plugin.stderr()


# ---------------------------------------------------------------------------------------
# A spool that cannot take an alert: full or read-only. The reading thread never waits
# for mail; the worker delivers the alert from memory.

UNSPOOLED_MAX = 1000  # the plugin's bound on alerts held in memory


@pytest.fixture
def tmpfs():
    """mount(path, options): a small tmpfs there (root only), unmounted at the end."""
    needs_root()
    mounted = []

    def mount(path, options="size=200k"):
        path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"{options},mode=0700", "tmpfs",
                               str(path)], capture_output=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
        mounted.append(path)
    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory) -> "Path":
    """Fill the file system of directory up to the last block; the filler file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as err:
        assert err.errno == errno.ENOSPC, err
    finally:
        os.close(fd)
    return filler


def test_a_full_spool_never_stalls_the_reader_and_memory_holds_the_alerts(make_rig, tmpfs):
    """The whole spool on a full 200 KB tmpfs, sendmail hanging, timeout 10 s: four alerts
    that cannot be spooled. A plugin that delivered them itself, on the reading thread,
    stopped reading stdin for 4 x 10 s. Then space comes back: status.json says that four
    alerts are held in memory; then the MTA: they are delivered from memory."""
    rig = make_rig(timeout=10)
    tmpfs(rig.spool)
    filler = fill(rig.spool)
    rig.sendmail.set_mode("hang")
    events, ids = rig.source.matching(4)
    noise = rig.source.noise(3000)  # 4 MB: far more than a pipe holds
    rig.plugin.start()
    wrote = threading.Event()
    threading.Thread(target=lambda: (rig.plugin.write(events + noise), wrote.set()),
                     daemon=True).start()
    assert wrote.wait(8), "the plugin stopped reading stdin while the spool was full"

    wait_for(lambda: rig.plugin.stderr().count("cannot spool an alert") == 4, 20,
             "four alerts that could not be spooled")
    assert rig.plugin.stderr().count("it is held in memory for delivery") == 4
    wait_for(lambda: f"cannot write {rig.spool}/status.json" in rig.plugin.stderr(), 10,
             "a failed write of status.json")
    leftovers = [p.name for d in (rig.spool, rig.queue) for p in d.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == [], "a failed write left its temporary file behind"

    filler.unlink()
    wait_for(lambda: rig.status().get("unspooled") == 4, 10, "status.json: 4 alerts in memory")
    assert (rig.status()["dropped"], rig.status()["queue"]) == (0, 0)
    assert rig.plugin.queued() == []
    rig.sendmail.set_mode("deliver")
    rig.sendmail.kill_hung()
    wait_for(lambda: rig.delivered_ids() == sorted(ids), 60, "the alerts, delivered from memory")
    wait_for(lambda: rig.status().get("unspooled") == 0, 10, "status.json: none left in memory")
    assert rig.plugin.close() == 0


def test_memory_holds_a_bounded_number_then_drops_and_counts(make_rig, tmpfs):
    """queue/ read-only, the MTA failing: UNSPOOLED_MAX alerts are held in memory, the
    next three are dropped, each with a log line, and counted; at exit the held ones
    still cannot be spooled, so they are lost, and counted."""
    rig = make_rig()
    rig.make_queue()
    tmpfs(rig.queue, "ro,size=200k")
    rig.sendmail.set_mode("fail")
    events, _ids = rig.source.matching(UNSPOOLED_MAX + 3)
    rig.plugin.start()
    rig.plugin.write(events)
    wait_for(lambda: rig.status().get("dropped") == 3, 60, "three alerts dropped")
    wait_for(lambda: rig.status().get("unspooled") == UNSPOOLED_MAX, 10,
             f"status.json: {UNSPOOLED_MAX} alerts in memory")
    assert rig.plugin.stderr().count("it is dropped") == 3
    assert rig.plugin.close() == 0
    assert f"{UNSPOOLED_MAX} alerts held in memory are lost at exit" in rig.plugin.stderr()
    final = rig.status()
    assert (final["dropped"], final["unspooled"]) == (UNSPOOLED_MAX + 3, 0)


# ---------------------------------------------------------------------------------------
# Durability: what strace sees the plugin do.

TRACED = "trace=fsync,rename,renameat,renameat2,unlink,unlinkat"
TRACE_LINE = re.compile(r"^(\d+) +(\w+)\((.*)")


def traced_calls(trace: Path) -> "dict[str, list]":
    """{thread id: [(call, [paths])]} from `strace -f -y` output, in order; a call split
    by another thread's (<unfinished ...>, <... resumed>) counts where it began."""
    calls = {}
    for line in trace.read_text().splitlines():
        found = TRACE_LINE.match(line)
        if found and not found.group(3).startswith("..."):
            paths = re.findall(r'"([^"]*)"|<(/[^>]*)>', found.group(3))
            calls.setdefault(found.group(1), []).append(
                (found.group(2), [quoted or fd for quoted, fd in paths]))
    return calls


def test_each_change_to_the_queue_is_synced_file_and_directory(make_rig):
    """A spooled alert: the file is fsynced before its rename, and the queue directory
    after it; a delivered one: the directory after its unlink. Else a power failure can
    lose an accepted alert, or bring back a delivered one."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed")
    rig = make_rig()
    events, ids = rig.source.matching(2)
    trace = rig.root / "trace"
    done = subprocess.run([strace, "-f", "-qq", "-y", "-e", TRACED, "-o", str(trace), PYTHON,
                           str(PLUGIN), "--config", str(rig.config)],
                          input=events, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert rig.delivered_ids() == sorted(ids) and rig.plugin.queued() == []
    queue = str(rig.queue)
    renamed = unlinked = 0
    for thread, calls in traced_calls(trace).items():
        queue_calls = [(call, paths) for call, paths in calls
                       if any(os.path.dirname(p) == queue or p == queue for p in paths)]
        for at, (call, paths) in enumerate(queue_calls):
            if call.startswith("rename"):
                renamed += 1
                assert ("fsync", [paths[0]]) in queue_calls[:at], f"{paths[0]} renamed unsynced"
            if call.startswith(("rename", "unlink")):
                unlinked += call.startswith("unlink")
                later = queue_calls[at + 1:at + 2]
                assert later == [("fsync", [queue])], \
                    f"thread {thread}: {call} {paths} not followed by an fsync of {queue}: {later}"
    assert (renamed, unlinked) == (2, 2), (renamed, unlinked)


def test_temporary_files_left_by_a_kill_are_removed_at_start(make_rig):
    """A SIGKILL in the middle of a write leaves .NAME.tmp behind; the next start removes
    them, and leaves everything else as it is."""
    rig = make_rig()
    make_spool(rig)
    leftovers = [rig.queue / ".01796000000000000-1-000001.eml.tmp",
                 rig.bad / ".01796000000000000-1-000002.eml.tmp"]
    for path in leftovers:
        path.write_bytes(b"From: a@example.com\nTo: b@exa")
    kept = rig.bad / "01796000000000000-1-000003.eml"
    kept.write_bytes(b"refused for good\n")
    rig.plugin.start()
    wait_for(lambda: not any(p.exists() for p in leftovers), 15, "the leftovers to go")
    assert rig.plugin.close() == 0
    assert [p.name for p in rig.bad.iterdir()] == [kept.name]
    assert rig.status()["bad"] == 1


# ---------------------------------------------------------------------------------------
# The queue's bound: 10,000 files or 256 MB (an MTA down for long; verification alerts,
# which the rate limit does not count). Beyond it an alert is held in memory, as on a
# full disk, and the reading thread goes on.

SPOOL_MAX_FILES, SPOOL_MAX_BYTES = 10000, 256 << 20
WAITING = b"From: a@example.com\nTo: b@example.com\nSubject: waiting\n\nfor the MTA\n"


def fill_queue_to_files(rig: Rig) -> None:
    for number in range(SPOOL_MAX_FILES):
        (rig.queue / f"{number + 1:017d}-1-000001.eml").write_bytes(WAITING)


def fill_queue_to_bytes(rig: Rig) -> None:
    (rig.queue / f"{1:017d}-1-000001.eml").write_bytes(WAITING)  # tried first, and fails
    with open(rig.queue / f"{2:017d}-1-000001.eml", "wb") as sparse:
        sparse.truncate(SPOOL_MAX_BYTES - len(WAITING))  # no room for an alert on top


@pytest.mark.parametrize("fill, files", [(fill_queue_to_files, SPOOL_MAX_FILES),
                                         (fill_queue_to_bytes, 2)], ids=["files", "bytes"])
def test_at_its_bound_the_queue_takes_no_more_and_memory_holds_the_alert(make_rig, fill, files):
    rig = make_rig(retry_min=60)
    make_spool(rig)
    fill(rig)
    rig.sendmail.set_mode("fail")
    events, _ids = rig.source.matching(2)
    rig.plugin.start()
    wait_for(lambda: "delivery of 00000000000000001-1-000001.eml failed" in rig.plugin.stderr(),
             30, "the first delivery to fail (delivery then pauses 60 s)")
    rig.plugin.write(events)
    wait_for(lambda: rig.status().get("unspooled") == 2, 30, "status.json: 2 alerts in memory")
    refused = [line for line in rig.plugin.stderr().splitlines() if "cannot spool an alert" in line]
    assert len(refused) == 2, refused
    assert all("the queue is at its bound" in line and "held in memory" in line for line in refused)
    assert len(list(rig.queue.iterdir())) == files
    assert rig.plugin.close() == 0
    assert rig.status()["dropped"] == 2, "still no room at exit: lost, and counted"


# Root without the capabilities that let it read any file: a file of mode 000 then fails
# to open with EACCES, a real error of the file system that no retry has to fear.
NO_DAC = ["--inh-caps=-dac_override,-dac_read_search",
          "--bounding-set=-dac_override,-dac_read_search", "--"]


def test_a_queue_file_that_fails_to_read_is_kept_and_retried(make_rig):
    """An error reading a queue file other than its absence is a temporary failure: the
    file stays queued and is retried (it was dropped from the worker's list as if
    delivered, to lie in the queue until a restart); once readable, it is delivered."""
    setpriv = shutil.which("setpriv")
    if setpriv is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv (util-linux) to drop CAP_DAC_OVERRIDE")
    rig = make_rig()
    make_spool(rig)
    unreadable = rig.queue / CORRUPT_NAME
    unreadable.write_bytes(WAITING)
    unreadable.chmod(0)
    rig.plugin.start(prefix=[setpriv, *NO_DAC])
    wait_for(lambda: "attempt 2" in rig.plugin.stderr(), 30, "a second attempt at the file")
    assert f"delivery of {CORRUPT_NAME} failed (attempt 1), next try in 1 s: cannot read it: " \
           "[Errno 13] Permission denied" in rig.plugin.stderr()
    assert unreadable.exists() and rig.sendmail.mails() == []
    unreadable.chmod(0o600)
    wait_for(lambda: [str(m.message["Subject"]) for m in rig.sendmail.mails()] == ["waiting"],
             30, "the file, delivered once readable")
    wait_for(lambda: rig.plugin.queued() == [], 10, "an empty queue")
    assert rig.plugin.close() == 0
