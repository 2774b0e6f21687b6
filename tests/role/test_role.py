"""The role on this host: real kernel, real auditd (SysV init here), dma delivering to
/var/mail/root. Tests run in file order and share the host's state; the module fixture
starts from a clean host (state absent) and leaves one behind.

Run with `make test-role` (it builds the collection tree that ANSIBLE_COLLECTIONS_PATH
points at).
"""

import fcntl
import hashlib
import json
import mailbox
import os
import re
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest
from host_auditd import auditd_pid
from polling import wait_for
from tamper_mail import no_tamper_mail, subjects, tamper_mails, watched_rules_loaded

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
# The collection tree `make collection-tree` built (the Makefile exports its parent).
BUILD = Path(os.environ.get("ANSIBLE_COLLECTIONS_PATH", REPO / "build"))
LOCK = "/run/lock/audit-mail-alert-host.lock"
MAILBOX = "/var/mail/root"
TIMINGS = BUILD / "role-timings.txt"
AUDIT_LOG = "/var/log/audit/audit.log"
UNMANAGED = '{"audit_mail_alert_manage_auditd": false}'
UNMANAGED_MSG = "audit_mail_alert_manage_auditd is false: files installed, auditd and the kernel rules left alone"

PLUGIN = "/sbin/audisp-mailalert"
LIB = "/usr/lib/audisp-mailalert"
PACKAGE_SRC = REPO / "files" / "mailalert"
# The program as the role installs it: the collection's, which has no #! line, under the
# #! line of the plugin's interpreter.
INSTALLED_PROGRAM = b"#!/usr/bin/python3\n" + (REPO / "files" / "audisp_mailalert.py").read_bytes()
# The last role whose plugin was one file (before the package split), for the upgrade test.
ONE_FILE_RELEASE = "1c58494"
CONFIG = "/etc/audit/audisp-mailalert.conf"
PLUGIN_CONF = "/etc/audit/plugins.d/audisp-mailalert.conf"
RULES = "/etc/audit/rules.d/60-audit-mail-alert.rules"
SPOOL = "/var/spool/audisp-mailalert"
MARKER = f"{SPOOL}/maintenance"
PASSWORD = "/etc/audit/audisp-mailalert.pass"
# This host has no systemd as PID 1: the watchdog is a cron entry.
WATCHDOG_CRON = "/etc/cron.d/audisp-mailalert-watchdog"
ROLE_PATHS = [PLUGIN, LIB, CONFIG, PASSWORD, PLUGIN_CONF, RULES, SPOOL, MARKER, WATCHDOG_CRON]
# A rule of the host's own, which the role must leave loaded.
HOST_RULES = "/etc/audit/rules.d/50-amr-host.rules"
HOST_KEY = "amr-host-rule"

TASK_RE = re.compile(r"^(?:TASK|RUNNING HANDLER) \[(?:[\w.]+ : )?(.*)\] \*+$")
RECAP_RE = re.compile(r"^localhost\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")


class Run:
    """One ansible-playbook run: its output, recap and the names of the changed tasks."""

    def __init__(self, args, proc, seconds):
        self.args = args
        self.rc = proc.returncode
        self.output = proc.stdout
        self.seconds = seconds
        self.changed_tasks = []
        self.changed = self.failed = None
        task = None
        for line in self.output.splitlines():
            header = TASK_RE.match(line)
            if header:
                task = header.group(1)
            elif line.startswith("changed: [localhost]"):
                self.changed_tasks.append(task)
            recap = RECAP_RE.match(line)
            if recap:
                self.changed, self.failed = int(recap.group(2)), int(recap.group(4))

    def __str__(self):
        return f"ansible-playbook {' '.join(self.args)} (rc {self.rc}):\n{self.output[-6000:]}"

    # pytest shows an assertion's message with repr(): make a failed run show its output.
    __repr__ = __str__


