"""SELinux proof on the molecule VM (Debian 12, booted enforcing) after the role ran.

Each test asks the guest itself: the plugin runs in its own domain, an alert raised by a
watched command reaches the mailbox, and the audit log holds no AVC denial for the
plugin's domain since the VM booted (the whole run: deploy, idempotence, these tests).
Hosts without SELinux enabled (the Debian 13 platform) are skipped with the reason.
"""

import re
import time

import pytest

DOMAIN = "audisp_mailalert_t"
PLUGIN = "/sbin/audisp-mailalert"
MAILBOX = "/var/mail/root"
WATCHED = "/usr/bin/w"  # molecule.yml: audit_mail_alert_rules key "alert", path /usr/bin/w
KEY = "alert"
DEADLINE = 120  # seconds: TCG is slow, and the plugin may be restarting after converge


@pytest.fixture(autouse=True)
def enforcing(host):
    status = host.run("getenforce")
    if status.rc != 0 or status.stdout.strip() == "Disabled":
        pytest.skip(f"SELinux is not enabled on {host.backend.get_hostname()}")
    assert status.stdout.strip() == "Enforcing"


def wait_for(probe, what):
    """Poll probe() until it returns something truthy, at most DEADLINE seconds."""
    end = time.monotonic() + DEADLINE
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"after {DEADLINE} s: {what}")
        time.sleep(1)


def selinux_type(label):
    """The type field of user:role:type:level."""
    return label.split(":")[2]


def plugin_labels(host):
    """SELinux labels of the running plugin processes (python3 running the script)."""
    ps = host.check_output("ps -eo label=,args=")
    return [line.split()[0] for line in ps.splitlines()
            if len(line.split()) > 2 and line.split()[2] == PLUGIN]


def test_module_installed(host):
    modules = host.check_output("semodule --list-modules=full")
    names = [line.split()[1] for line in modules.splitlines() if len(line.split()) > 1]
    assert "audisp_mailalert" in names


@pytest.mark.parametrize("path, expected", [
    (PLUGIN, "audisp_mailalert_exec_t"),
    ("/usr/lib/audisp-mailalert", "audisp_mailalert_lib_t"),
    ("/usr/lib/audisp-mailalert/mailalert/plugin.py", "audisp_mailalert_lib_t"),
    ("/usr/lib/audisp-mailalert/mailalert/transports/__pycache__", "audisp_mailalert_lib_t"),
    ("/etc/audit/audisp-mailalert.conf", "audisp_mailalert_conf_t"),
    ("/var/spool/audisp-mailalert", "audisp_mailalert_spool_t"),
    ("/var/spool/audisp-mailalert/queue", "audisp_mailalert_spool_t"),
])
def test_labels(host, path, expected):
    assert selinux_type(host.check_output("stat -c %%C %s", path)) == expected


def test_every_file_of_the_package_has_its_type(host):
    """compileall wrote the compiled files after the module's files were labelled: they
    have the package's type too (inherited from their directory), and nothing is lib_t."""
    labels = host.check_output("find /usr/lib/audisp-mailalert -printf '%Z %p\\n'").splitlines()
    assert len(labels) > 20
    assert [line for line in labels if selinux_type(line.split()[0]) != "audisp_mailalert_lib_t"] == []


def test_plugin_runs_in_its_domain(host):
    labels = wait_for(lambda: plugin_labels(host), f"no process runs {PLUGIN}")
    assert [selinux_type(label) for label in labels] == [DOMAIN]


def test_alert_delivered(host):
    """Run the watched command, find its audit event, wait for the mail that names it."""
    pid = host.check_output(f"sh -c 'echo $$; exec {WATCHED} >/dev/null'").split()[0]

    def event_id():
        found = host.run(f"ausearch --input-logs -k {KEY} -p {pid} -m SYSCALL --format raw")
        match = re.search(r"msg=audit\((\d+\.\d+:\d+)\)", found.stdout)
        return match.group(1) if match else None

    event = wait_for(event_id, f"no audit event with key {KEY} for pid {pid}")

    def mailed():
        mailbox = host.run(f"cat {MAILBOX}").stdout
        return re.search(rf"^X-Audit-Event: {re.escape(event)}@", mailbox, re.MULTILINE)

    wait_for(mailed, f"no mail in {MAILBOX} with X-Audit-Event {event}@...")
    mailbox = host.check_output(f"cat {MAILBOX}")
    assert f"X-Audit-Key: {KEY}" in mailbox


def test_no_denials_for_the_plugin_domain(host):
    """Zero AVCs with the plugin as subject since boot (ausearch rc 1 means no matches)."""
    found = host.run("ausearch -m AVC,USER_AVC --input-logs --format raw")
    assert found.rc in (0, 1), found.stderr
    assert re.findall(rf"^.*scontext=\S*:{DOMAIN}:.*$", found.stdout, re.MULTILINE) == []


def test_no_denials_against_the_plugin(host):
    """Nor with the plugin as target (e.g. the MTA denied the pipes it inherits)."""
    found = host.run("ausearch -m AVC,USER_AVC --input-logs --format raw")
    assert found.rc in (0, 1), found.stderr
    assert re.findall(rf"^.*tcontext=\S*:{DOMAIN}:.*$", found.stdout, re.MULTILINE) == []
