"""Units of the plugin in-process: escaping of hostile text, the cheap key pre-filter, and
the Python 3.6 floor (with an old interpreter when this machine has one)."""

import glob
import os
import socket
import subprocess

import pytest
from conftest import PLUGIN, events_with_key, log_bytes


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
def test_escape_text_makes_one_visible_line(plugin_module, text, shown):
    assert plugin_module.escape_text(text, 100) == shown


def test_escape_text_cuts_with_the_number_of_characters_cut(plugin_module):
    assert plugin_module.escape_text("x" * 250, 200) == "x" * 200 + "...[50 more characters]"


def test_header_text_cannot_start_an_encoded_word(plugin_module):
    assert plugin_module.header_text("=?utf-8?q?=0A?=", 100) == "=\\?utf-8?q?=0A?="


@pytest.mark.parametrize("record, watched", [
    (b'key="alert"', True),
    (b'key="alert2"', False),
    (b'key="xalert"', False),
    (b"key=(null)", False),
    (b"key=616C657274", True),                        # hex: a key with special characters
    (b"key=6F7468657201616C657274", True),            # other\x01alert
    (b"key=616C6572740170", True),                    # alert\x01p
    (b'name="alert"', False),
])
def test_key_prefilter_finds_every_watched_key_form(plugin_module, record, watched):
    rule = plugin_module.Rule("r", ["alert", "second key"], ["root"], 1, 1)
    pattern = plugin_module.key_pattern([rule])
    line = b"type=SYSCALL msg=audit(1.000:7): comm=\"x\" " + record + b"\n"
    assert bool(pattern.search(line)) is watched


def test_prefilter_false_positive_is_rejected_by_the_exact_match(plugin_module, tmp_path):
    """A file named like a key field passes the cheap filter, but no alert is made."""
    hex_name = b"key=616C657274".hex().upper().encode()
    lines = (b'type=SYSCALL msg=audit(1795686297.100:9): arch=c000003e syscall=257 success=yes'
             b' exit=3 items=1 ppid=1 pid=2 auid=0 uid=0 comm="touch" exe="/usr/bin/touch"'
             b' key="other"\n'
             b'type=PATH msg=audit(1795686297.100:9): item=0 name="/tmp/key=616C657274"'
             b' nametype=CREATE\n'
             b'type=PATH msg=audit(1795686297.100:9): item=1 name=' + hex_name + b'\n'
             b'type=EOE msg=audit(1795686297.100:9): \n')
    config = plugin_module.Config()
    config.rules = [plugin_module.Rule("r", ["alert"], ["root"], 10, 60)]
    plugin = plugin_module.Plugin(config, plugin_module.Log(), True, [])
    handled, mailed = [], []
    original = plugin.handle
    plugin.handle = lambda au: (handled.append(1), original(au))
    plugin.outbox.put = mailed.append
    plugin.framer.feed(lines)
    plugin.au.flush_feed()
    assert handled == [1], "the pre-filter lets the look-alike through"
    assert mailed == [], "the exact key test rejects it"


def interpreter(version):
    """A python of that version on this machine (system or pyenv), or None."""
    found = sorted(glob.glob("/usr/bin/python" + version)
                   + glob.glob("/usr/libexec/platform-python" + version)
                   + glob.glob(f"/root/.pyenv/versions/{version}.*/bin/python{version}"))
    return found[0] if found else None


SMOKE = r"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("m", sys.argv[1])
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
c = m.Config(); rule = m.Rule("r", ["k"], ["root"], 1, 60); c.rules = [rule]
e = m.Event(); e.keys = ["k"]; e.subject = "root"; e.action = "opened-file"
e.object = "evil\n=?utf-8?q?x?=\udcff"; e.time = "1795686297.646"; e.serial = 5
e.records = ["type=SYSCALL msg=audit(1795686297.646:5): key=\"k\""]
data = m.compose_alert(c, rule, "k", e, None).as_bytes(policy=m.WIRE_POLICY)
h = m.Held(); h.total = 1; h.groups[("a", "b", "c")] = 1
m.compose_digest(c, rule, h, 0.0).as_bytes(policy=m.WIRE_POLICY)
print(m.envelope(data)[1], data.split(b"\n")[4].decode())
"""


@pytest.mark.parametrize("version", ["3.6", "3.13"])
def test_runs_on_the_oldest_and_newest_python(version):
    """vermin (make test-plugin) proves the 3.6 floor statically; this runs the parts that
    need no auparse (config, composing, envelope) on a real 3.6 and 3.13 when installed,
    with deprecation warnings as errors."""
    python = interpreter(version)
    if python is None:
        pytest.skip(f"no Python {version} on this machine; vermin covers the 3.6 floor")
    result = subprocess.run([python, "-W", "error::DeprecationWarning", "-c", SMOKE,
                             str(PLUGIN)], capture_output=True, check=False, env={})
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().splitlines() == [
        "['root'] Subject: [audit] k: root opened-file evil\\x0a=\\?utf-8?q?x?=\\xff on "
        + socket.gethostname()]
    bad = subprocess.run([python, str(PLUGIN), "--config", "/nonexistent.conf"],
                         capture_output=True, check=False, env={})
    assert bad.returncode == 2 and b"/nonexistent.conf: no such file" in bad.stderr


def test_raw_nul_before_the_key_does_not_hide_the_event(plugin_module):
    """auparse ends a record at NUL; the plugin reads it as ^@ so key= after it counts."""
    record = (b'type=SYSCALL msg=audit(1795686297.100:9): arch=c000003e syscall=257 success=yes'
              b' exit=3 items=0 ppid=1 pid=2 auid=0 uid=0 comm="a\0b" exe="/usr/bin/touch"'
              b' key="alert"\ntype=EOE msg=audit(1795686297.100:9): \n')
    config = plugin_module.Config()
    config.rules = [plugin_module.Rule("r", ["alert"], ["root"], 10, 60)]
    plugin = plugin_module.Plugin(config, plugin_module.Log(), True, [])
    mailed = []
    plugin.outbox.put = mailed.append
    plugin.framer.feed(record)
    plugin.au.flush_feed()
    assert len(mailed) == 1
    assert 'comm="a^@b"' in mailed[0].get_content()


def test_a_stale_errno_does_not_make_the_event_skipped(plugin_module):
    """auparse's binding raises OSError for "no such field" when errno still holds an
    earlier error, such as the ENOENT of a verify request that does not exist; the fuzz
    run found events skipped (and their alerts lost) so. Here every event is handled
    right after a failed open."""
    data = log_bytes("flood")
    config = plugin_module.Config()
    config.rules = [plugin_module.Rule("r", ["amx-flood"], ["root"], 1000, 60)]
    plugin = plugin_module.Plugin(config, plugin_module.Log(), True, [])
    mailed = []
    plugin.outbox.put = mailed.append
    original = plugin.handle

    def handle_after_a_failed_open(au):
        try:
            os.open("/nonexistent/verify/1", os.O_RDONLY)
        except FileNotFoundError:
            pass
        original(au)
    plugin.handle = handle_after_a_failed_open
    plugin.framer.feed(data)
    plugin.finish_input()
    assert len(mailed) == len(events_with_key(data, "amx-flood"))
