"""Escaping of hostile text: one visible line, cut with the count of what was cut, no
encoded word smuggled into a header."""

import pytest
from mailalert.text import escape_text, header_text


@pytest.mark.parametrize("text, shown", [
    ("plain /etc/shadow", "plain /etc/shadow"),
    ("a\nb\rc\x00d\x7fe\x1b[0m", "a\\x0ab\\x0dc\\x00d\\x7fe\\x1b[0m"),
    ("bad \udcff\udcfe", "bad \\xff\\xfe"),           # undecodable bytes (surrogateescape)
    ("caf\u00e9", "caf\u00e9"),                        # real text stays readable
    ("x\u2028y\u202ez", "x\\u2028y\\u202ez"),          # line separator, bidi override
    ("\x85next line", "\\x85next line"),               # C1 control
    ("back\\slash", "back\\\\slash"),                  # so that \\x0a cannot be forged
    # characters that do not show as themselves: direction marks, embeddings and isolates,
    # zero-width and other spaces, a soft hyphen, a tag (Unicode Cf and Zs)
    ("a\u200eb\u200fc", "a\\u200eb\\u200fc"),
    ("\u202a\u202b\u202c\u202d\u2066\u2067\u2068\u2069",
     "\\u202a\\u202b\\u202c\\u202d\\u2066\\u2067\\u2068\\u2069"),
    ("zero\u200bwidth\ufeff", "zero\\u200bwidth\\ufeff"),
    ("no\u00a0break\u3000wide", "no\\u00a0break\\u3000wide"),
    ("soft\u00adhyphen\U000e0041", "soft\\u00adhyphen\\U000e0041"),
    ("ASCII space stays, \u4e2d too", "ASCII space stays, \u4e2d too"),
])
def test_escape_text_makes_one_visible_line(text, shown):
    assert escape_text(text, 100) == shown


def test_escape_text_cuts_with_the_number_of_characters_cut():
    assert escape_text("x" * 250, 200) == "x" * 200 + "...[50 more characters]"


def test_header_text_cannot_start_an_encoded_word():
    assert header_text("=?utf-8?q?=0A?=", 100) == "=\\?utf-8?q?=0A?="
