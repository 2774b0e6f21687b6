"""Reading the plugin's plugins.d file, config, status.json and spool."""

from __future__ import annotations

import json
import os
import re
import stat

import pytest
from ansible_collections.linux_audit.mail_alert.plugins.module_utils import alert_plugin

PLUGIN_CONF = """# the audisp-mailalert plugin
active = yes
direction = out
path = /sbin/audisp-mailalert
type = always
args = --config /etc/alt.conf extra_key # trailing comment
format = string
"""

CONFIG = """[mail]
to = root
[spool]
dir = /var/spool/elsewhere
[rule shadow]
keys = shadow_read, shadow_write
[rule exec]
keys = watch_w
"""


def test_read_plugin_conf(tmp_path):
    path = tmp_path / "audisp-mailalert.conf"
    path.write_text(PLUGIN_CONF)
    conf = alert_plugin.read_plugin_conf(str(path))
    assert conf["active"] is True
    assert conf["path"] == "/sbin/audisp-mailalert"
    assert conf["args"] == ["--config", "/etc/alt.conf", "extra_key"]
    assert conf["format"] == "string"
    assert alert_plugin.config_from_args(conf["args"]) == "/etc/alt.conf"
    assert alert_plugin.keys_from_args(conf["args"]) == ["extra_key"]


def test_read_plugin_conf_missing_and_inactive(tmp_path):
    missing = alert_plugin.read_plugin_conf(str(tmp_path / "none.conf"))
    assert missing["exists"] is False and missing["active"] is False
    path = tmp_path / "off.conf"
    path.write_text("active = no\npath = /sbin/audisp-mailalert\n")
    assert alert_plugin.read_plugin_conf(str(path))["active"] is False


def test_config_from_args_equals_form():
    assert alert_plugin.config_from_args(["--config=/x.conf", "k"]) == "/x.conf"
    assert alert_plugin.config_from_args(["k"]) is None


def test_read_plugin_config_rules_and_spool(tmp_path):
    path = tmp_path / "plugin.conf"
    path.write_text(CONFIG)
    config = alert_plugin.read_plugin_config(str(path))
    assert config["rules"] == {"shadow": ["shadow_read", "shadow_write"], "exec": ["watch_w"]}
    assert config["spool_dir"] == "/var/spool/elsewhere"
    assert alert_plugin.rules_for_key("watch_w", config["rules"], ["watch_w"]) == ["exec", "args"]
    assert alert_plugin.rules_for_key("nope", config["rules"], []) == []


def test_read_plugin_config_broken_names_the_file(tmp_path):
    path = tmp_path / "broken.conf"
    path.write_text("keys = outside any section\n")
    config = alert_plugin.read_plugin_config(str(path))
    assert str(path) in config["error"]
    assert config["rules"] == {}


def test_read_status_and_held_counts(tmp_path):
    assert alert_plugin.read_status(str(tmp_path)) == (None, None)
    status = {"pid": 1, "rules": {"exec": {"keys": ["watch_w"], "sent": 10, "held": 4},
                                  "other": {"keys": ["x"], "sent": 0, "held": 9}}}
    (tmp_path / "status.json").write_text(json.dumps(status))
    read, error = alert_plugin.read_status(str(tmp_path))
    assert error is None and read == status
    assert alert_plugin.held_counts(read, "watch_w") == {"exec": 4}
    assert alert_plugin.held_counts(None, "watch_w") == {}


def test_read_status_broken_json(tmp_path):
    (tmp_path / "status.json").write_text("{half")
    status, error = alert_plugin.read_status(str(tmp_path))
    assert status is None and "status.json" in error


