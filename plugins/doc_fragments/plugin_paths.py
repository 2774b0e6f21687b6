# Copyright (c) audit mail alert developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Where the modules find the audisp-mailalert plugin's files on the target."""


class ModuleDocFragment:
    """The options of every module that reads the plugin's plugins.d file, config and spool."""

    DOCUMENTATION = r"""
options:
  plugin_conf:
    description:
      - The auditd plugins.d file that starts the plugin.
    type: path
    default: /etc/audit/plugins.d/audisp-mailalert.conf
  config:
    description:
      - The plugin's configuration file.
      - Defaults to the C(--config) argument in O(plugin_conf), else
        C(/etc/audit/audisp-mailalert.conf).
    type: path
  spool_dir:
    description:
      - The plugin's spool directory (verification requests, C(status.json), C(queue/)).
      - Defaults to C(dir) in the C([spool]) section of O(config), else
        C(/var/spool/audisp-mailalert).
    type: path
"""
