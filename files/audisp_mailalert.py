"""audisp-mailalert: an auditd plugin that mails an alert when an audit event carries a watched key.

auditd starts it with the audit stream on stdin (plugins.d `format = string`) and an empty
environment. The main thread keeps stdin drained and feeds auparse; a cheap bytes check of
each chunk for the configured `key=` values picks the few events worth normalizing. Accepted
alerts are written to a spool directory first, then a worker thread delivers them (sendmail
or SMTP) with timeouts and retries, so a slow mail system never stalls auditd and nothing
accepted is lost. A per-rule rate limit turns floods into one digest per window.

Standard library and auparse only; runs on Python 3.6 and later (RHEL 8). See docs/plugin.md.

This file is only the program; the code is the package `mailalert` (docs/design.md), beside
it in the collection (files/mailalert/) and in LIBDIR where the role installs it, compiled.
"""

import os
import sys

LIBDIR = "/usr/lib/audisp-mailalert"  # where the role installs the package


def package_dir() -> str:
    """The directory that holds the package: the one beside this file (the collection's
    files/), else LIBDIR. Only root can write to either (the program lives in /sbin)."""
    here = os.path.dirname(os.path.realpath(__file__))
    return here if os.path.isdir(os.path.join(here, "mailalert")) else LIBDIR


if __name__ == "__main__":
    # The role installs the package compiled: nothing is written at run time (the confined
    # domain may not write there, and a stray cache file would be one more thing to trust).
    sys.dont_write_bytecode = True
    sys.path[0] = package_dir()  # instead of this file's directory
    import mailalert

    mailalert.hold_signals()  # before the rest of the package is imported
    from mailalert.cli import main

    sys.exit(main())