def playbook(name, *args, collections=BUILD, bin_dir=None):
    """Run ansible-playbook (the one in bin_dir, else the one on PATH) on this host, with
    the collections in collections."""
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=str(collections),
        ANSIBLE_HOME=str(BUILD / "ansible-home"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_DISPLAY_SKIPPED_HOSTS="false",
        ANSIBLE_RETRY_FILES_ENABLED="false",
    )
    program = os.path.join(bin_dir, "ansible-playbook") if bin_dir else "ansible-playbook"
    cmd = [program, "-i", str(HERE / "inventory.yml"), str(HERE / name), *args]
    print(f"==> {' '.join(cmd[1:])}", flush=True)
    started = time.monotonic()
    proc = subprocess.run(cmd, env=env, cwd=HERE, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=900, check=False)
    run = Run([name, *args], proc, time.monotonic() - started)
    print(f"    rc {run.rc}, changed={run.changed}, {run.seconds:.1f} s", flush=True)
    return run


def loaded_rules():
    return subprocess.run(["auditctl", "-l"], stdout=subprocess.PIPE, text=True, check=True).stdout


def loaded_keys():
    return set(re.findall(r"(?:-k|key=)\s*(\S+)", loaded_rules()))


def plugin_pids():
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if PLUGIN.encode() in argv[:2]:
                pids.append(int(entry.name))
    return pids


def snapshot():
    """What the role may touch: its files (mode, owner, content) and the loaded rules."""
    state = {"rules": loaded_rules(), "rules.d": sorted(os.listdir("/etc/audit/rules.d"))}
    for path in ROLE_PATHS:
        p = Path(path)
        if not p.exists():
            state[path] = None
            continue
        st = p.stat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        state[path] = (oct(st.st_mode), st.st_uid, st.st_gid, digest)
    return state


def package_problems():
    """How the installed package differs from files/mailalert: each module there with the
    same bytes (root, 0644), its directories root's 0755, a compiled file for each module,
    and nothing else."""
    problems, wanted = [], set()
    for source in sorted(PACKAGE_SRC.rglob("*.py")):
        relative = source.relative_to(PACKAGE_SRC.parent)
        installed = Path(LIB) / relative
        wanted |= {installed, *installed.parents}
        if not installed.is_file() or installed.read_bytes() != source.read_bytes():
            problems.append(f"{installed} is not {relative}")
            continue
        st = installed.stat()
        if (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) != (0o644, 0, 0):
            problems.append(f"{installed}: mode {stat.S_IMODE(st.st_mode):o} uid {st.st_uid}")
        compiled = list(installed.parent.glob(f"__pycache__/{installed.stem}.*.pyc"))
        if not compiled:
            problems.append(f"{installed} has no compiled file")
        wanted |= {*compiled, installed.parent / "__pycache__"}
    for path in [Path(LIB), *Path(LIB).rglob("*")]:
        if path not in wanted:
            problems.append(f"{path} is not part of the package")
        elif path.is_dir() and (stat.S_IMODE(path.stat().st_mode), path.stat().st_uid) != (0o755, 0):
            problems.append(f"{path}: mode {stat.S_IMODE(path.stat().st_mode):o}")
    return problems


# The maintenance marker, format 2 (docs/design.md): START END BOOT_ID OPENED UNTIL.
MARKER_LINE = re.compile(r"(\d+) (\d+) ([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
                         r" (\d+\.\d{1,2}) (\d+\.\d{1,2})\n")


def boot_id():
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def uptime():
    """Seconds since boot: the clock of the marker's OPENED and UNTIL."""
    return float(Path("/proc/uptime").read_text().split()[0])


