"""The host's audit daemon as the kernel reports it, for the suites that drive it."""

import re
import subprocess


def auditd_pid() -> int:
    """The pid the kernel reports for its audit daemon (0: none), from `auditctl -s`."""
    status = subprocess.run(["auditctl", "-s"], capture_output=True, text=True, check=True).stdout
    found = re.search(r"^pid (\d+)$", status, re.MULTILINE)
    return int(found.group(1)) if found else 0


def is_live_auditd(pid: int) -> bool:
    """Whether pid is a running (not zombie) auditd. The kernel keeps reporting the pid of
    an auditd that was killed until its next message to it fails, so pid alone can lie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            name, state = re.match(r"\d+ \((.*)\) (\S)", stat.read()).groups()
    except (OSError, AttributeError):
        return False
    return name == "auditd" and state not in "ZX"


def auditd_running() -> bool:
    return is_live_auditd(auditd_pid())
