"""mailalert.audit_netlink against this machine's kernel: the rules it reads, rendered by
kernel_state, are what `auditctl -l` prints, line by line; the status is what `auditctl -s`
prints; foreign and stale messages are skipped, the caps and the timeout hold, a refusal is an
OSError; and losses() sees the attacks of issue #21 on the real kernel.

Every test that loads rules or changes settings holds the host lock (host_auditd) and puts
back the rules and settings it found."""

import errno
import json
import os
import socket
import struct
import subprocess
from pathlib import Path

import pytest
from conftest import FILES
from mailalert import audit_netlink, kernel_state

SETTINGS = ("enabled", "failure", "rate_limit", "backlog_limit", "backlog_wait_time")


def auditctl(*args: str) -> str:
    """auditctl's output; its bytes that are not UTF-8 as surrogates, as Rule keeps them."""
    done = subprocess.run(["auditctl", *args], check=True, capture_output=True)
    return done.stdout.decode("utf-8", "surrogateescape")


def auditctl_status() -> dict[str, int]:
    """`auditctl -s` as numbers (its last line, loginuid_immutable, is left out)."""
    status = {}
    for line in auditctl("-s").splitlines():
        name, _space, value = line.partition(" ")
        if value.isdigit():
            status[name] = int(value)
    return status


def auditctl_rules() -> list[str]:
    lines = auditctl("-l").splitlines()
    return [] if lines == ["No rules"] else lines


def rendered(reader: audit_netlink.AuditNetlink) -> list[str]:
    return [kernel_state.Rule.from_data(data).text() for data in reader.rules()]


@pytest.fixture
def kernel_audit(host_auditd, tmp_path):
    """The host lock held and no rules loaded; afterwards the rules and the settings that
    were there are put back."""
    saved_rules = auditctl_rules()
    saved = auditctl_status()
    if saved["enabled"] == 2:
        pytest.skip("the audit configuration is locked (auditctl -e 2)")
    try:
        auditctl("-D")
        yield
    finally:
        auditctl("-D")
        if saved_rules:
            path = tmp_path / "saved.rules"
            path.write_bytes("\n".join(saved_rules).encode("utf-8", "surrogateescape") + b"\n")
            auditctl("-R", str(path))
        auditctl("-f", str(saved["failure"]), "-r", str(saved["rate_limit"]),
                 "-b", str(saved["backlog_limit"]))
        if "backlog_wait_time" in saved:
            auditctl("--backlog_wait_time", str(saved["backlog_wait_time"]))
        auditctl("-e", str(saved["enabled"]))


def rule_set(directory: Path) -> list[list[str]]:
    """Rules of every shape auditctl -l prints: watches (file, dir), syscall rules with
    fields and operators, several keys, exe, exclude, never, user, task and filesystem lists,
    field comparisons, arguments, exit codes, a path that is not UTF-8."""
    odd = os.fsdecode(bytes(directory / "caf") + b"\xe9")
    return [
        ["-w", "/etc/passwd", "-p", "wa", "-k", "k1"],
        ["-w", str(directory) + "/", "-p", "rwxa", "-k", "kdir"],
        ["-w", odd, "-p", "w", "-k", "k-odd"],
        ["-a", "always,exit", "-F", "arch=b64", "-S", "execve", "-F", "auid>=1000",
         "-F", "auid!=unset", "-k", "k2"],
        ["-a", "always,exit", "-F", "arch=b32", "-S", "open,openat", "-F", "exit=-EACCES",
         "-k", "k3"],
        ["-a", "never,exit", "-F", "arch=b64", "-S", "all", "-F", "auid=4294967294"],
        ["-a", "always,exit", "-F", "arch=b64", "-S", "openat", "-F", "exe=/usr/bin/cat",
         "-F", "key=k4", "-F", "key=k5"],
        ["-a", "always,exit", "-F", "path=/etc/shadow", "-F", "perm=r", "-F", "uid!=0",
         "-k", "k6"],
        ["-a", "always,exit", "-F", "dir=" + str(directory), "-F", "perm=w", "-k", "k7"],
        ["-a", "always,exclude", "-F", "msgtype=CWD"],
        ["-a", "always,exit", "-F", "arch=b64", "-S", "kill", "-F", "a1=9", "-F", "success=0"],
        ["-a", "always,exit", "-F", "arch=b64", "-S", "open", "-F", "a2&64"],
        ["-a", "always,user", "-F", "uid=0"],
        ["-a", "always,task", "-F", "uid=54321"],
        ["-a", "never,filesystem", "-F", "fstype=tracefs"],
        ["-a", "always,exit", "-F", "arch=b64", "-S", "unlink,rename,mount", "-C",
         "uid!=obj_uid", "-F", "sessionid!=unset"],
        ["-a", "always,exit", "-F", "arch=b64", "-S", "all", "-F", "inode=12345",
         "-F", "devmajor=8", "-F", "devminor<=3", "-F", "pid>1", "-F", "ppid=1"],
        ["-a", "always,exit", "-F", "arch=b64", "-S", "openat", "-F", "obj_uid=0",
         "-F", "obj_gid<10", "-F", "pers=0", "-F", "filetype=file", "-k", "k8"],
        ["-a", "always,exit", "-F", "arch=b64", "-S", "chmod", "-F", "subj_type=unconfined_t"],
    ]


