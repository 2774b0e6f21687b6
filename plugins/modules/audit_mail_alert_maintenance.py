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
    plugin stopped). The marker is one line C(START END), two whole numbers of seconds
    since the epoch on the target's clock. A tamper event whose time lies between
    C(START - 2) and C(END + 5), and at most C(START + 905), is logged and counted by the
    plugin, not mailed.
  - O(state=started) opens a window of 900 seconds from now (C(END = START + 900)). When
    the marker is still open (C(END) has not passed by more than 5 seconds), its C(START)
    is kept, so that a second start in the same run does not cut the window short.
  - O(state=ended) closes an open window (C(END = now)). It never reopens or widens a
    closed window, and writes nothing when there is no marker.
  - The file is written as a new root-owned 0600 file in the spool directory and renamed
    over the marker; an existing marker that is a symbolic link is replaced, never
    followed. The spool directory must be a directory owned by root and not writable by
    group or others, else the module fails before it writes.
  - The role C(linux_audit.mail_alert.audit_mail_alert) calls this module around its rule
    loads, auditd restarts and reloads, and the removal of the plugin. docs/role.md says
    why the user being watched cannot forge the marker.
  - Needs root on the target (C(become=true)).
version_added: 1.0.0
requirements:
  - The plugin's spool directory on the target, owned by root (the role
    C(linux_audit.mail_alert.audit_mail_alert) creates it).
  - Root on the target (C(become=true)).
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
      - V(started) opens the maintenance window, V(ended) closes it.
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
- name: Tell the plugin that the rules load below is maintenance
  linux_audit.mail_alert.audit_mail_alert_maintenance:
    state: started
  become: true

- name: Load the audit rules (deletes and re-adds them)
  ansible.builtin.command:
    argv: [augenrules, --load]
  changed_when: true
  become: true

- name: Close the maintenance window
  linux_audit.mail_alert.audit_mail_alert_maintenance:
    state: ended
    spool_dir: /var/spool/audisp-mailalert
  become: true
"""

RETURN = r"""
path:
  description: The marker file.
  returned: always
  type: str
  sample: /var/spool/audisp-mailalert/maintenance
start:
  description: C(START) of the marker after the module ran; null when there is no marker.
  returned: always
  type: int
  sample: 1795685868
end:
  description: C(END) of the marker after the module ran; null when there is no marker.
  returned: always
  type: int
  sample: 1795686768
open:
  description: Whether the window is open (C(END) lies in the future).
  returned: always
  type: bool
  sample: true
"""

import os
import stat
import tempfile
import time
from typing import Optional, Tuple

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.linux_audit.mail_alert.plugins.module_utils import alert_plugin

# The marker's name and the plugin's cap on its window have one owner: module_utils.
MARKER = alert_plugin.MAINTENANCE_FILE
MAX_WINDOW = alert_plugin.MAINTENANCE_MAX

GRACE = 5  # the plugin's tolerance after END; a marker closed this recently is still open
ROOT_UID = 0  # the only owner of the spool directory the plugin trusts


def parse_marker(text: str) -> Optional[Tuple[int, int]]:
    """(START, END) of a marker's content, or None if it is not two whole numbers."""
    fields = text.split()
    if len(fields) != 2 or not all(field.isdigit() for field in fields):
        return None
    start, end = int(fields[0]), int(fields[1])
    return (start, end) if start <= end else None


def next_marker(state: str, current: Optional[Tuple[int, int]], now: int) -> Optional[Tuple[int, int]]:
    """The marker that state asks for, given the current one; None: leave it as it is."""
    if state == "started":
        if current and current[0] <= now <= current[0] + MAX_WINDOW and current[1] >= now - GRACE:
            return current[0], current[0] + MAX_WINDOW
        return now, now + MAX_WINDOW
    # ended: only an open window is closed; a closed one is never widened again. A START
    # in the future (the clock went back) becomes now, so no window is left ahead.
    if current and current[1] > now:
        return min(current[0], now), now
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
    dir_fd = check_spool_dir(module, spool_dir)
    try:
        before = read_marker(module, dir_fd, path)
        current = parse_marker(before) if before is not None else None
        now = int(time.time())
        wanted = next_marker(module.params["state"], current, now)
        after_text = before if wanted is None else f"{wanted[0]} {wanted[1]}\n"
        changed = after_text != before
        if changed and not module.check_mode:
            try:
                write_marker(module, spool_dir, dir_fd, after_text)
            except OSError as error:
                module.fail_json(msg=f"could not write {path}: {error}")
    finally:
        os.close(dir_fd)
    marker = wanted or current
    result = {
        "changed": changed,
        "path": path,
        "start": marker[0] if marker else None,
        "end": marker[1] if marker else None,
        "open": bool(marker) and marker[1] > now,
    }
    if module._diff:
        result["diff"] = {"before": before or "", "after": after_text or "",
                          "before_header": path, "after_header": path}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