def assert_marker_closed():
    """The role's maintenance marker is root's 0600 regular file in format 2, of this
    boot, and its window is closed on both clocks: END is not in the future, and UNTIL,
    the boot clock's end of the window, has passed (it is the time the role finished,
    not the end of a lease still running). Returns (START, END, UNTIL)."""
    st = os.lstat(MARKER)
    assert (stat.S_ISREG(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (True, 0o600, 0, 0)
    now_up, now = uptime(), time.time()
    text = Path(MARKER).read_text()
    match = MARKER_LINE.fullmatch(text)
    assert match, f"not a marker of format 2: {text!r}"
    start, end = int(match.group(1)), int(match.group(2))
    opened, until = float(match.group(4)), float(match.group(5))
    assert match.group(3) == boot_id(), text
    assert start <= end <= now, (text, now)
    assert opened <= until <= now_up, (text, now_up)
    return start, end, until


def alerts(key):
    """Messages in root's mailbox with this X-Audit-Key."""
    if not os.path.exists(MAILBOX):
        return []
    return [m for m in mailbox.mbox(MAILBOX) if m["X-Audit-Key"] == key]


def wait_for_alert(key, command, timeout=30.0):
    """Run command and wait (poll, with a deadline) for a new alert with key."""
    before = len(alerts(key))
    subprocess.run(command, stdout=subprocess.DEVNULL, check=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = alerts(key)
        if len(found) > before:
            return found[-1]
        time.sleep(0.25)
    pytest.fail(f"no alert with X-Audit-Key {key} in {MAILBOX} within {timeout} s after {command}")


def record(label, run):
    TIMINGS.parent.mkdir(parents=True, exist_ok=True)
    with TIMINGS.open("a") as out:
        out.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {label}: {run.seconds:.1f} s "
                  f"(changed={run.changed})\n")


@pytest.fixture(scope="module")
def host():
    """Hold the host auditd lock for the whole module, start and end on a clean host."""
    if os.geteuid() != 0:
        pytest.skip("needs root to drive the host's auditd")
    if shutil.which("sendmail", path="/usr/sbin:/usr/bin") is None:
        pytest.fail("no MTA: /usr/sbin/sendmail is missing (install dma, see mk/apt-packages)")
    if not (BUILD / "ansible_collections/linux_audit/mail_alert/roles").is_dir():
        pytest.fail("no collection tree: run `make collection-tree` (make test-role does)")
    # Python opens the lock non-inheritable: an auditd restarted by the role must not
    # inherit it (it would hold the lock for its whole life).
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        Path(HOST_RULES).write_text(f"-w /etc/hosts -p wa -k {HOST_KEY}\n")
        subprocess.run(["augenrules", "--load"], stdout=subprocess.DEVNULL, check=True)
        clean = playbook("absent.yml")
        assert clean.rc == 0, clean
        try:
            yield
        finally:
            playbook("absent.yml")
            Path(HOST_RULES).unlink(missing_ok=True)
            subprocess.run(["augenrules", "--load"], stdout=subprocess.DEVNULL, check=False)


def test_refused_input_changes_nothing(host):
    before = snapshot()
    run = playbook("tests_refused_input.yml")
    assert run.rc == 0 and run.failed == 0, run
    assert run.changed == 0, run
    assert snapshot() == before


def test_check_mode_on_a_clean_host_changes_nothing(host):
    before = snapshot()
    run = playbook("converge.yml", "--check", "--diff")
    assert run.rc == 0, run
    assert "Plugin | Write the plugin config" in run.changed_tasks, run
    assert "Watchdog | Write the cron entry" in run.changed_tasks, run
    assert snapshot() == before


def test_converge(host):
    with no_tamper_mail():
        run = playbook("converge.yml")
    assert run.rc == 0, run
    record("converge on a clean host", run)
    for path, mode in [(PLUGIN, 0o750), (CONFIG, 0o640), (PLUGIN_CONF, 0o640),
                       (RULES, 0o640), (SPOOL, 0o700), (WATCHDOG_CRON, 0o644)]:
        st = os.stat(path)
        assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (mode, 0, 0), path
    assert Path(PLUGIN).read_bytes() == INSTALLED_PROGRAM
    assert package_problems() == []
    assert {"amr-exec-w", "amr-hostname", HOST_KEY} <= loaded_keys()
    assert_marker_closed()
    pids = plugin_pids()
    assert len(pids) == 1, pids
    assert os.stat(f"/proc/{pids[0]}").st_uid == 0
    with open(f"/proc/{pids[0]}/stat") as stat:
        assert int(stat.read().rsplit(")", 1)[1].split()[1]) == auditd_pid()


def test_the_watchdog_cron_entry_runs_the_watchdog_and_finds_the_plugin_healthy(host):
    """The entry's command, run as cron would run it (its redirections aside): the plugin
    the role started runs under auditd, and its status is fresh."""
    lines = [line for line in Path(WATCHDOG_CRON).read_text().splitlines()
             if line and not line.startswith("#") and "=" not in line.split()[0]]
    assert len(lines) == 1, lines
    fields = lines[0].split()
    assert fields[:6] == ["*", "*", "*", "*", "*", "root"], lines
    command = [word for word in fields[6:] if not word.startswith((">", "2>"))]
    assert command == [PLUGIN, "--config", CONFIG, "--watchdog"]
    wait_for(lambda: os.path.exists(f"{SPOOL}/status.json"), 10, "the plugin's status.json")

    def judged():
        # Nothing is judged (nor written) while the role's window is open, as it is for a
        # few seconds after the converge; then not before the plugin settled.
        done = subprocess.run(command, capture_output=True, text=True, check=False, env={})
        assert done.returncode == 0, done.stderr
        if not os.path.exists(f"{SPOOL}/watchdog.json"):
            return None
        state = json.loads(Path(f"{SPOOL}/watchdog.json").read_text())
        return state if state["verdict"] != "starting" else None
    state = wait_for(judged, 30, "the watchdog to judge", 0.5)
    assert state["verdict"] == "healthy" and state["outage"] is None, state


def test_alert_for_w_reaches_the_mailbox(host):
    mail = wait_for_alert("amr-exec-w", ["/usr/bin/w"])
    assert "/usr/bin/w" in mail["Subject"]
    assert mail["X-Audit-Rule"] == "amr-exec-w"
    assert re.fullmatch(r"\d+\.\d{3}:\d+@\S+", mail["X-Audit-Event"]), mail["X-Audit-Event"]


def test_verify_module_proves_the_chain(host):
    run = playbook("verify.yml")
    assert run.rc == 0 and run.failed == 0, run


def test_second_run_changes_nothing(host):
    with no_tamper_mail():
        run = playbook("converge.yml")
    assert run.rc == 0, run
    record("second run (idempotent)", run)
    assert run.changed == 0, f"changed: {run.changed_tasks}\n{run}"


def test_check_mode_on_a_converged_host_changes_nothing(host):
    before = snapshot()
    run = playbook("converge.yml", "--check", "--diff")
    assert run.rc == 0, run
    assert run.changed == 0, f"changed: {run.changed_tasks}\n{run}"
    assert snapshot() == before


def test_drifted_files_are_put_back(host):
    """The role skips a file's task when one find shows the file as the task would write
    it (tasks/plugin.yml): a file whose mode, content or presence drifted is put back."""
    before = snapshot()
    os.chmod(PLUGIN, 0o755)
    with open(CONFIG, "a") as config:
        config.write("# drift\n")
    os.chmod(SPOOL, 0o755)
    os.unlink(PLUGIN_CONF)
    Path(PASSWORD).write_text("stale\n")
    with open(f"{LIB}/mailalert/text.py", "a") as module:
        module.write("# drift\n")
    for compiled in Path(LIB).glob("mailalert/__pycache__/limits.*.pyc"):
        compiled.unlink()
    Path(f"{LIB}/mailalert/stray.py").write_text("# not part of the package\n")
    run = playbook("converge.yml")
    assert run.rc == 0, run
    assert package_problems() == []
    assert {
        "Plugin | Unpack the modules on the target",
        "Plugin | Remove what the package no longer holds",
        "Plugin | Compile the package",
        "Plugin | Install the plugin program",
        "Plugin | Write the plugin config",
        "Plugin | Create the spool directory",
        "Plugin | Register the plugin with auditd",
        "Plugin | Remove the SMTP password file when no login is configured",
    } <= set(run.changed_tasks), run
    after = snapshot()
    # auditd was restarted (plugins.d entry): the loaded rules are compared by key, and
    # the maintenance marker holds the restart's window.
    assert {k: v for k, v in after.items() if k not in ("rules", MARKER)} == \
        {k: v for k, v in before.items() if k not in ("rules", MARKER)}
    assert_marker_closed()
    assert {"amr-exec-w", "amr-hostname", HOST_KEY} <= loaded_keys()
    assert len(plugin_pids()) == 1
    again = playbook("converge.yml")
    assert again.rc == 0 and again.changed == 0, f"changed: {again.changed_tasks}\n{again}"


def test_key_change_changes_only_rules_and_plugin_config(host):
    before = snapshot()
    # The load removes each watched rule before it adds the new ones: the plugin counts
    # each removal as the role's work and mails nothing.
    with no_tamper_mail(suppressed=watched_rules_loaded()):
        run = playbook("converge.yml", "-e", "role_vars_file=vars_key_changed.yml", "--diff")
    assert run.rc == 0, run
    assert set(run.changed_tasks) == {
        "Rules | Write the audit rules",
        "Rules | Mark the start of the rules load",
        "Rules | Load the audit rules with augenrules",
        "Rules | Drop the backup of the previous rules file",
        "Rules | Record the loaded rules as the deployed audit state",
        "Rules | Mark the end of the rules load",
        "Plugin | Write the plugin config",
        "Mark the start of the role's work on auditd",
        "Reload auditd",
        "Mark the end of the role's work on auditd",
    }, run
    after = snapshot()
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {"rules", RULES, CONFIG, MARKER}, changed
    assert_marker_closed()
    keys = loaded_keys()
    assert "amr-exec-w2" in keys and "amr-exec-w" not in keys
    # The running plugin re-read its config (SIGHUP): the renamed key raises alerts.
    wait_for_alert("amr-exec-w2", ["/usr/bin/w"])


def test_rules_tag_applies_a_rules_change(host):
    with no_tamper_mail(suppressed=watched_rules_loaded()):
        run = playbook("converge.yml", "--tags", "rules")
    assert run.rc == 0, run
    assert "Rules | Write the audit rules" in run.changed_tasks, run
    keys = loaded_keys()
    assert "amr-exec-w" in keys and "amr-exec-w2" not in keys
    wait_for_alert("amr-exec-w", ["/usr/bin/w"])


def test_a_watch_on_the_marker_names_who_writes_it(host):
    """docs/role.md's advice: with the marker watched, each write of it raises an alert that
    names the writer, the role's own (python3, from the module) and one by hand."""
    seen = len(alerts("amr-marker"))
    run = playbook("converge.yml", "-e", "role_vars_file=vars_marker_watched.yml")
    assert run.rc == 0, run
    # The load adds the watch; the marker's end after it and the reload's window are seen.
    by_role = wait_for(lambda: alerts("amr-marker")[seen:], 30, "an alert for the role's marker write")
    assert 'exe="/usr/bin/python3' in by_role[0].get_payload(), by_role[0].get_payload()
    seen = len(alerts("amr-marker"))
    subprocess.run(["touch", MARKER], check=True)
    by_hand = wait_for(lambda: alerts("amr-marker")[seen:], 30, "an alert for touch on the marker")
    assert 'exe="/usr/bin/touch"' in by_hand[0].get_payload(), by_hand[0].get_payload()
    back = playbook("converge.yml")
    assert back.rc == 0, back
    assert "amr-marker" not in loaded_keys()


def test_a_restart_in_one_run_does_not_skip_the_reload_of_the_next(host):
    """Two runs of the role in one ansible-playbook run: the first restarts auditd, the
    second must still reload it for its config change (the running plugin re-reads it)."""
    with open(PLUGIN, "a") as program:
        program.write("# changed by test_role.py: the role must restart auditd\n")
    old_pids = plugin_pids()
    # The old plugin decides at auditd's end (DAEMON_END), the new one counts the second
    # run's load.
    with no_tamper_mail(suppressed=watched_rules_loaded(), stopped=old_pids):
        run = playbook("converge_twice.yml")
    assert run.rc == 0, run
    assert "Restart auditd" in run.changed_tasks, run
    # Only the second run can reload: in the first the restart skips it.
    assert "Reload auditd" in run.changed_tasks, run
    assert plugin_pids() != old_pids
    wait_for_alert("amr-exec-w2", ["/usr/bin/w"])
    assert_marker_closed()
    back = playbook("converge.yml")
    assert back.rc == 0, back
    wait_for_alert("amr-exec-w", ["/usr/bin/w"])


def test_smtp_password_lands_in_a_private_file_and_never_in_the_output(host):
    secret = "amr-S3cret-4711"
    run = playbook("converge.yml", "-e", "role_vars_file=vars_smtp.yml", "--diff", "-v")
    assert run.rc == 0, run
    assert secret not in run.output
    st = os.stat(PASSWORD)
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o600, 0, 0)
    assert Path(PASSWORD).read_text() == secret + "\n"
    assert f"smtp_password_file = {PASSWORD}" in Path(CONFIG).read_text()
    assert len(plugin_pids()) == 1
    back = playbook("converge.yml")
    assert back.rc == 0, back
    assert not os.path.exists(PASSWORD)


def test_refused_load_restores_the_previous_rules(host):
    before = snapshot()
    with no_tamper_mail(suppressed=watched_rules_loaded()):
        run = playbook("converge.yml", "-e", "role_vars_file=vars_bad_rule.yml")
    assert run.rc != 0 and run.failed == 1, run
    assert "augenrules --load refused the rules" in run.output, run
    assert "amr_no_such_syscall" in run.output, run  # auditctl's own message
    after = snapshot()
    assert after["rules"] == before["rules"]
    assert after[RULES] == before[RULES]
    assert after["rules.d"] == before["rules.d"], "a backup file was left in rules.d"
    # The failed load does not leave the maintenance window open.
    assert_marker_closed()
    # The host is back to the converged state: a normal run changes only the plugin config
    # (written before the load was refused) back.
    run = playbook("converge.yml")
    assert run.rc == 0, run
    assert set(run.changed_tasks) <= {"Plugin | Write the plugin config", "Reload auditd",
                                      "Mark the start of the role's work on auditd",
                                      "Mark the end of the role's work on auditd"}, run


def test_a_failed_restart_closes_the_window_and_fails_the_run(host):
    """The Restart auditd handler fails (its command exits 1): the handler that closes the
    maintenance window still runs, and the run fails after it, naming the restart. The
    window is closed on the boot clock at once, not left open for its lease."""
    pid = auditd_pid()
    # The plugins.d entry, written anew with the same content, notifies the restart; the
    # command that does not restart leaves auditd as it was (same entry, same plugin).
    os.unlink(PLUGIN_CONF)
    run = playbook("converge.yml", "-e", '{"__audit_mail_alert_restart_command": ["false"]}')
    assert run.rc != 0 and run.failed == 1, run
    assert "Restarting auditd failed: false exited with 1" in run.output, run
    assert "Mark the end of the role's work on auditd" in run.changed_tasks, run
    assert_marker_closed()
    assert auditd_pid() == pid, "auditd was restarted"
    again = playbook("converge.yml")
    assert again.rc == 0 and again.changed == 0, f"changed: {again.changed_tasks}\n{again}"


def test_the_same_commands_by_hand_each_bring_one_tamper_mail(host):
    """What the role does without a mail is tampering when someone else does it: outside
    the role's window, augenrules --load and auditctl -D each bring one mail that accounts
    for every watched rule removed."""
    _start, end, until = assert_marker_closed()
    wait_for(lambda: time.time() > end + 6 and uptime() > until + 6, 15,
             "the role's last window (END + 5 s, UNTIL + 5 s) to pass")
    watched = watched_rules_loaded()
    assert watched == 2, loaded_rules()
    for command in (["augenrules", "--load"], ["auditctl", "-D"]):
        before = len(tamper_mails())
        subprocess.run(command, stdout=subprocess.DEVNULL, check=True)
        mails = wait_for(lambda before=before: tamper_mails()[before:], 30, f"a tamper mail for {command}")
        assert len(mails) == 1, subjects(mails)
        body = mails[0].get_payload()
        assert mails[0]["X-Audit-Tamper"] == "rules-removed", subjects(mails)
        assert "Removed keys: amr-exec-w, amr-hostname" in body, body
        # Every watched removal is in this one mail: none is left for a second one.
        assert f"Rules removed: {watched} with a watched key" in body, body
        assert "exe=/usr/sbin/auditctl" in body, body
    # Back to the converged rules; after -D this load has nothing to remove.
    with no_tamper_mail():
        subprocess.run(["augenrules", "--load"], stdout=subprocess.DEVNULL, check=True)
    assert {"amr-exec-w", "amr-hostname", HOST_KEY} <= loaded_keys()


def open_window_as_a_play_that_died():
    """What a play leaves that opened the maintenance window and was killed before it
    closed it: the module's start, and nothing after."""
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(BUILD), ANSIBLE_HOME=str(BUILD / "ansible-home"))
    done = subprocess.run(["ansible", "-i", str(HERE / "inventory.yml"), "all", "-m",
                           "linux_audit.mail_alert.audit_mail_alert_maintenance", "-a",
                           f"state=started spool_dir={SPOOL}"],
                          env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    match = MARKER_LINE.fullmatch(Path(MARKER).read_text())
    assert match and uptime() < float(match.group(5)), "the window is not open"
    return float(match.group(5))


def test_a_window_left_open_hides_neither_auditing_disabled_nor_removals_after_its_lease(host):
    """Issue #21: a play that died with its window open. Auditing disabled is mailed at
    once (the role never does it); rules removed once the lease (30 s) has run out."""
    until = open_window_as_a_play_that_died()
    before = len(tamper_mails())
    try:
        subprocess.run(["auditctl", "-e", "0"], stdout=subprocess.DEVNULL, check=True)
        mails = wait_for(lambda: tamper_mails()[before:], 10, "a tamper mail for auditctl -e 0")
    finally:
        subprocess.run(["auditctl", "-e", "1"], stdout=subprocess.DEVNULL, check=True)
    assert [m["X-Audit-Tamper"] for m in mails] == ["audit-disabled"], subjects(mails)
    wait_for(lambda: uptime() > until + 6, 40, "the window's lease to run out")
    before = len(tamper_mails())
    subprocess.run(["auditctl", "-D"], stdout=subprocess.DEVNULL, check=True)
    try:
        mails = wait_for(lambda: tamper_mails()[before:], 10, "a tamper mail for auditctl -D")
        assert [m["X-Audit-Tamper"] for m in mails] == ["rules-removed"], subjects(mails)
    finally:
        with no_tamper_mail():  # the deployed rules again: nothing is removed, nothing lost
            subprocess.run(["augenrules", "--load"], stdout=subprocess.DEVNULL, check=True)
    assert {"amr-exec-w", "amr-hostname", HOST_KEY} <= loaded_keys()


def test_absent_removes_everything_and_keeps_the_host_rules(host):
    # The plugin decides at its end, on auditd's SIGTERM, by the marker.
    with no_tamper_mail(stopped=plugin_pids()):
        run = playbook("absent.yml")
    assert run.rc == 0, run
    record("state absent", run)
    for path in ROLE_PATHS:
        assert not os.path.exists(path), path
    assert plugin_pids() == []
    keys = loaded_keys()
    assert not {k for k in keys if k.startswith("amr-") and k != HOST_KEY}, keys
    assert HOST_KEY in keys
    assert auditd_pid() > 0
    again = playbook("absent.yml")
    assert again.rc == 0 and again.changed == 0, again


def log_mark():
    """Where auditd's log ends now: (inode, size)."""
    st = os.stat(AUDIT_LOG)
    return st.st_ino, st.st_size


def reloaded_since(mark):
    """Whether auditd logged a DAEMON_CONFIG record (it does on each SIGHUP) after mark."""
    with open(AUDIT_LOG, "rb") as log:
        if os.fstat(log.fileno()).st_ino != mark[0]:
            pytest.fail(f"{AUDIT_LOG} was rotated during the test; run it again")
        log.seek(mark[1])
        return b"type=DAEMON_CONFIG" in log.read()


def test_unmanaged_auditd_writes_the_files_and_leaves_auditd_alone(host):
    """audit_mail_alert_manage_auditd false (containers): files yes; no restart, reload, load."""
    assert plugin_pids() == [] and not os.path.exists(RULES), "the previous test left the role's work"
    pid, rules, mark = auditd_pid(), loaded_rules(), log_mark()

    run = playbook("converge.yml", "-e", UNMANAGED)
    assert run.rc == 0, run
    assert UNMANAGED_MSG in run.output, run
    for path, mode in [(PLUGIN, 0o750), (CONFIG, 0o640), (PLUGIN_CONF, 0o640),
                       (RULES, 0o640), (SPOOL, 0o700)]:
        st = os.stat(path)
        assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (mode, 0, 0), path
    assert "key=amr-exec-w" in Path(RULES).read_text()
    assert not [f for f in os.listdir("/etc/audit/rules.d") if f.startswith("60-audit-mail-alert.rules.")], \
        "a backup of the rules file was left in rules.d"
    assert auditd_pid() == pid, "auditd was restarted"
    assert not os.path.exists(WATCHDOG_CRON), "auditd is not the role's: no watchdog"
    assert loaded_rules() == rules, "the kernel's rules changed"
    assert plugin_pids() == [], "auditd started the plugin"
    assert not reloaded_since(mark), "auditd was reloaded (DAEMON_CONFIG record)"

    again = playbook("converge.yml", "-e", UNMANAGED)
    assert again.rc == 0 and again.changed == 0, f"changed: {again.changed_tasks}\n{again}"
    before = snapshot()
    check = playbook("converge.yml", "-e", UNMANAGED, "--check")
    assert check.rc == 0 and check.changed == 0, f"changed: {check.changed_tasks}\n{check}"
    assert snapshot() == before

    removed = playbook("absent.yml", "-e", UNMANAGED)
    assert removed.rc == 0, removed
    for path in ROLE_PATHS:
        assert not os.path.exists(path), path
    assert auditd_pid() == pid, "auditd was restarted"
    assert loaded_rules() == rules, "the kernel's rules changed"
    assert not reloaded_since(mark), "auditd was reloaded (DAEMON_CONFIG record)"

    # The managed removal finds nothing left to do.
    clean = playbook("absent.yml")
    assert clean.rc == 0 and clean.changed == 0, clean
    assert auditd_pid() == pid and loaded_rules() == rules


def one_file_collection(root: Path) -> Path:
    """The collection as it was when its plugin was one file (ONE_FILE_RELEASE), laid out
    for ANSIBLE_COLLECTIONS_PATH under root; skipped where the checkout has no history."""
    found = subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{ONE_FILE_RELEASE}^{{commit}}"],
                           capture_output=True, check=False)
    if found.returncode != 0:
        pytest.skip(f"commit {ONE_FILE_RELEASE} (the one-file plugin) is not in this checkout's history")
    tree = root / "ansible_collections" / "linux_audit" / "mail_alert"
    tree.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ONE_FILE_RELEASE],
                             stdout=subprocess.PIPE, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    assert not (tree / "files" / "mailalert").exists()
    return root