def load(rules: list[list[str]]) -> None:
    for rule in rules:
        auditctl(*rule)


def test_rules_render_as_auditctl_lists_them(kernel_audit, tmp_path):
    load(rule_set(tmp_path))
    reader = audit_netlink.AuditNetlink()
    expected = auditctl_rules()
    assert len(expected) == len(rule_set(tmp_path))
    assert rendered(reader) == expected
    # Each reply message: the fixed struct (1040 bytes) and the rule's strings.
    assert all(size >= audit_netlink.RULE_HEAD.size for size in reader.last_reply_sizes)


def test_exe_with_another_operator(kernel_audit):
    """The one difference: auditctl 3.0.9 prints `exe=` whatever the operator (later versions
    print it); the rule text shows the operator the kernel holds."""
    auditctl("-a", "always,exit", "-F", "arch=b64", "-S", "openat", "-F", "exe!=/usr/bin/cat")
    (ours,) = rendered(audit_netlink.AuditNetlink())
    assert ours == "-a always,exit -F arch=b64 -S openat -F exe!=/usr/bin/cat"
    assert auditctl_rules()[0] in (ours, ours.replace("exe!=", "exe="))


def test_rules_survive_json(kernel_audit, tmp_path):
    load(rule_set(tmp_path))
    reader = audit_netlink.AuditNetlink()
    state = kernel_state.KernelState.from_kernel(reader.status(), reader.rules())
    again = kernel_state.KernelState.from_json(json.loads(json.dumps(state.to_json())))
    assert again == state
    assert [rule.text() for rule in again.rules] == auditctl_rules()


def test_no_rules(kernel_audit):
    assert audit_netlink.AuditNetlink().rules() == []


def test_status_is_what_auditctl_shows(kernel_audit):
    auditctl("-r", "12345", "-b", "8321", "-f", "0", "--backlog_wait_time", "14321")
    reader = audit_netlink.AuditNetlink()
    first = reader.status()
    shown = auditctl_status()
    second = reader.status()
    for name in SETTINGS + ("pid",):
        assert first[name] == shown[name] == second[name], name
    assert (first["rate_limit"], first["backlog_limit"], first["failure"],
            first["backlog_wait_time"]) == (12345, 8321, 0, 14321)
    assert first["lost"] <= shown["lost"] <= second["lost"]
    # This kernel returns the whole struct: 11 fields of 4 bytes.
    assert reader.last_reply_sizes == [4 * len(audit_netlink.STATUS_FIELDS)]
    assert set(first) == set(audit_netlink.STATUS_FIELDS)
    assert first["feature_bitmap"] & 0x3 == 0x3  # backlog limit and wait time


def test_messages_from_other_senders_are_skipped(kernel_audit):
    auditctl("-r", "4321")
    reader = audit_netlink.AuditNetlink()
    reader.status()  # opens the socket
    port = reader.sock.getsockname()[0]
    fake = struct.pack("=11I", 0, 77, 0, 0, 1, 1, 0, 0, 0, 0, 0)
    header = audit_netlink.NLMSGHDR.pack(16 + len(fake), audit_netlink.AUDIT_GET, 0,
                                         reader.seq + 1, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, audit_netlink.NETLINK_AUDIT) as other:
        other.sendto(header + fake, (port, 0))
    status = reader.status()
    assert (status["enabled"], status["rate_limit"]) != (77, 1)
    assert status["rate_limit"] == 4321


def test_a_stale_reply_is_skipped(kernel_audit):
    auditctl("-r", "1111")
    reader = audit_netlink.AuditNetlink()
    reader.status()
    # A request of another sequence number, answered while the rate limit was 1111 ...
    reader.sock.send(audit_netlink.NLMSGHDR.pack(16, audit_netlink.AUDIT_GET,
                                                 audit_netlink.NLM_F_REQUEST,
                                                 reader.seq + 1000, 0))
    auditctl("-r", "2222")
    # ... comes first; the answer to this one is the one that counts.
    assert reader.status()["rate_limit"] == 2222


