"""Fixtures for the lab's testinfra checks (shared by the default and docker scenarios)."""

import os

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
