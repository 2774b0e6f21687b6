#!/usr/bin/python
# ruff: noqa: EXE001 - ansible-test requires this shebang on a module that is not executable
# Copyright (c) audit mail alert developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

DOCUMENTATION = r"""
---
module: audit_mail_alert_maintenance
short_description: Mark a change to the audit system as maintenance, so that the plugin mails no tamper alert for it
description:
  - Writes the maintenance marker C(<spool_dir>/maintenance) that the audisp-mailalert
    plugin reads before it mails a tamper alert (audit rules removed, auditd stopped, the
    plugin stopped). The marker is one line C(START END BOOT_ID OPENED UNTIL) (format 2).
    C(START) and C(END) are whole seconds since the epoch on the target's clock, for people
    and logs; C(BOOT_ID) is the content of C(/proc/sys/kernel/random/boot_id) when it was
    written; C(OPENED) and C(UNTIL) are seconds since boot (the first field of
    C(/proc/uptime), a clock no one can set), with two decimals.
  - The plugin takes a tamper finding for the role's work only when the marker's
    C(BOOT_ID) is the running boot's and, at the moment it handles the finding, the time
    since boot lies in C([OPENED - 2, UNTIL + 5]). A marker of an earlier boot, or of the
    old format C(START END), counts for nothing.
  - O(state=started) opens a window with a lease of 30 seconds (C(UNTIL) = now + 30,
    C(END) = C(START) + 30). When a window of this boot is already open (now is not past
    its C(UNTIL)), its C(START) and C(OPENED) are kept and the lease is renewed, so that a
    later start in the same run extends the window and never cuts it. Otherwise a new
    window replaces the marker.
  - O(state=ended) closes the window (C(UNTIL) = now, C(END) = now) when its C(UNTIL) still
    lies ahead. It never reopens or widens a window, and writes nothing when there is no
    marker of this boot.
  - A run that dies between start and end (interrupted, connection lost) leaves a window
    that closes by itself when its lease ends, at most 30 seconds after the last start.
  - The file is written as a new root-owned 0600 file in the spool directory and renamed
    over the marker; an existing marker that is a symbolic link is replaced, never
    followed. The spool directory must be a directory owned by root and not writable by
    group or others, else the module fails before it writes.
  - The role C(linux_audit.mail_alert.audit_mail_alert) calls this module around its rule
    loads, auditd restarts and reloads, and the removal of the plugin. docs/role.md says
    why the user being watched cannot forge the marker.
  - Needs root on the target (C(become=true)) and C(/proc).
version_added: 1.0.0
requirements:
  - The plugin's spool directory on the target, owned by root (the role
    C(linux_audit.mail_alert.audit_mail_alert) creates it).
  - Root on the target (C(become=true)), and C(/proc) (the boot id and the time since boot).
author:
  - Audit mail alert developers (@linux-audit)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details:
      - Writes nothing; reports C(changed) and the marker as it would be written.
  diff_mode:
    support: full
  platform:
    platforms: posix
options:
  state:
    description:
      - V(started) opens the maintenance window or renews its lease, V(ended) closes it.
    type: str
    required: true
    choices: [started, ended]
  spool_dir:
    description:
      - The plugin's spool directory, which holds the marker. It must exist, be a
        directory owned by root and not be writable by group or others.
    type: path
    default: /var/spool/audisp-mailalert
seealso:
  - module: linux_audit.mail_alert.audit_mail_alert_info
"""

EXAMPLES = r"""
- name: Tell the plugin that the rules load below is maintenance (a lease of 30 s)
  linux_audit.mail_alert.audit_mail_alert_maintenance:
    state: started
  become: true

- name: Load the audit rules (deletes and re-adds them), closing the window also on failure
  become: true
  block:
    - name: Load the audit rules
      ansible.builtin.command:
        argv: [augenrules, --load]
      changed_when: true
  always:
    - name: Close the maintenance window
      linux_audit.mail_alert.audit_mail_alert_maintenance:
        state: ended
        spool_dir: /var/spool/audisp-mailalert
"""

RETURN = r"""
path:
  description: The marker file.
  returned: always
  type: str
  sample: /var/spool/audisp-mailalert/maintenance
start:
  description: C(START) of the marker after the module ran (epoch seconds); null when there is no marker.
  returned: always
  type: int
  sample: 1795685868
end:
  description: C(END) of the marker after the module ran (epoch seconds); null when there is no marker.
  returned: always
  type: int
  sample: 1795685898
boot_id:
  description: C(BOOT_ID) of the marker after the module ran; null when there is no marker.
  returned: always
  type: str
  sample: 7753bc49-7a4f-4b9c-ad47-65cc2f987fa6
opened:
  description: C(OPENED) of the marker after the module ran (seconds since boot); null when there is no marker.
  returned: always
  type: float
  sample: 1759.84
until:
  description: C(UNTIL) of the marker after the module ran (seconds since boot); null when there is no marker.
  returned: always
  type: float
  sample: 1789.84
open:
  description: Whether the window is open (the marker is of this boot and its C(UNTIL) lies ahead).
  returned: always
  type: bool
  sample: true
"""

import os
import stat
import tempfile
import time
from typing import Optional

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.linux_audit.mail_alert.plugins.module_utils import alert_plugin