def test_queued_alerts_reads_complete_messages_only(tmp_path):
    queue = tmp_path / "queue"
    queue.mkdir()
    message = (b"Subject: alert\r\nX-Audit-Key: watch_w\r\nX-Audit-Event: 1795685868.750:7@h\r\n"
               b"X-Audit-Verify: tok-1\r\nMessage-ID: <a@h>\r\n\r\nbody\r\n")
    (queue / "0001.eml").write_bytes(message)
    (queue / ".0002.eml.tmp").write_bytes(message)
    alerts = alert_plugin.queued_alerts(str(tmp_path))
    assert len(alerts) == 1
    assert alerts[0]["event"] == "1795685868.750:7@h"
    assert alerts[0]["verify"] == "tok-1" and alerts[0]["message_id"] == "<a@h>"
    assert alerts[0]["file"] == str(queue / "0001.eml")
    assert alert_plugin.queued_alerts(str(tmp_path / "none")) == []


def test_verify_request_written_atomically_and_removed(tmp_path):
    pid = os.getpid()
    path = alert_plugin.write_verify_request(str(tmp_path), pid, "abc-123")
    assert path == str(tmp_path / "verify" / str(pid))
    with open(f"/proc/{pid}/stat") as handle:
        start = handle.read().rsplit(")", 1)[1].split()[19]  # field 22: clock ticks after boot
    with open(path) as request:
        assert request.read() == f"abc-123 {start}\n"
    assert stat.S_IMODE(os.stat(tmp_path / "verify").st_mode) == 0o700
    assert os.listdir(tmp_path / "verify") == [str(pid)]  # no temporary file left behind
    alert_plugin.remove_verify_request(path)
    alert_plugin.remove_verify_request(path)  # already gone: fine
    assert not os.path.exists(path)


def test_verify_request_refuses_a_bad_token(tmp_path):
    with pytest.raises(ValueError):
        alert_plugin.write_verify_request(str(tmp_path), 1, "bad token\n")


def test_locate_follows_the_plugins_d_args_and_the_config(tmp_path):
    config = tmp_path / "plugin.conf"
    config.write_text(CONFIG)
    conf = tmp_path / "plugins.d.conf"
    conf.write_text(f"active = yes\npath = /sbin/audisp-mailalert\nargs = --config {config}\n")
    params = {"plugin_conf": str(conf), "config": None, "spool_dir": None}
    located = alert_plugin.locate(params)
    assert located["conf"]["file"] == str(conf)
    assert located["config"]["file"] == str(config)
    assert located["spool_dir"] == "/var/spool/elsewhere"
    # Options that are set win over what the files say.
    other = tmp_path / "other.conf"
    located = alert_plugin.locate(dict(params, config=str(other), spool_dir="/s"))
    assert located["config"]["file"] == str(other) and located["spool_dir"] == "/s"
    # No --config in the args: the plugin's own default.
    conf.write_text("active = yes\npath = /sbin/audisp-mailalert\n")
    assert alert_plugin.locate(params)["config"]["file"] == alert_plugin.DEFAULT_CONFIG


def test_read_plugin_config_tamper_is_on_unless_turned_off(tmp_path):
    path = tmp_path / "plugin.conf"
    path.write_text(CONFIG)
    assert alert_plugin.read_plugin_config(str(path))["tamper"] is True
    path.write_text(CONFIG + "[tamper]\nenabled = no\n")
    assert alert_plugin.read_plugin_config(str(path))["tamper"] is False
    assert alert_plugin.read_plugin_config(str(tmp_path / "none"))["tamper"] is True


def test_alert_headers_read_the_tamper_kind(tmp_path):
    message = tmp_path / "m.eml"
    message.write_bytes(b"X-Audit-Key: tamper\r\nX-Audit-Tamper: rules-removed\r\n"
                        b"X-Audit-Verify: t-1\r\n\r\nRemoved keys: k\r\n")
    with open(message, "rb") as handle:
        headers = alert_plugin.alert_headers(handle)
    assert headers["key"] == "tamper" and headers["tamper"] == "rules-removed"
    assert headers["verify"] == "t-1" and headers["event"] is None


BOOT = "7753bc49-7a4f-4b9c-ad47-65cc2f987fa6"
MARKER_LINE = f"1000 1030 {BOOT} 500.25 530.25\n"
MARKER = alert_plugin.Maintenance(1000, 1030, BOOT, 500.25, 530.25)


