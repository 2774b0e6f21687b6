"""LineFramer on its own: chunks of any size in, whole lines out; no auparse, no events."""

import pytest
from mailalert.framing import MAX_LINE, LineFramer
from mailalert.log import Log
from mailalert.status import Status


@pytest.fixture
def framed():
    """A framer and the lines it hands on (each call's bytes joined), and its Status."""
    out = []
    status = Status()
    framer = LineFramer(out.append, status, Log())
    return framer, out, status


def frame(framer, out, data: bytes, size: int) -> bytes:
    for start in range(0, len(data), size):
        framer.feed(data[start:start + size])
    framer.finish()
    assert all(part.endswith(b"\n") for part in out), "only whole lines are handed on"
    return b"".join(out)


@pytest.mark.parametrize("size", [1, 2, 7, 40, 1000])
def test_chunks_cut_anywhere_give_the_same_lines(framed, size):
    framer, out, _status = framed
    data = b"".join(b"type=SYSCALL msg=audit(1.%03d:%d): key=\"k\"\n" % (i, i) for i in range(30))
    assert frame(framer, out, data, size) == data


def test_a_last_line_without_its_newline_still_counts(framed):
    framer, out, _status = framed
    assert frame(framer, out, b"one\ntwo", 3) == b"one\ntwo\n"


def test_a_nul_byte_is_shown_as_caret_at(framed):
    framer, out, _status = framed
    assert frame(framer, out, b"comm=\"a\0b\" key=\"k\"\n", 4) == b"comm=\"a^@b\" key=\"k\"\n"


@pytest.mark.parametrize("size", [10, 4096, 1 << 20])
def test_lines_over_max_line_are_dropped_and_counted(framed, size):
    """Within one chunk or across many (then the framer skips to the line's end)."""
    framer, out, status = framed
    long = b"x" * (MAX_LINE + 1) + b"\n"
    longest = b"y" * MAX_LINE + b"\n"  # exactly MAX_LINE: kept
    data = b"a\n" + long + b"b\n" + long + longest + b"c\n"
    assert frame(framer, out, data, size) == b"a\nb\n" + longest + b"c\n"
    assert status.long_lines == 2 and status.changed


def test_a_line_of_max_line_bytes_waiting_for_its_newline_is_kept(framed):
    framer, out, status = framed
    framer.feed(b"y" * MAX_LINE)
    framer.feed(b"\n")
    assert out == [b"y" * MAX_LINE + b"\n"] and status.long_lines == 0
