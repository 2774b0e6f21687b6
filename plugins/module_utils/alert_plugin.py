# Copyright (c) audit mail alert developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# Python 3.6 (RHEL 8 targets) has no list[str] or X | None in annotations: typing's names.
"""Read the configuration and state of the audisp-mailalert plugin (docs/design.md).

- the auditd plugins.d file that starts it (key = value lines),
- its INI config (which rule watches which keys, where the spool is),
- its spool: status.json, queue/ (alerts not yet handed to the MTA), verify/ requests,
- the X-Audit-* headers of its mail.
This file is the modules' one owner of those contracts (docs/design.md).
"""

import collections
import configparser
import contextlib
import email.parser
import json
import os
import re
import signal
import stat
import tempfile
from typing import List, Optional, Tuple

DEFAULT_SPOOL_DIR = "/var/spool/audisp-mailalert"
DEFAULT_PLUGIN_CONF = "/etc/audit/plugins.d/audisp-mailalert.conf"
DEFAULT_CONFIG = "/etc/audit/audisp-mailalert.conf"  # the plugin's own default
# The spool layout: names inside the spool directory.
STATUS_FILE = "status.json"
QUEUE_DIR = "queue"
VERIFY_DIR = "verify"
# The role's maintenance marker, format 2 (docs/design.md): one line
# "START END BOOT_ID OPENED UNTIL".
MAINTENANCE_FILE = "maintenance"
MAINTENANCE_LEASE = 30  # s: a start holds the window open until OPENED/now + LEASE
# The plugin honours a marker only while OPENED - EARLY <= uptime <= UNTIL + LATE, with
# UNTIL capped at OPENED + MAX (a marker written by hand cannot hold a longer window).
MAINTENANCE_EARLY, MAINTENANCE_LATE, MAINTENANCE_MAX = 2, 5, 900
# The boot the marker belongs to, and the clock OPENED and UNTIL are read on: seconds since
# boot, suspend included (CLOCK_BOOTTIME), which no one can set.
BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"
UPTIME_FILE = "/proc/uptime"
# The argument spec of the options in doc_fragments/plugin_paths.py, shared by the modules.
PATH_OPTIONS = {
    "plugin_conf": {"type": "path", "default": DEFAULT_PLUGIN_CONF},
    "config": {"type": "path"},
    "spool_dir": {"type": "path"},
}
# The rule the plugin builds from the KEY arguments of its command line.
ARGS_RULE = "args"
# Tamper mail (docs/plugin.md): its X-Audit-Key, and the X-Audit-Tamper kind of a removal.
TAMPER_KEY = "tamper"
TAMPER_RULES_REMOVED = "rules-removed"
VERIFY_TOKEN = re.compile(r"^[A-Za-z0-9-]{1,64}$")


def parse_plugin_conf(text: str) -> dict:
    """Parse an auditd plugins.d file ("name = value" lines, # comments)."""
    conf = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if "=" not in line:
            continue
        name, value = line.split("=", 1)
        conf[name.strip()] = value.strip()
    return conf


def read_plugin_conf(path: str) -> dict:
    """The plugins.d file as {"file", "exists", "active", "path", "args", "format",
    "type", "direction", "error"}; "active" is a bool, "args" a list of words."""
    result = {"file": path, "exists": os.path.exists(path), "active": False, "path": None,
              "args": [], "format": None, "type": None, "direction": None, "error": None}
    if not result["exists"]:
        return result
    try:
        with open(path) as handle:
            conf = parse_plugin_conf(handle.read())
    except OSError as error:
        result["error"] = f"cannot read {path}: {error.strerror}"
        return result
    result.update({
        "active": conf.get("active", "no").lower() == "yes",
        "path": conf.get("path"),
        "args": conf.get("args", "").split(),
        "format": conf.get("format"),
        "type": conf.get("type"),
        "direction": conf.get("direction"),
    })
    return result


def config_from_args(args: List[str]) -> Optional[str]:
    """The --config PATH the plugins.d args give the plugin, if any."""
    for index, word in enumerate(args):
        if word == "--config" and index + 1 < len(args):
            return args[index + 1]
        if word.startswith("--config="):
            return word[len("--config="):]
    return None


def keys_from_args(args: List[str]) -> List[str]:
    """The KEY arguments of the plugin command line (everything that is not an option)."""
    keys, skip = [], False
    for word in args:
        if skip:
            skip = False
        elif word == "--config":
            skip = True
        elif not word.startswith("-"):
            keys.append(word)
    return keys


