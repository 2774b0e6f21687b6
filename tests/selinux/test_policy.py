"""Fast check of the SELinux policy module, without SELinux enabled on this host.

The module is built with the policy's development Makefile, then installed with
`semodule -n` into a copy of the host's installed policy store (selinux-policy-default),
so that it is linked against the real policy without touching the host's own store.
The linked policy is then asked (sesearch, seinfo, matchpathcon) what the module grants.
"""

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = REPO / "selinux"
MODULE = "audisp_mailalert"
MAKEFILE = Path("/usr/share/selinux/devel/Makefile")
POLICY_NAME = "default"  # Debian's reference policy (selinux-policy-default)
STORE = Path("/var/lib/selinux") / POLICY_NAME
POLICY_CONFIG = Path("/etc/selinux") / POLICY_NAME
TOOLS = ("make", "checkmodule", "semodule_package", "semodule", "sesearch", "seinfo", "matchpathcon")


def run(argv, cwd=None):
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)


@pytest.fixture(scope="session", autouse=True)
def tools_present():
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if not MAKEFILE.exists():
        missing.append(str(MAKEFILE))
    if not STORE.is_dir():
        missing.append(str(STORE))
    if missing:
        pytest.fail("missing (see mk/apt-packages): " + ", ".join(missing))


def build(workdir: Path, te_text=None) -> subprocess.CompletedProcess:
    """Build the module in workdir from the repository's sources (or a modified .te)."""
    workdir.mkdir(parents=True)
    for suffix in ("te", "fc", "if"):
        shutil.copy(SOURCES / f"{MODULE}.{suffix}", workdir)
    if te_text is not None:
        (workdir / f"{MODULE}.te").write_text(te_text)
    return run(["make", "-f", str(MAKEFILE), f"{MODULE}.pp"], cwd=workdir)


def link(root: Path, package: Path) -> subprocess.CompletedProcess:
    """Install the package into a copy of the host's policy store under root, no reload."""
    shutil.copytree(STORE, root / STORE.relative_to("/"), symlinks=True)
    shutil.copytree(POLICY_CONFIG, root / POLICY_CONFIG.relative_to("/"), symlinks=True)
    return run(["semodule", "-n", "-p", str(root), "-i", str(package)])


@pytest.fixture(scope="session")
def linked(tmp_path_factory):
    """The policy root (a temp dir) holding the host's policy with the module linked in."""
    work = tmp_path_factory.mktemp("selinux")
    built = build(work / "build")
    assert built.returncode == 0, built.stdout + built.stderr
    root = work / "root"
    linked = link(root, work / "build" / f"{MODULE}.pp")
    assert linked.returncode == 0, linked.stderr
    return root


@pytest.fixture(scope="session")
def policy(linked) -> str:
    binaries = sorted((linked / POLICY_CONFIG.relative_to("/") / "policy").glob("policy.*"))
    assert binaries, "semodule wrote no policy binary"
    return str(binaries[-1])


def sesearch(policy: str, *args: str) -> list:
    result = run(["sesearch", *args, policy])
    assert result.returncode == 0, result.stderr
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


def test_host_store_untouched(linked):
    """semodule -p wrote into the copy: the host's store has no such module."""
    assert not (STORE / "active" / "modules" / "400" / MODULE).exists()
    assert (linked / STORE.relative_to("/") / "active" / "modules" / "400" / MODULE).is_dir()


def test_auditd_runs_the_plugin_in_its_domain(policy):
    rules = sesearch(policy, "-T", "-s", "auditd_t", "-t", f"{MODULE}_exec_t", "-c", "process")
    assert rules == [f"type_transition auditd_t {MODULE}_exec_t:process {MODULE}_t;"]


def test_systemd_runs_the_watchdog_in_the_plugins_domain(policy):
    """The watchdog's oneshot service: init_t executes the program into the plugin's domain
    (not init_t's own, which may do anything)."""
    rules = sesearch(policy, "-T", "-s", "init_t", "-t", f"{MODULE}_exec_t", "-c", "process")
    assert rules == [f"type_transition init_t {MODULE}_exec_t:process {MODULE}_t;"]
    assert sesearch(policy, "-A", "-s", "init_t", "-t", f"{MODULE}_t", "-c", "process", "-p", "transition")


