"""audisp-mailalert, the auditd plugin that mails an alert when an audit event carries a
watched key: the package behind the program auditd runs (files/audisp_mailalert.py,
installed as /sbin/audisp-mailalert). One module per contract; docs/design.md shows them
and the one direction of their imports. Standard library and auparse only; Python 3.6
(RHEL 8) and later, so annotations use typing's names (List, Optional), not list[str].

This file imports nothing but `_signal`, the C module under `signal` (which would cost
tens of milliseconds of imports, enum among them, before the signals are held).
"""

import _signal

PROG = "audisp-mailalert"

# auditd sends SIGHUP to its plugins when it reloads, maybe while this one is still
# importing, and the default action of HUP (and TERM) is death. So the program holds them
# back before it imports the rest of the package (hold_signals), until Plugin.run starts
# the SignalWatcher: a HUP then means "load the config", which start-up does anyway.
HELD_SIGNALS = {_signal.SIGHUP, _signal.SIGTERM, _signal.SIGINT}


def hold_signals() -> None:
    """Block HUP, TERM and INT in this thread (and the threads and children it starts)."""
    _signal.pthread_sigmask(_signal.SIG_BLOCK, HELD_SIGNALS)
