"""The role from each supported controller (ansible-core 2.16 to the newest), on this host,
as installed from the artifact: converge, the alert in root's mailbox, a re-run that
changes nothing, removal; no deprecation warning from any of them.

Run by `make test-ansible-versions` (mk/52-ansible-versions.mk), which builds a venv per
ansible-core minor version and sets AMR_CONTROLLERS to a space-separated list of
LABEL=BINDIR or LABEL=BINDIR=PYTHON: the ansible-playbook in BINDIR drives the role, with
PYTHON as the target's interpreter for the modules (e.g. a Python 3.6, as on RHEL 8).
The suite of test_role.py proves the role's behaviour in depth with the dev venv's
ansible-core; this one proves that each controller runs it.
"""

import json
import os
import subprocess
import time

import pytest
import test_role
from tamper_mail import no_tamper_mail
from test_role import playbook, plugin_pids, wait_for_alert

# test_role.py's module fixture: the host auditd lock, and a clean host before and after.
host = test_role.host

# What a run must not print: ansible-core's deprecation warnings (features that a later
# release removes) and its warnings about conditionals and templating.
FORBIDDEN = ("[DEPRECATION WARNING]", "[WARNING]")
REPORT = os.environ.get("AMR_CONTROLLERS_REPORT")


def controllers():
    for spec in os.environ.get("AMR_CONTROLLERS", "").split():
        label, bin_dir, *python = spec.split("=")
        yield pytest.param(bin_dir, python[0] if python else None, id=label)


def target_python(bin_dir, extra):
    """The interpreter that runs the modules on this host with these arguments."""
    proc = subprocess.run(
        [os.path.join(bin_dir, "ansible"), "localhost", "-i", "inventory.yml", "-o", *extra,
         "-m", "ansible.builtin.setup", "-a", "gather_subset=!all filter=ansible_python"],
        cwd=os.path.dirname(__file__), stdout=subprocess.PIPE, text=True, check=True,
        env=dict(os.environ, ANSIBLE_NOCOLOR="1"))
    facts = json.loads(proc.stdout.split("=>", 1)[1])["ansible_facts"]
    return facts["ansible_python"]["executable"]


def assert_clean(run):
    assert run.rc == 0, run
    found = [line for line in run.output.splitlines() if line.startswith(FORBIDDEN)]
    assert not found, f"{found}\n{run}"


@pytest.mark.skipif(not os.environ.get("AMR_CONTROLLERS"), reason="AMR_CONTROLLERS is not set (make test-ansible-versions)")
@pytest.mark.parametrize(("bin_dir", "python"), list(controllers()))
@pytest.mark.usefixtures("host")
def test_the_role_from_this_controller(request, bin_dir, python):
    started = time.monotonic()
    extra = ["-e", f"ansible_python_interpreter={python}"] if python else []
    assert target_python(bin_dir, extra) == (python or "/usr/bin/python3")
    with no_tamper_mail():
        converge = playbook("converge.yml", *extra, bin_dir=bin_dir)
    assert_clean(converge)
    assert converge.changed > 0, converge
    wait_for_alert("amr-exec-w", ["/usr/bin/w"])
    again = playbook("converge.yml", *extra, bin_dir=bin_dir)
    assert_clean(again)
    assert again.changed == 0, f"changed: {again.changed_tasks}\n{again}"
    with no_tamper_mail(stopped=plugin_pids()):
        absent = playbook("absent.yml", *extra, bin_dir=bin_dir)
    assert_clean(absent)
    assert plugin_pids() == []
    if REPORT:
        with open(REPORT, "a") as report:
            report.write(f"{request.node.callspec.id}: converge {converge.seconds:.1f} s, "
                         f"re-run {again.seconds:.1f} s (0 changed), alert arrived, "
                         f"absent {absent.seconds:.1f} s; {time.monotonic() - started:.0f} s in all\n")