@pytest.mark.parametrize("path, expected", [
    ("/sbin/audisp-mailalert", "audisp_mailalert_exec_t"),
    ("/usr/sbin/audisp-mailalert", "audisp_mailalert_exec_t"),
    ("/usr/bin/audisp-mailalert", "audisp_mailalert_exec_t"),
    ("/usr/lib/audisp-mailalert", "audisp_mailalert_lib_t"),
    ("/usr/lib/audisp-mailalert/mailalert/__pycache__/plugin.cpython-311.pyc", "audisp_mailalert_lib_t"),
    ("/etc/audit/audisp-mailalert.conf", "audisp_mailalert_conf_t"),
    ("/etc/audit/audisp-mailalert.pass", "audisp_mailalert_conf_t"),
    ("/etc/audit/auditd.conf", "auditd_etc_t"),
    ("/var/spool/audisp-mailalert", "audisp_mailalert_spool_t"),
    ("/var/spool/audisp-mailalert/queue/1.eml", "audisp_mailalert_spool_t"),
])
def test_file_contexts(linked, path, expected):
    result = run(["matchpathcon", "-P", str(linked / POLICY_CONFIG.relative_to("/")), path])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[1].split(":")[2] == expected


@pytest.mark.parametrize("target, tclass, perm", [
    ("auditd_t", "unix_stream_socket", "read"),  # stdin from auditd
    ("audisp_mailalert_conf_t", "file", "read"),
    ("audisp_mailalert_lib_t", "file", "read"),  # the package it imports
    ("audisp_mailalert_spool_t", "file", "rename"),
    ("audisp_mailalert_spool_t", "dir", "add_name"),
    ("devlog_t", "sock_file", "write"),  # syslog(3)
    ("smtp_port_t", "tcp_socket", "name_connect"),
    ("system_mail_t", "process", "transition"),  # sendmail in the MTA's domain
    (f"{MODULE}_t", "netlink_audit_socket", "nlmsg_read"),  # the status (auditctl -s)
    (f"{MODULE}_t", "netlink_audit_socket", "nlmsg_readpriv"),  # the rules (auditctl -l)
    ("unconfined_t", "file", "read"),  # /proc/PID of a SIGTERM's sender
    ("proc_t", "dir", "read"),  # the watchdog lists /proc...
    ("auditd_t", "file", "read"),  # ...and reads auditd's stat and cmdline
])
def test_allowed(policy, target, tclass, perm):
    assert sesearch(policy, "-A", "-s", f"{MODULE}_t", "-t", target, "-c", tclass, "-p", perm)


@pytest.mark.parametrize("target, tclass, perm", [
    ("shadow_t", "file", "read"),
    ("auditd_log_t", "file", "read"),
    ("auditd_etc_t", "file", "write"),
    ("http_port_t", "tcp_socket", "name_connect"),
    ("user_home_t", "file", "read"),
    ("bin_t", "file", "write"),
    ("audisp_mailalert_lib_t", "file", "write"),  # no bytecode written at run time
    ("var_spool_t", "file", "write"),
    (f"{MODULE}_t", "netlink_audit_socket", "nlmsg_write"),  # it reads audit state, never sets it
    # /proc/PID of processes that cannot signal it: environ, maps, exe of a daemon
    ("sshd_t", "file", "read"),
    ("sshd_t", "lnk_file", "read"),
    ("passwd_t", "file", "read"),
    ("postfix_master_t", "file", "read"),
    ("user_t", "dir", "search"),
])
def test_nothing_broader(policy, target, tclass, perm):
    assert sesearch(policy, "-A", "-s", f"{MODULE}_t", "-t", target, "-c", tclass, "-p", perm) == []