def read_plugin_config(path: str) -> dict:
    """The plugin's INI config as {"file", "exists", "rules": {NAME: [keys]},
    "spool_dir", "tamper" (whether [tamper] enabled is on), "error"}; a missing file
    gives no rules, the default spool and tamper alerts on (the plugin's defaults)."""
    result = {"file": path, "exists": os.path.exists(path), "rules": {},
              "spool_dir": DEFAULT_SPOOL_DIR, "tamper": True, "error": None}
    if not result["exists"]:
        return result
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path) as handle:
            parser.read_file(handle)
    except (OSError, configparser.Error) as error:
        result["error"] = f"cannot read {path}: {error}"
        return result
    for section in parser.sections():
        if section.startswith("rule "):
            keys = parser.get(section, "keys", fallback="")
            result["rules"][section[len("rule "):].strip()] = [
                key.strip() for key in keys.split(",") if key.strip()]
    result["spool_dir"] = parser.get("spool", "dir", fallback=DEFAULT_SPOOL_DIR)
    result["tamper"] = parser.get("tamper", "enabled", fallback="yes").strip().lower() != "no"
    return result


def locate(params: dict) -> dict:
    """The plugin's files from the PATH_OPTIONS of a module, found as the plugin finds them:
    {"conf": the plugins.d file, "config": the plugin config, "spool_dir"}. An option that
    is set wins; else the config is the --config of the plugins.d args, else the plugin's
    default, and the spool is the config's [spool] dir."""
    conf = read_plugin_conf(params["plugin_conf"])
    config = read_plugin_config(params["config"] or config_from_args(conf["args"])
                                or DEFAULT_CONFIG)
    return {"conf": conf, "config": config,
            "spool_dir": params["spool_dir"] or config["spool_dir"]}


def rules_for_key(key: str, config_rules: dict, args_keys: List[str]) -> List[str]:
    """Names of the plugin rules that watch KEY (config rules, then the args rule)."""
    names = sorted(name for name, keys in config_rules.items() if key in keys)
    if key in args_keys:
        names.append(ARGS_RULE)
    return names


def read_status(spool_dir: str) -> Tuple[Optional[dict], Optional[str]]:
    """(contents of <spool>/status.json or None, error text or None)."""
    path = os.path.join(spool_dir, STATUS_FILE)
    try:
        with open(path) as handle:
            return json.load(handle), None
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as error:
        return None, f"cannot read {path}: {error}"


def held_counts(status: Optional[dict], key: str) -> dict:
    """{rule name: held} for the status.json rules that watch KEY."""
    rules = (status or {}).get("rules") or {}
    return {name: int(rule.get("held") or 0) for name, rule in rules.items()
            if key in (rule.get("keys") or [])}


def alert_headers(handle) -> dict:
    """The alert headers of one RFC 5322 message read from a binary file object: "key",
    "event" (X-Audit-Event as written), "verify", "tamper" (the kind of a tamper mail),
    "subject", "message_id"; a header the message lacks is None."""
    headers = email.parser.BytesHeaderParser().parse(handle)
    return {
        "key": headers.get("X-Audit-Key"),
        "event": headers.get("X-Audit-Event"),
        "verify": headers.get("X-Audit-Verify"),
        "tamper": headers.get("X-Audit-Tamper"),
        "subject": headers.get("Subject"),
        "message_id": headers.get("Message-ID"),
    }


def queued_alerts(spool_dir: str) -> List[dict]:
    """Alerts in <spool>/queue/ (accepted by the plugin, not yet handed to the MTA)."""
    queue = os.path.join(spool_dir, QUEUE_DIR)
    try:
        names = sorted(os.listdir(queue))
    except OSError:
        return []
    alerts = []
    for name in names:
        path = os.path.join(queue, name)
        # Complete messages are NAME.eml; they are written as .NAME.eml.tmp and renamed.
        if name.startswith(".") or not name.endswith(".eml") or not os.path.isfile(path):
            continue
        try:
            with open(path, "rb") as handle:
                alert = alert_headers(handle)
        except OSError:
            continue
        alert["file"] = path
        alerts.append(alert)
    return alerts


Maintenance = collections.namedtuple("Maintenance", "start end boot_id opened until")
Maintenance.__doc__ = """The maintenance marker: START and END, whole epoch seconds (for people
and logs); BOOT_ID, the boot it was written in; OPENED and UNTIL, seconds of that boot's
clock (read_uptime) with at most two decimals."""
_MAINTENANCE_LINE = re.compile(
    r"^(\d{1,12}) (\d{1,12}) ([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
    r" (\d{1,10}\.\d{1,2}) (\d{1,10}\.\d{1,2})\n?\Z")