def test_a_host_with_the_one_file_plugin_is_upgraded_in_place(host, tmp_path):
    """A host that the role set up while the plugin was one file (/sbin/audisp-mailalert
    held all of it): one run of today's role installs the package and the new program,
    leaves nothing of the old layout behind, keeps the spool (an alert queued there is
    delivered by the new plugin); the chain alerts. The old plugin mails the restart (and a
    rules load): it cannot read the new maintenance marker."""
    collection = one_file_collection(tmp_path)
    clean = playbook("absent.yml")
    assert clean.rc == 0, clean
    old = playbook("converge.yml", collections=collection)
    assert old.rc == 0, old
    assert not os.path.exists(LIB)
    one_file = collection / "ansible_collections/linux_audit/mail_alert/files/audisp_mailalert.py"
    assert Path(PLUGIN).read_bytes() == one_file.read_bytes()
    token = f"upgrade-{os.getpid()}-{int(time.time())}"
    queued = Path(SPOOL) / "queue" / f"{int(time.time() * 1e6):017d}-1-000001.eml"
    queued.write_text(f"From: root\nTo: root\nSubject: {token}\nX-Audit-Key: {token}\n\n"
                      "accepted by the one-file plugin, not yet delivered\n")
    queued.chmod(0o600)

    # The one-file plugin reads the old marker (START END) only: the new role's window is
    # no window to it, and it mails auditd's restart, once (docs/role.md, "Upgrading").
    before = len(tamper_mails())
    stopped = plugin_pids()
    run = playbook("converge.yml")
    assert run.rc == 0, run
    record("upgrade from the one-file plugin", run)
    for pid in stopped:
        wait_for(lambda pid=pid: not os.path.exists(f"/proc/{pid}"), 30, f"plugin {pid} to exit")
    wait_for(lambda: "auditd-stopped" in [m["X-Audit-Tamper"] for m in tamper_mails()[before:]], 60,
             "the old plugin's mail of the restart")
    # ... and of the rules load, if the run reloaded rules while it still ran; nothing else.
    kinds = {m["X-Audit-Tamper"] for m in tamper_mails()[before:]}
    assert kinds <= {"auditd-stopped", "rules-removed"}, subjects(tamper_mails()[before:])
    assert Path(PLUGIN).read_bytes() == INSTALLED_PROGRAM
    assert package_problems() == []
    wait_for(lambda: alerts(token), 60, "the alert queued before the upgrade in the mailbox")
    assert not queued.exists()
    wait_for_alert("amr-exec-w", ["/usr/bin/w"])
    again = playbook("converge.yml")
    assert again.rc == 0 and again.changed == 0, f"changed: {again.changed_tasks}\n{again}"
