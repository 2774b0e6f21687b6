"""auditd's plugin list: whether this program still has an active entry in plugins.d.

When auditd ends a plugin while it runs on, the entry tells why: a reload of audit 4.2
stops every plugin (its input closed, SIGTERM 50 ms later) and starts the list anew, an
entry removed or set `active = no` is stopped for good by every version (docs/plugin.md,
"Reload and restart"). The directory is auditd.conf's `plugin_dir`, and an entry counts as
auditd counts it: a `NAME.conf` (or a name without a dot) that is not hidden, whose `path`
is this program and whose `active` is `yes`."""

# Python 3.6 (RHEL 8) has no list[str] or X | None in annotations: keep typing's names.
# ruff: noqa: UP006, UP035, UP045

import os
from typing import Dict, Optional

AUDITD_CONF = "/etc/audit/auditd.conf"
PLUGIN_DIR = "/etc/audit/plugins.d"  # auditd's default when auditd.conf names none
MAX_FILE = 64 << 10  # bytes read of one file: an entry is a few lines


def read_settings(path: str) -> Dict[str, str]:
    """`name = value` lines of an auditd-style file (comments and blank lines skipped)."""
    with open(path, "rb") as handle:
        text = handle.read(MAX_FILE).decode(errors="replace")
    settings = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, value = line.split("=", 1)
        settings[name.strip()] = value.strip()
    return settings


def plugin_dir(auditd_conf: str = AUDITD_CONF) -> str:
    try:
        return read_settings(auditd_conf).get("plugin_dir") or PLUGIN_DIR
    except OSError:
        return PLUGIN_DIR


def counted(name: str) -> bool:
    """Whether auditd reads this file of plugins.d: not hidden, no backup (more than one
    dot), and `.conf` when it has a suffix."""
    return not name.startswith(".") and name.count(".") <= 1 and (
        "." not in name or name.endswith(".conf"))


def entry_active(program: str, auditd_conf: str = AUDITD_CONF) -> Optional[bool]:
    """True when an active entry of plugins.d runs program (compared as real paths), False
    when none does, None when the directory cannot be read."""
    directory = plugin_dir(auditd_conf)
    me = os.path.realpath(program)
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return None
    for name in names:
        if not counted(name):
            continue
        try:
            settings = read_settings(os.path.join(directory, name))
        except OSError:
            continue  # a directory, or unreadable: auditd could not use it either
        path = settings.get("path", "")
        if settings.get("active", "").lower() == "yes" and path and os.path.realpath(path) == me:
            return True
    return False