def parse_maintenance(text: str) -> Optional[Maintenance]:
    """The marker in TEXT; None unless it is one line of format 2 with START <= END and
    OPENED <= UNTIL (the old format "START END" gives None)."""
    match = _MAINTENANCE_LINE.match(text)
    if match is None:
        return None
    start, end, boot_id, opened, until = match.groups()
    marker = Maintenance(int(start), int(end), boot_id, float(opened), float(until))
    if marker.start > marker.end or marker.opened > marker.until:
        return None
    return marker


def format_maintenance(marker: Maintenance) -> str:
    """The marker's line, as the role writes it (OPENED and UNTIL with two decimals)."""
    return (f"{marker.start} {marker.end} {marker.boot_id} {marker.opened:.2f} "
            f"{marker.until:.2f}\n")


def read_boot_id() -> str:
    """This boot's id (a new random UUID at every boot)."""
    with open(BOOT_ID_FILE) as handle:
        return handle.read().strip()


def read_uptime() -> float:
    """Seconds since boot, suspend included: the first field of /proc/uptime."""
    with open(UPTIME_FILE) as handle:
        return float(handle.read().split()[0])


def maintenance_open(marker: Optional[Maintenance], boot_id: str, uptime: float) -> bool:
    """Whether the plugin takes a tamper finding handled at UPTIME for the role's work:
    the marker is of this boot and OPENED - EARLY <= UPTIME <= min(UNTIL, OPENED + MAX)
    + LATE."""
    if marker is None or marker.boot_id != boot_id:
        return False
    until = min(marker.until, marker.opened + MAINTENANCE_MAX)
    return marker.opened - MAINTENANCE_EARLY <= uptime <= until + MAINTENANCE_LATE


def read_maintenance(spool_dir: str) -> Optional[Maintenance]:
    """The role's maintenance marker as the plugin reads it; None when there is none or
    the plugin ignores it (not a regular file of root's that only root can write, or not
    format 2). Whether it is of this boot and open: maintenance_open."""
    path = os.path.join(spool_dir, MAINTENANCE_FILE)
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None  # none, or a symbolic link
    try:
        info = os.fstat(descriptor)
        raw = os.read(descriptor, 256) if stat.S_ISREG(info.st_mode) else b""
    finally:
        os.close(descriptor)
    if info.st_uid != 0 or info.st_mode & 0o022:
        return None
    return parse_maintenance(raw.decode("ascii", "replace"))


def process_start(pid: int) -> str:
    """When process PID started (clock ticks after boot: field 22 of /proc/PID/stat). With
    the pid it names one process: a later process that gets the same pid started later."""
    with open(f"/proc/{pid}/stat", "rb") as handle:
        raw = handle.read(4096)
    return raw[raw.rfind(b")") + 2:].split()[19].decode("ascii")


def write_verify_request(spool_dir: str, pid: int, token: str) -> str:
    """Write <spool>/verify/<pid>, "TOKEN START" with START the start time of process PID,
    atomically; returns its path. The plugin marks the alerts and tamper mails of events
    whose SYSCALL ppid is PID while the request is younger than VERIFY_MAX_AGE and process
    PID, the same one (START), runs."""
    if not VERIFY_TOKEN.match(token):
        raise ValueError(f"verify token must match {VERIFY_TOKEN.pattern}")
    directory = os.path.join(spool_dir, VERIFY_DIR)
    if not os.path.isdir(directory):
        os.mkdir(directory, 0o700)
    path = os.path.join(directory, str(pid))
    content = f"{token} {process_start(pid)}\n"
    descriptor, temporary = tempfile.mkstemp(prefix=f".{pid}.", dir=directory)
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(content)
        os.rename(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    return path


def remove_verify_request(path: str) -> None:
    """Remove a verify request; a request already gone is fine."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


@contextlib.contextmanager
def request_removed_at_end(path: str):
    """Remove the verify request at PATH when the block ends: on return, on an error, and
    when SIGTERM or SIGHUP end the module (a cancelled task, a lost connection), which skip
    every `finally`. Such a signal removes the request, then ends the module as it would
    have (the default action, raised again). A signal the module ignores or handles itself
    is left to it."""
    signals = [number for number in (signal.SIGTERM, signal.SIGHUP)
               if signal.getsignal(number) == signal.SIG_DFL]

    def ended(number, _frame):
        remove_verify_request(path)
        signal.signal(number, signal.SIG_DFL)
        os.kill(os.getpid(), number)

    for number in signals:
        signal.signal(number, ended)
    try:
        yield
    finally:
        remove_verify_request(path)
        for number in signals:
            signal.signal(number, signal.SIG_DFL)