# The marker's name, format and lease have one owner: module_utils.
MARKER = alert_plugin.MAINTENANCE_FILE
LEASE = alert_plugin.MAINTENANCE_LEASE
Maintenance = alert_plugin.Maintenance

ROOT_UID = 0  # the only owner of the spool directory the plugin trusts


def next_marker(state: str, current: Optional[Maintenance], boot_id: str, now: int,
                uptime: float) -> Optional[Maintenance]:
    """The marker that STATE asks for at epoch second NOW and UPTIME (seconds since boot),
    given the current one; None: leave it as it is. A marker of another boot is none."""
    if current is not None and current.boot_id != boot_id:
        current = None
    if state == "started":
        until = round(uptime + LEASE, 2)
        if current is not None and current.opened <= uptime <= current.until:
            # Open: a renewal keeps START and OPENED and never shortens the lease.
            until = max(current.until, until)
            return current._replace(start=min(current.start, now),
                                    end=now + round(until - uptime), until=until)
        return Maintenance(now, now + LEASE, boot_id, uptime, until)
    # ended: only a window whose UNTIL lies ahead is closed; none is reopened or widened.
    # A START in the future (the epoch clock went back) becomes now: START <= END.
    if current is not None and current.until > uptime:
        return current._replace(start=min(current.start, now), end=now,
                                opened=min(current.opened, uptime), until=uptime)
    return None


def check_spool_dir(module: AnsibleModule, spool_dir: str) -> int:
    """An fd of the spool directory, after checking that only root can write in it."""
    try:
        fd = os.open(spool_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as error:
        module.fail_json(msg=f"spool_dir {spool_dir} is not usable: {error.strerror} "
                             "(it must be an existing directory, not a symbolic link)")
    st = os.fstat(fd)
    if st.st_uid != ROOT_UID or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        os.close(fd)
        module.fail_json(msg=f"spool_dir {spool_dir} must be owned by root and not writable by "
                             f"group or others (owner uid {st.st_uid}, mode "
                             f"{stat.S_IMODE(st.st_mode):04o})")
    return fd


def read_marker(module: AnsibleModule, dir_fd: int, path: str) -> Optional[str]:
    """The marker's text; None if there is none. A link or another file type is not read."""
    try:
        st = os.stat(MARKER, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(st.st_mode):
        module.fail_json(msg=f"{path} is a directory; remove it so that the marker can be written")
    if not stat.S_ISREG(st.st_mode):
        return None  # a link or a special file: replaced, never followed
    fd = os.open(MARKER, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as handle:
        return handle.read(256).decode("ascii", "replace")


def write_marker(module: AnsibleModule, spool_dir: str, dir_fd: int, text: str) -> None:
    """Write text to a new 0600 file in spool_dir and rename it over the marker.

    Not module.atomic_move: it takes owner, mode and context from the destination, which
    here may be a link or a file planted by someone else; the marker must be a fresh file.
    """
    fd, tmp_path = tempfile.mkstemp(prefix=f".{MARKER}.", dir=spool_dir)  # 0600, O_EXCL
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        # The context of the marker's own path, as restorecon would set it.
        module.set_context_if_different(
            tmp_path, module.selinux_default_context(os.path.join(spool_dir, MARKER)), False)
        os.rename(os.path.basename(tmp_path), MARKER, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        if os.path.lexists(tmp_path):
            os.unlink(tmp_path)
        raise
    os.fsync(dir_fd)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "str", "required": True, "choices": ["started", "ended"]},
            "spool_dir": {"type": "path", "default": "/var/spool/audisp-mailalert"},
        },
        supports_check_mode=True,
    )
    spool_dir = module.params["spool_dir"]
    path = os.path.join(spool_dir, MARKER)
    if os.geteuid() != 0:
        module.fail_json(msg="the maintenance marker must be written by root (become: true): "
                             "the plugin ignores a marker that root does not own")
    try:
        boot_id, uptime = alert_plugin.read_boot_id(), alert_plugin.read_uptime()
    except (OSError, ValueError, IndexError) as error:
        module.fail_json(msg=f"cannot read the boot clock ({alert_plugin.BOOT_ID_FILE}, "
                             f"{alert_plugin.UPTIME_FILE}): {error}")
    now = int(time.time())
    dir_fd = check_spool_dir(module, spool_dir)
    try:
        before = read_marker(module, dir_fd, path)
        current = alert_plugin.parse_maintenance(before) if before is not None else None
        wanted = next_marker(module.params["state"], current, boot_id, now, uptime)
        after_text = before if wanted is None else alert_plugin.format_maintenance(wanted)
        changed = after_text != before
        if changed and not module.check_mode:
            try:
                write_marker(module, spool_dir, dir_fd, after_text)
            except OSError as error:
                module.fail_json(msg=f"could not write {path}: {error}")
    finally:
        os.close(dir_fd)
    marker = wanted or current
    result = {"changed": changed, "path": path, "open": False}
    for field in Maintenance._fields:
        result[field] = getattr(marker, field) if marker else None
    result["open"] = bool(marker) and marker.boot_id == boot_id and marker.until > uptime
    if module._diff:
        result["diff"] = {"before": before or "", "after": after_text or "",
                          "before_header": path, "after_header": path}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