def test_caps_on_rules_and_bytes(kernel_audit, tmp_path):
    load(rule_set(tmp_path))
    reader = audit_netlink.AuditNetlink(max_rules=3)
    with pytest.raises(OSError) as raised:
        reader.rules()
    assert raised.value.errno == errno.E2BIG
    assert reader.sock is None  # closed: the rest of that reply cannot reach a later read
    reader.max_rules = 1000
    assert rendered(reader) == auditctl_rules()
    small = audit_netlink.AuditNetlink(max_bytes=5000)
    with pytest.raises(OSError) as raised:
        small.rules()
    assert raised.value.errno == errno.E2BIG


def test_no_reply_times_out():
    if os.geteuid() != 0:
        pytest.skip("needs root for the audit netlink socket")
    reader = audit_netlink.AuditNetlink(timeout=0.2)
    reader.status()
    with pytest.raises(OSError):  # socket.timeout, TimeoutError: OSErrors
        next(reader._messages(reader.seq + 7))  # a sequence number nothing answers


def test_a_refusal_is_an_oserror():
    """Without CAP_AUDIT_CONTROL the kernel answers NLMSG_ERROR EPERM."""
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to another user")
    program = (FILES / "mailalert" / "audit_netlink.py").read_text() + (
        "\nfor ask in (AuditNetlink().status, AuditNetlink().rules):\n"
        "    try:\n        ask()\n    except OSError as error:\n        print(error.errno)\n")
    done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           "--inh-caps=-all", "/usr/bin/python3", "-"], input=program.encode(),
                          capture_output=True, check=True)
    assert done.stdout.decode().split() == [str(errno.EPERM)] * 2, done.stderr.decode()


DEPLOYED_SETTINGS = ["-f", "1", "-r", "0", "-b", "8192", "--backlog_wait_time", "60000"]
# The blindings of issue #21, each with its undo and the finding it must give.
ATTACKS = [
    (["-a", "exclude,always", "-F", "msgtype=CONFIG_CHANGE"],
     ["-d", "exclude,always", "-F", "msgtype=CONFIG_CHANGE"], "rule-excluding"),
    (["-a", "exclude,always", "-F", "msgtype=SYSCALL"],
     ["-d", "exclude,always", "-F", "msgtype=SYSCALL"], "rule-excluding"),
    (["-A", "exit,never", "-F", "arch=b64", "-S", "all", "-F", "auid=0"],
     ["-d", "exit,never", "-F", "arch=b64", "-S", "all", "-F", "auid=0"], "rule-excluding"),
    (["-W", "/etc/passwd", "-p", "wa", "-k", "k1"],
     ["-w", "/etc/passwd", "-p", "wa", "-k", "k1"], "rules-removed"),
    (["-r", "100"], ["-r", "0"], "audit-setting"),
    (["-b", "64"], ["-b", "8192"], "audit-setting"),
    (["-f", "0"], ["-f", "1"], "audit-setting"),
    (["--backlog_wait_time", "0"], ["--backlog_wait_time", "60000"], "audit-setting"),
    (["-e", "0"], ["-e", "1"], "audit-disabled"),
]


def test_losses_see_the_blindings_on_this_kernel(kernel_audit):
    load([["-w", "/etc/passwd", "-p", "wa", "-k", "k1"],
          ["-a", "always,exit", "-F", "arch=b64", "-S", "execve", "-F", "auid>=1000",
           "-F", "auid!=unset", "-k", "k2"]])
    auditctl(*DEPLOYED_SETTINGS)
    auditctl("-e", "1")
    reader = audit_netlink.AuditNetlink()

    def read() -> kernel_state.KernelState:
        return kernel_state.KernelState.from_kernel(reader.status(), reader.rules())

    deployed = read()
    for attack, undo, kind in ATTACKS:
        auditctl(*attack)
        try:
            now = read()
            listed = auditctl_rules()
        finally:
            auditctl(*undo)
        found = kernel_state.losses(deployed, now, ["k1", "k2"])
        assert [f.kind for f in found] == [kind], attack
        assert set(found[0].after) <= set(listed)
        assert set(found[0].before) <= {rule.text() for rule in deployed.rules}
        assert kernel_state.losses(deployed, read(), ["k1", "k2"]) == [], undo


def test_decoding_refuses_short_messages():
    with pytest.raises(ValueError):
        audit_netlink.decode_rule(bytes(audit_netlink.RULE_HEAD.size - 1))
    with pytest.raises(ValueError):  # says it has 10 bytes of strings, has none
        audit_netlink.decode_rule(bytes(audit_netlink.RULE_HEAD.size - 4) + struct.pack("=I", 10))
    with pytest.raises(ValueError):
        audit_netlink.decode_status(bytes(28))
    assert list(audit_netlink.decode_status(bytes(32))) == list(audit_netlink.STATUS_FIELDS[:8])
    header = audit_netlink.NLMSGHDR.pack(40, 1013, 0, 1, 0)  # longer than the datagram
    with pytest.raises(ValueError):
        list(audit_netlink.AuditNetlink._split(memoryview(header + bytes(8))))
