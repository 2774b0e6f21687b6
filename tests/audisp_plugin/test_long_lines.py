"""Lines longer than any audit record: the kernel writes at most about 9 KB, but --print
reads saved logs of unknown origin. Such a line is dropped before auparse (which would
buffer it whole) sees it, counted, and costs neither memory nor time; the events around it
alert as usual. Values are cut before they are escaped, so a huge one costs no more than
a short one."""

import json
import os
import time

import pytest
from fakes.harness import (
    EventSource,
    PeakRss,
    PluginProcess,
    Sendmail,
    restamp,
    write_config,
)
from mailalert.text import escape_text
from polling import wait_for

MB = 1 << 20
RSS_LIMIT_MB = 60  # the plugin needs about 25 MB; a line kept whole needs several times its size
CPU_LIMIT = 5.0  # seconds of user+system time for the whole run


def reaped(pid: int):
    """(pid, status, rusage) once the child has exited, else None."""
    found = os.wait4(pid, os.WNOHANG)
    return found if found[0] else None


def end_measured(plugin: PluginProcess, rss: PeakRss) -> "tuple[int, float, float]":
    """EOF on stdin, then the exit code, peak RSS (MB) and CPU seconds (wait4)."""
    plugin.process.stdin.close()
    _pid, status, usage = wait_for(lambda: reaped(plugin.pid), 60, "the plugin to exit")
    plugin.process.returncode = os.waitstatus_to_exitcode(status)
    return plugin.process.returncode, rss.result(), usage.ru_utime + usage.ru_stime


def long_line(kind: str, size: int, source: EventSource) -> bytes:
    """plain: size bytes of text and no record in it; matching: a watched SYSCALL record
    (its key early in the line) with a name= field of size bytes."""
    if kind == "plain":
        return b"x" * size + b"\n"
    records = restamp(source.watch[0], source.seconds, 1).splitlines(keepends=True)
    return records[0].rstrip(b"\n") + b" name=" + b"41" * (size // 2) + b"\n" + b"".join(records[1:])


@pytest.mark.parametrize("kind, size", [("plain", 50 * MB), ("matching", 50 * MB)])
def test_a_huge_line_is_dropped_with_memory_and_time_bounded(tmp_path, kind, size):
    sendmail = Sendmail(tmp_path)
    spool = tmp_path / "spool"
    plugin = PluginProcess(write_config(tmp_path / "plugin.conf", sendmail.path, spool),
                           spool, tmp_path)
    source = EventSource()
    before, before_ids = source.matching(1)
    after, after_ids = source.matching(1)
    line = long_line(kind, size, source)
    try:
        plugin.start()
        rss = PeakRss(plugin.pid)
        plugin.write(before)
        started = time.monotonic()
        for at in range(0, len(line), MB):
            plugin.write(line[at:at + MB])
        plugin.write(after)
        code, peak, cpu = end_measured(plugin, rss)
        print(f"{kind} line of {size // MB} MB: exit {code}, peak RSS {peak:.1f} MB, "
              f"CPU {cpu:.2f} s, {time.monotonic() - started:.1f} s")
        assert code == 0, plugin.stderr()[-2000:]
        assert peak < RSS_LIMIT_MB, f"peak RSS {peak:.0f} MB"
        assert cpu < CPU_LIMIT, f"{cpu:.1f} s of CPU"
        assert sorted(m.event_id for m in sendmail.mails()) == sorted(before_ids + after_ids)
        assert json.loads((spool / "status.json").read_text())["long_lines"] == 1
        stderr = plugin.stderr()
        assert stderr.count("dropped a line longer than 65536 bytes") == 1, stderr
        assert "input lines longer than 65536 bytes dropped: 1" in stderr
    finally:
        plugin.stop()


def test_a_long_line_in_print_mode_is_counted_at_exit(tmp_path):
    """A few lines just over the limit, between records, in a saved log (--print)."""
    source = EventSource()
    events, ids = source.matching(3)
    records = events.splitlines(keepends=True)
    longer = b"type=PATH msg=audit(1.000:1): name=" + b"41" * 33000 + b"\n"  # 66 KB
    stream = records[0] + longer + b"".join(records[1:]) + longer + longer
    config = write_config(tmp_path / "plugin.conf", tmp_path / "none", tmp_path / "spool")
    plugin = PluginProcess(config, tmp_path / "spool", tmp_path)
    try:
        plugin.start("--print")
        plugin.write(stream)
        assert plugin.close() == 0
        printed = (tmp_path / "plugin-1.out").read_bytes()
        assert [i.encode() in printed for i in ids] == [True] * 3
        assert "input lines longer than 65536 bytes dropped: 3" in plugin.stderr()
    finally:
        plugin.stop()


def test_escaping_cuts_first_so_a_huge_value_costs_little():
    """10 million characters, half of them control characters: only what is shown is
    escaped (the old way escaped it all, then cut)."""
    text = "\x01a" * 5000000
    started = time.process_time()
    shown = escape_text(text, 2000)
    spent = time.process_time() - started
    assert shown == "\\x01a" * 400 + "...[9999200 more characters]"
    assert spent < 0.5, f"{spent:.2f} s to escape and cut"