def test_read_maintenance_as_the_plugin_reads_it(tmp_path):
    marker = tmp_path / "maintenance"
    assert alert_plugin.read_maintenance(str(tmp_path)) is None
    marker.write_text(MARKER_LINE)
    marker.chmod(0o600)
    # The plugin trusts only root's marker: as another user the test expects None.
    mine = os.geteuid() == 0
    assert alert_plugin.read_maintenance(str(tmp_path)) == (MARKER if mine else None)
    marker.chmod(0o620)  # group-writable: ignored
    assert alert_plugin.read_maintenance(str(tmp_path)) is None
    marker.chmod(0o600)
    marker.write_text("1000 1100\n")  # the old format
    assert alert_plugin.read_maintenance(str(tmp_path)) is None
    marker.unlink()
    (tmp_path / "real").write_text(MARKER_LINE)
    marker.symlink_to(tmp_path / "real")
    assert alert_plugin.read_maintenance(str(tmp_path)) is None


@pytest.mark.parametrize(("text", "parsed"), [
    (MARKER_LINE, MARKER),
    (MARKER_LINE.rstrip("\n"), MARKER),
    (f"1000 1030 {BOOT} 500.2 530.2\n", MARKER._replace(opened=500.2, until=530.2)),
    ("1000 1030\n", None),  # the old format
    (f"1000 1030 {BOOT} 500 530\n", None),  # no decimals
    (f"1000 1030 {BOOT} 500.255 530.25\n", None),  # three decimals
    (f"1000 1030 {BOOT} 530.25 500.25\n", None),  # OPENED after UNTIL
    (f"1030 1000 {BOOT} 500.25 530.25\n", None),  # START after END
    (f"1000 1030 {BOOT.upper()} 500.25 530.25\n", None),  # not the kernel's spelling
    (f"1000 1030 {BOOT[:-1]} 500.25 530.25\n", None),
    (f"1000  1030 {BOOT} 500.25 530.25\n", None),  # one space between fields
    (f"1000 1030 {BOOT} 500.25 530.25 x\n", None),
    (f"{MARKER_LINE}{MARKER_LINE}", None),  # one line only
    (f"-1 1030 {BOOT} 500.25 530.25\n", None),
])
def test_parse_maintenance(text, parsed):
    assert alert_plugin.parse_maintenance(text) == parsed


def test_format_maintenance_round_trips():
    assert alert_plugin.format_maintenance(MARKER) == MARKER_LINE
    assert alert_plugin.format_maintenance(MARKER._replace(opened=500.1, until=530)) == \
        f"1000 1030 {BOOT} 500.10 530.00\n"


@pytest.mark.parametrize(("boot_id", "uptime", "honoured"), [
    (BOOT, 498.25, True),  # OPENED - 2
    (BOOT, 498.24, False),
    (BOOT, 515.0, True),
    (BOOT, 535.25, True),  # UNTIL + 5
    (BOOT, 535.26, False),
    ("0b7a2f4e-1c3d-4e5f-8a9b-0c1d2e3f4a5b", 515.0, False),  # another boot
])
def test_maintenance_open_on_the_boot_clock(boot_id, uptime, honoured):
    assert alert_plugin.maintenance_open(MARKER, boot_id, uptime) is honoured
    assert alert_plugin.maintenance_open(None, boot_id, uptime) is False


def test_maintenance_open_caps_the_window_as_the_plugin_does():
    """A marker written by hand with a far UNTIL holds at most OPENED + 900 (+ 5)."""
    far = MARKER._replace(until=99999.0)
    assert alert_plugin.maintenance_open(far, BOOT, 500.25 + 905) is True
    assert alert_plugin.maintenance_open(far, BOOT, 500.25 + 905.01) is False


def test_boot_clock_of_this_host():
    boot_id, uptime = alert_plugin.read_boot_id(), alert_plugin.read_uptime()
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", boot_id)
    assert 0 < uptime <= alert_plugin.read_uptime()
