"""Turning attacker-controlled text into one printable line that is safe to show."""

# Python 3.6 (RHEL 8) has no list[str] or X | None in annotations: keep typing's names.
# ruff: noqa: UP006, UP035

import re
import unicodedata
from typing import Tuple

FIELD_MAX = 200  # characters of one value in the summary
# Characters that escape_text looks at one by one: all but printable ASCII and backslash.
# Of those, the Unicode categories that do not show as themselves and so could disguise a
# file name: format characters (bidi marks and overrides, zero-width spaces, tags: Cf),
# spaces other than the ASCII one (no-break, ideographic: Zs), line and paragraph
# separators (Zl, Zp), lone surrogates (Cs); they are shown as \uNNNN.
NOT_PLAIN_RE = re.compile(r"[^\x20-\x5b\x5d-\x7e]")
UNSEEN_CATEGORIES = ("Cf", "Cs", "Zl", "Zp", "Zs")


def escape_text(text: str, limit: int) -> str:
    """Make text one printable line: control characters, undecodable bytes and characters
    that do not show as themselves (UNSEEN_CATEGORIES) become visible escapes; longer than
    limit is cut with a marker saying how many characters were cut. Only what is shown is
    escaped, so that a huge value costs no more than a short one."""
    if NOT_PLAIN_RE.search(text, 0, limit):
        shown, used = _escape_head(text, limit)
    else:
        shown, used = text[:limit], min(len(text), limit)
    if used < len(text):
        return f"{shown}...[{len(text) - used} more characters]"
    return shown


def _escape_head(text: str, limit: int) -> Tuple[str, int]:
    """The escaped start of text, at most limit characters long and with no escape cut
    in two, and how many characters of text it shows."""
    out, size = [], 0
    for used, char in enumerate(text[:limit]):
        shown = _escape_char(char)
        if size + len(shown) > limit:
            return "".join(out), used
        out.append(shown)
        size += len(shown)
    return "".join(out), min(len(text), limit)


def _escape_char(char: str) -> str:
    code = ord(char)
    if code < 0x20 or code == 0x7F or 0x80 <= code < 0xA0:
        return f"\\x{code:02x}"
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if char == "\\":
        return "\\\\"
    if code > 0x7F and unicodedata.category(char) in UNSEEN_CATEGORIES:
        return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
    return char


def header_text(text: str, limit: int) -> str:
    """escape_text, plus: no RFC 2047 encoded word can be smuggled in ("=?" -> "=\\?")."""
    return escape_text(text, limit).replace("=?", "=\\?")


def unescape_octal(text: str) -> str:
    """auparse's tty escaping writes control bytes as \\ooo; turn them back into characters
    so that escape_text shows every value in one notation."""
    return re.sub(r"\\([0-3][0-7]{2})", lambda m: chr(int(m.group(1), 8)), text)
