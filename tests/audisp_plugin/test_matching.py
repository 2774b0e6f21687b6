"""Which events raise an alert: exact key matches (several keys of one rule split on \\x01),
never a substring, never the CONFIG_CHANGE of loading the watch itself. Input: audit logs
captured on this host's kernel (tests/audisp_plugin/capture_logs.sh)."""

import pytest
from conftest import events_with_key, log_bytes, print_messages
from mailalert.config import load_config
from mailalert.log import Log
from mailalert.plugin import Plugin

ALL_LOGS = ("hostile", "exec-args", "multi-key", "flood", "config-change")
MANY = "[limits]\nmax_mails = 1000\n"


def alerted_events(messages):
    return sorted(m["X-Audit-Event"] for m in messages)


@pytest.fixture(scope="module")
def node():
    import socket
    return socket.gethostname()


@pytest.mark.parametrize("key", ["amx-hostile", "amx-exec", "amx-flood", "amx-multi", "amx-second"])
def test_each_event_with_the_key_gives_one_alert(tmp_path, node, key):
    data = log_bytes(*ALL_LOGS)
    messages = print_messages(tmp_path, MANY + f"[rule r]\nkeys = {key}\n", data)
    expected = sorted(f"{t}:{s}@{node}" for t, s in events_with_key(data, key))
    assert expected, "the captured logs must hold events with this key"
    assert alerted_events(messages) == expected
    assert {m["X-Audit-Key"] for m in messages} == {key}
    assert {m["X-Audit-Rule"] for m in messages} == {"r"}


@pytest.mark.parametrize("key", ["amx", "hostile", "amx-hostil", "amx-hostile2", "amx-host",
                                 "second", "amx-multiamx-second", "null", "key"])
def test_a_substring_or_superstring_of_a_key_does_not_match(tmp_path, key):
    messages = print_messages(tmp_path, MANY + f"[rule r]\nkeys = {key}\n",
                              log_bytes(*ALL_LOGS))
    assert messages == []


def test_rule_change_events_carrying_the_key_are_not_alerts(tmp_path):
    data = log_bytes("config-change")
    assert events_with_key(data, "amx-hostile", "CONFIG_CHANGE"), "capture lacks add_rule"
    assert print_messages(tmp_path, MANY + "[rule r]\nkeys = amx-hostile\n", data) == []


def test_one_event_matching_two_rules_mails_each_rule(tmp_path, node):
    data = log_bytes("multi-key")
    messages = print_messages(
        tmp_path, MANY + "[rule first]\nkeys = amx-multi\nto = a@example.com\n"
        "[rule second]\nkeys = nothing, amx-second\nto = b@example.com\n", data)
    events = events_with_key(data, "amx-multi")
    assert len(events) == 1
    by_rule = {m["X-Audit-Rule"]: m for m in messages}
    assert sorted(by_rule) == ["first", "second"]
    assert by_rule["first"]["To"] == "a@example.com"
    assert by_rule["second"]["To"] == "b@example.com"
    assert by_rule["second"]["X-Audit-Key"] == "amx-second"
    assert "keys:     amx-multi, amx-second" in by_rule["first"].get_content()


def test_key_arguments_form_a_rule_like_the_c_example(tmp_path):
    data = log_bytes(*ALL_LOGS)
    messages = print_messages(tmp_path, "[mail]\nto = sec@example.com\n" + MANY, data,
                              "amx-exec", "amx-second")
    assert len(messages) == len(events_with_key(data, "amx-exec")) + len(
        events_with_key(data, "amx-second"))
    assert {m["X-Audit-Rule"] for m in messages} == {"args"}
    assert {m["To"] for m in messages} == {"sec@example.com"}


def test_input_split_anywhere_gives_the_same_alerts(tmp_path):
    """Chunks cut inside a line (a pipe delivers any size) lose no event."""
    data = log_bytes("hostile", "flood")
    config_path = tmp_path / "c.conf"
    config_path.write_text(MANY + "[rule r]\nkeys = amx-hostile, amx-flood\n")
    config = load_config(str(config_path), [], True)

    def alerts(chunk_size):
        plugin = Plugin(config, Log(), True, [])
        seen = []
        plugin.outbox.put = lambda message: seen.append(message["X-Audit-Event"])
        for start in range(0, len(data), chunk_size):
            plugin.framer.feed(data[start:start + chunk_size])
        plugin.finish_input()
        return seen

    whole = alerts(len(data))
    assert len(whole) == len(events_with_key(data, "amx-hostile")) + len(
        events_with_key(data, "amx-flood"))
    assert alerts(1) == whole
    assert alerts(7) == whole
    assert alerts(4093) == whole