def test_proc_read_only_of_the_domains_that_may_signal_it(policy):
    """/proc/PID (exe, loginuid, sessionid) of a SIGTERM's sender: readable for each domain
    that may send the plugin a signal, and for no other. SELinux cannot tell environ from
    loginuid (every file of /proc/PID has the process's type), so the domains are the bound."""
    def sources(rules):
        return {rule.split()[1] for rule in rules}

    senders = sources(sesearch(policy, "-A", "-t", f"{MODULE}_t", "-c", "process", "-p", "signal")) - {f"{MODULE}_t"}
    assert {"auditd_t", "unconfined_domain_type", "init_t", "sysadm_t"} <= senders
    for sender in sorted(senders):
        for tclass, perm in (("dir", "search"), ("file", "read"), ("lnk_file", "read")):
            assert sesearch(policy, "-A", "-s", f"{MODULE}_t", "-t", sender, "-c", tclass, "-p", perm), (sender, tclass)
    # the rules that give /proc/PID reads name exactly those domains (and the plugin's own)
    readable = {rule.split()[2].split(":")[0] for rule in sesearch(
        policy, "-A", "-s", f"{MODULE}_t", "-c", "lnk_file", "-p", "read", "-dt", "-t", "domain")}
    assert readable == set(), readable  # never the attribute of every domain
    domains = set(run(["seinfo", "-a", "domain", "-x", policy]).stdout.split()) | {"unconfined_domain_type"}
    targets = {rule.split()[2].split(":")[0] for rule in sesearch(
        policy, "-A", "-s", f"{MODULE}_t", "-c", "file", "-p", "read", "-ds")} & domains
    assert targets - {f"{MODULE}_t"} <= senders | {"audisp_t"}, targets - senders


# Confined domains that the reference policy lets write lib_t (some under a boolean), the
# type the package's directory would have without a type of its own. (prelink_t and
# puppet_t write it too, but as files_unconfined_type: they may write any file.)
LIB_T_WRITERS = ["ftpd_t", "smbd_t", "nfsd_t", "systemd_tmpfiles_t"]


@pytest.mark.parametrize("domain", LIB_T_WRITERS)
def test_no_confined_domain_writes_the_package(policy, domain):
    """The code the plugin runs has a type of its own: domains that may write lib_t do
    not get to write it (sysadm and the domains with unconfined file access still may, as
    they may write /etc/shadow)."""
    assert sesearch(policy, "-A", "-s", domain, "-t", "lib_t", "-c", "file", "-p", "write")
    assert sesearch(policy, "-A", "-s", domain, "-t", f"{MODULE}_lib_t", "-c", "file", "-p", "write") == []


def test_neither_permissive_nor_unconfined(policy):
    permissive = run(["seinfo", "--permissive", "-x", policy])
    assert permissive.returncode == 0, permissive.stderr
    assert f"{MODULE}_t" not in permissive.stdout.split()
    unconfined = run(["seinfo", "-a", "unconfined_domain_type", "-x", policy])
    assert unconfined.returncode == 0, unconfined.stderr
    assert f"{MODULE}_t" not in unconfined.stdout.split()


def test_unknown_interface_fails_the_build(tmp_path):
    te = (SOURCES / f"{MODULE}.te").read_text() + "\nlogging_no_such_interface(audisp_mailalert_t)\n"
    built = build(tmp_path / "build", te)
    assert built.returncode != 0
    assert "logging_no_such_interface" in built.stderr


def test_unknown_type_fails_the_link(tmp_path):
    """A required type the policy lacks compiles (it is a require) but cannot link."""
    te = (SOURCES / f"{MODULE}.te").read_text() + (
        "\ngen_require(`\n\ttype no_such_type_t;\n')\n"
        "allow audisp_mailalert_t no_such_type_t:file read;\n"
    )
    built = build(tmp_path / "build", te)
    assert built.returncode == 0, built.stderr
    linked = link(tmp_path / "root", tmp_path / "build" / f"{MODULE}.pp")
    assert linked.returncode != 0
    assert "Failed to resolve" in linked.stderr, linked.stderr
