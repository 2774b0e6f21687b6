"""Proof that a run of the role sent no tamper mail (issue 10): the tamper mails in root's
mailbox, the plugin's own count of findings it took for the role's work (status.json
`tamper_suppressed`), and an idle MTA. "No mail" is asserted only after the plugin has
shown that it handled the run's events, never after a fixed sleep."""

import json
import mailbox
import os
import re
import subprocess
from contextlib import contextmanager
from pathlib import Path

from polling import wait_for

MAILBOX = "/var/mail/root"
STATUS = "/var/spool/audisp-mailalert/status.json"
DMA_SPOOL = "/var/spool/dma"
TIMEOUT = 60  # seconds: the plugin writes status.json at most once a second


def tamper_mails():
    if not os.path.exists(MAILBOX):
        return []
    return [m for m in mailbox.mbox(MAILBOX) if m["X-Audit-Key"] == "tamper"]


def plugin_status():
    try:
        return json.loads(Path(STATUS).read_text())
    except (OSError, ValueError):  # no plugin yet, or the spool is gone
        return {}


def watched_rules_loaded():
    """How many loaded rules carry a key the running plugin watches: each one's removal by
    a rules load is one tamper finding."""
    keys = {key for rule in plugin_status().get("rules", {}).values() for key in rule["keys"]}
    listing = subprocess.run(["auditctl", "-l"], stdout=subprocess.PIPE, text=True, check=True).stdout
    return sum(1 for line in listing.splitlines()
               if keys & set(re.findall(r"(?:-k |key=)(\S+)", line)))


def mta_idle():
    """dma keeps a message in its spool until it is delivered (`flush` is its lock file)."""
    return not [name for name in os.listdir(DMA_SPOOL) if name != "flush"]


def subjects(mails):
    return [f"{m['X-Audit-Tamper']}: {m['Subject']}" for m in mails]


@contextmanager
def no_tamper_mail(suppressed=0, stopped=()):
    """Around a run of the role. Afterwards wait until the plugin has counted `suppressed`
    findings as the role's work (a restarted plugin counts from 0) and until the processes
    in `stopped` have exited (a plugin that decides at its end), then until the MTA has
    delivered what it was given; then no tamper mail may have arrived."""
    before = len(tamper_mails())
    status = plugin_status()
    old_pid, old_count = status.get("pid"), status.get("tamper_suppressed", 0)
    yield
    if suppressed:
        def counted():
            now = plugin_status()
            base = old_count if now.get("pid") == old_pid else 0
            return now.get("tamper_suppressed", 0) - base >= suppressed and now
        try:
            wait_for(counted, TIMEOUT, f"the plugin to count {suppressed} tamper findings as the role's work")
        except AssertionError as error:
            raise AssertionError(f"{error}; tamper mails meanwhile: {subjects(tamper_mails()[before:])}") from None
    for pid in stopped:
        wait_for(lambda pid=pid: not os.path.exists(f"/proc/{pid}"), TIMEOUT, f"plugin {pid} to exit")
    wait_for(mta_idle, TIMEOUT, f"dma to deliver what is in {DMA_SPOOL}")
    new = tamper_mails()[before:]
    assert not new, f"tamper mail for the role's own work: {subjects(new)}"
