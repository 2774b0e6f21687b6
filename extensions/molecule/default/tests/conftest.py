"""Fixtures for the lab's testinfra checks (shared by the default and docker scenarios)."""

import os
import re

import pytest

# The docker scenario sets LAB_KERNEL_AUDIT=no: a container shares the host's kernel and
# cannot run auditd usefully, so the checks that need the kernel are skipped there, with
# this reason. Everywhere else they must pass.
KERNEL_AUDIT = os.environ.get("LAB_KERNEL_AUDIT", "yes") == "yes"
NO_KERNEL_REASON = (
    "LAB_KERNEL_AUDIT=no: this target is a container, it shares the host kernel and cannot "
    "run auditd, load rules or raise audit events (docs/lab.md)"
)


@pytest.fixture
def kernel_audit():
    """Skip, with the reason printed, on targets that cannot use the kernel's audit."""
    if not KERNEL_AUDIT:
        pytest.skip(NO_KERNEL_REASON)


# The host in a test's id, as testinfra writes it first in the brackets: "ansible://NAME".
# Up to the first "-", because parameters follow with one (test_x[ansible://debian13-auditd])
# and a name may hold one too: two hosts whose names differ only after a "-" share a worker,
# which is slower but still correct; one host is never split across two.
HOST_IN_TEST_ID = re.compile(r"\[(\w+://[^\]-]*)")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """The VM scenarios run verify with one pytest-xdist worker per VM (molecule.yml, `n` and
    `dist: loadscope`): every check of one host goes to one worker, in file order, because a
    VM's checks build on each other (test_tamper runs after test_selinux, each puts the host
    back for the next) and two of them at once on one VM would see each other's mails and
    rules. Only the VMs run side by side: most of verify is waiting for a VM (a mail, the
    plugin's next read of the kernel, a lease), and those waits now overlap. (xdist's own
    `loadgroup` marks cannot do it: with pytest 9 its group suffix never reaches the ids.)"""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling  # only where xdist runs the tests

    class ByHost(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            found = HOST_IN_TEST_ID.search(nodeid)
            return found.group(1) if found else super()._split_scope(nodeid)

    return ByHost(config, log)
