"""What the kernel's audit system enforces, as data, and what of it was lost (issue #21).

`Rule` is one loaded rule (decoded from audit_netlink's RuleData), `KernelState` the status and
the rules at one moment (JSON both ways: the deployed state is kept on disk), `losses()` the
findings between the deployed state and now, `counter_losses()` the lost counter's movement
between two reads (state_watch.StateWatch decides which to mail, once per change).
`Rule.text()` prints a rule as `auditctl -l` (audit 3.0.9 and later) does, for the mail.

No I/O. Syscall, message type and errno names come from auparse (libaudit's tables, through a
synthetic record); without auparse they are printed as numbers. Constants and layouts:
include/uapi/linux/audit.h and kernel/auditfilter.c (audit_krule_to_data) of Linux.
"""

# Python 3.6 (RHEL 8) has no list[str] or X | None in annotations: keep typing's names.
# ruff: noqa: UP006, UP035, UP045

import errno
import os
from collections import Counter, namedtuple
from functools import lru_cache
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

# Filter lists (rule flags without AUDIT_FILTER_PREPEND) and actions.
FILTER_USER, FILTER_TASK, FILTER_EXIT, FILTER_EXCLUDE, FILTER_FS, FILTER_URING = 0, 1, 4, 5, 6, 7
FILTER_PREPEND = 0x10
LIST_NAMES = {0: "user", 1: "task", 2: "entry", 3: "watch", 4: "exit", 5: "exclude",
              6: "filesystem", 7: "io_uring"}
NEVER, POSSIBLE, ALWAYS = 0, 1, 2
ACTION_NAMES = {NEVER: "never", POSSIBLE: "possible", ALWAYS: "always"}

# Fields: the names auditctl uses (libaudit's field table).
ARCH, MSGTYPE, LOGINUID, FSTYPE = 11, 12, 9, 26
INODE, EXIT, WATCH, PERM, DIR, FIELD_COMPARE, EXE = 102, 103, 105, 106, 107, 111, 112
ARG0, ARG3, FILTERKEY = 200, 203, 210
FIELD_NAMES = {
    0: "pid", 1: "uid", 2: "euid", 3: "suid", 4: "fsuid", 5: "gid", 6: "egid", 7: "sgid",
    8: "fsgid", 9: "auid", 10: "pers", 11: "arch", 12: "msgtype", 13: "subj_user",
    14: "subj_role", 15: "subj_type", 16: "subj_sen", 17: "subj_clr", 18: "ppid",
    19: "obj_user", 20: "obj_role", 21: "obj_type", 22: "obj_lev_low", 23: "obj_lev_high",
    25: "sessionid", 26: "fstype", 100: "devmajor", 101: "devminor", 102: "inode",
    103: "exit", 104: "success", 105: "path", 106: "perm", 107: "dir", 108: "filetype",
    109: "obj_uid", 110: "obj_gid", 111: "field_compare", 112: "exe", 113: "saddr_fam",
    200: "a0", 201: "a1", 202: "a2", 203: "a3", 210: "key"}
# The fields whose value is a string in the rule's buffer (audit_krule_to_data).
STRING_FIELDS = frozenset([13, 14, 15, 16, 17, 19, 20, 21, 22, 23, WATCH, DIR, FILTERKEY, EXE])
KEY_SEPARATOR = "\x01"  # several keys on one rule (-k a -k b) share one key field

AUDIT_OPERATORS = 0x78000000
OPERATORS = {0x40000000: "=", 0x30000000: "!=", 0x20000000: ">", 0x60000000: ">=",
             0x10000000: "<", 0x50000000: "<=", 0x08000000: "&", 0x48000000: "&="}
COMPARE_NAMES = {
    1: ("uid", "obj_uid"), 2: ("gid", "obj_gid"), 3: ("euid", "obj_uid"),
    4: ("egid", "obj_gid"), 5: ("auid", "obj_uid"), 6: ("suid", "obj_uid"),
    7: ("sgid", "obj_gid"), 8: ("fsuid", "obj_uid"), 9: ("fsgid", "obj_gid"),
    10: ("uid", "auid"), 11: ("uid", "euid"), 12: ("uid", "fsuid"), 13: ("uid", "suid"),
    14: ("auid", "fsuid"), 15: ("auid", "suid"), 16: ("auid", "euid"), 17: ("euid", "suid"),
    18: ("euid", "fsuid"), 19: ("suid", "fsuid"), 20: ("gid", "egid"), 21: ("gid", "fsgid"),
    22: ("gid", "sgid"), 23: ("egid", "fsgid"), 24: ("egid", "sgid"), 25: ("sgid", "fsgid")}
FSTYPE_NAMES = {0x74726163: "tracefs", 0x64626720: "debugfs", 0x27E0EB: "cgroup",
                0x63677270: "cgroup2"}
# The architectures libaudit knows (auditctl prints b32/b64 for them, else hex), and the
# host's, for rules without an arch field (auditctl takes the machine it runs on).
KNOWN_ARCHES = frozenset([0x40000003, 0xC000003E, 0x80000015, 0xC0000015, 0x14, 0x80000016,
                          0x16, 0x40000028, 0xC00000B7, 0x400000F3, 0xC00000F3])
MACHINE_ARCHES = {"x86_64": 0xC000003E, "i386": 0x40000003, "i686": 0x40000003,
                  "aarch64": 0xC00000B7, "ppc64le": 0xC0000015, "ppc64": 0x80000015,
                  "s390x": 0x80000016, "armv7l": 0x40000028, "riscv64": 0xC00000F3}
BITMASK_WORDS = 64
ALL_WORDS = BITMASK_WORDS - 1  # auditctl's "-S all": every word but the last set

Field = namedtuple("Field", "field op value")  # number, operator symbol, int or str
# before/after: rule texts; keys: the watched keys of the rules removed or changed
Finding = namedtuple("Finding", "kind summary before after keys")
Finding.__new__.__defaults__ = ((),)  # namedtuple's defaults= needs Python 3.7


def signed(value: int) -> int:
    return value - (1 << 32) if value >= 1 << 31 else value


class Names:
    """Numbers to the names auditctl prints, from auparse: it interprets a synthetic record
    with libaudit's tables. Without auparse (or for a number it does not know): None."""

    def __init__(self, host_arch: Optional[int] = None) -> None:
        self.host_arch = host_arch if host_arch is not None else MACHINE_ARCHES.get(
            os.uname().machine, 0)
        self.cache: Dict[Tuple[str, int, int], Optional[str]] = {}
        try:
            import auparse
        except ImportError:
            auparse = None
        self.auparse = auparse

    def _interpret(self, record: str, field: str) -> Optional[str]:
        if self.auparse is None:
            return None
        try:
            parser = self.auparse.AuParser(self.auparse.AUSOURCE_BUFFER, record + "\n")
            if not parser.parse_next_event():
                return None
            parser.first_record()
            if field == "type":
                return parser.get_type_name()
            return parser.interpret_field() if parser.find_field(field) else None
        except (LookupError, OSError, RuntimeError, UnicodeDecodeError):
            return None

    def _lookup(self, kind: str, arch: int, number: int) -> Optional[str]:
        key = (kind, arch, number)
        if key not in self.cache:
            self.cache[key] = self._name(kind, arch, number)
        return self.cache[key]

    def _name(self, kind: str, arch: int, number: int) -> Optional[str]:
        if kind == "syscall":
            record = f"type=SYSCALL msg=audit(1.000:1): arch={arch:x} syscall={number}"
            text = self._interpret(record, "syscall")  # "unknown-syscall(N)" when unknown
            return None if text is None or text.startswith("unknown") else text
        if kind == "msgtype":
            text = self._interpret(f"type=UNKNOWN[{number}] msg=audit(1.000:1): x=1", "type")
            return None if text is None or text.startswith("UNKNOWN") else text
        record = f"type=SYSCALL msg=audit(1.000:1): arch={arch:x} syscall=0 exit=-{number}"
        text = self._interpret(record, "exit")  # "EACCES(Permission denied)"
        return text.split("(")[0] if text and text[0] == "E" else errno.errorcode.get(number)

    def syscall(self, arch: Optional[int], number: int) -> str:
        arch = self.host_arch if arch is None else arch
        return self._lookup("syscall", arch, number) or str(number)

    def msgtype(self, number: int) -> Optional[str]:
        return self._lookup("msgtype", 0, number)

    def errno_name(self, number: int) -> Optional[str]:
        return self._lookup("errno", self.host_arch, number)


@lru_cache(maxsize=None)  # noqa: UP033 (functools.cache: Python 3.9)
def default_names() -> Names:
    return Names()


class Rule:
    """One loaded rule: its filter list, action, syscall mask (64 words) and fields, the
    string fields decoded (path, dir, key, exe, LSM labels; bytes that are not UTF-8 kept
    as surrogates). Equal rules are the same rule to the kernel (audit_compare_rule)."""

    __slots__ = ("action", "fields", "listnr", "mask")

    def __init__(self, listnr: int, action: int, mask: Sequence[int],
                 fields: Iterable[Tuple[int, str, Any]]) -> None:
        self.listnr = listnr
        self.action = action
        self.mask = tuple(mask)
        self.fields = tuple(Field(*field) for field in fields)
        if len(self.mask) != BITMASK_WORDS:
            raise ValueError(f"a rule's syscall mask has {len(self.mask)} words, "
                             f"not {BITMASK_WORDS}")

    @classmethod
    def from_data(cls, data: Any) -> "Rule":
        """From audit_netlink's RuleData: the string fields taken from the buffer in order."""
        fields = []
        offset = 0
        for number, flags, value in data.fields:
            number &= ~AUDIT_OPERATORS
            op = OPERATORS.get(flags & AUDIT_OPERATORS, f"?{flags & AUDIT_OPERATORS:#x}")
            if number in STRING_FIELDS:
                string = data.buf[offset:offset + value]
                if len(string) != value:
                    raise ValueError(f"audit rule string of {value} bytes past its buffer")
                offset += value
                value = string.decode("utf-8", "surrogateescape")
            fields.append((number, op, value))
        return cls(data.flags & ~FILTER_PREPEND, data.action, data.mask, fields)

    def _ident(self) -> tuple:
        return (self.listnr, self.action, self.mask, self.fields)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rule) and self._ident() == other._ident()

    def __hash__(self) -> int:
        return hash(self._ident())

    def __repr__(self) -> str:
        return f"Rule({self.text()!r})"

    @property
    def keys(self) -> List[str]:
        """Its keys (-k, -F key=), in order."""
        return [key for field in self.fields if field.field == FILTERKEY
                for key in field.value.split(KEY_SEPARATOR) if key]

    @property
    def excluding(self) -> bool:
        """Whether it keeps events from being recorded: every rule on the exclude list, and
        a rule with the action never on any list."""
        return self.listnr == FILTER_EXCLUDE or self.action == NEVER

    def all_syscalls(self) -> bool:
        return all(word == 0xFFFFFFFF for word in self.mask[:ALL_WORDS])

    def syscalls(self) -> List[int]:
        return [word * 32 + bit for word, value in enumerate(self.mask) for bit in range(32)
                if value >> bit & 1]

    def is_watch(self) -> bool:
        """auditctl's test: only path, dir, perm and key fields, a perm among them, and every
        syscall. (auditctl skips the syscall test on the lists without syscalls, but the
        kernel takes a perm field on the exit list only.)"""
        numbers = {field.field for field in self.fields}
        return (PERM in numbers and not numbers - {PERM, FILTERKEY, DIR, WATCH}
                and self.all_syscalls())

    def text(self, names: Optional[Names] = None) -> str:
        """The rule as `auditctl -l` prints it (see render_field for the differences)."""
        names = names or default_names()
        watch = self.is_watch()
        out = []
        arch = None
        if not watch:
            action = ACTION_NAMES.get(self.action, str(self.action))
            out.append(f"-a {action},{LIST_NAMES.get(self.listnr, str(self.listnr))}")
            for field in self.fields:
                if field.field == ARCH:
                    arch = field.value
                    shown = ("b64" if arch & 0x80000000 else "b32") if arch in KNOWN_ARCHES \
                        else f"0x{arch:X}"
                    out.append(f" -F arch{field.op}{shown}")
            out.append(self._syscall_text(arch, names))
        out.extend(render_field(field, watch, names) for field in self.fields
                   if field.field != ARCH)
        return "".join(out)

    def _syscall_text(self, arch: Optional[int], names: Names) -> str:
        if self.listnr in (FILTER_USER, FILTER_TASK, FILTER_EXCLUDE, FILTER_FS):
            return ""
        if self.all_syscalls():
            return " -S all"
        numbers = self.syscalls()
        if not numbers:
            return ""
        if self.listnr == FILTER_URING or (arch is not None and arch not in KNOWN_ARCHES):
            return " -S " + ",".join(map(str, numbers))  # io_uring operations, unknown arch
        return " -S " + ",".join(names.syscall(arch, number) for number in numbers)

    def to_json(self) -> Dict[str, Any]:
        return {"list": self.listnr, "action": self.action,
                "mask": [[index, word] for index, word in enumerate(self.mask) if word],
                "fields": [list(field) for field in self.fields]}

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "Rule":
        """ValueError (or TypeError, KeyError) when it is not what to_json() writes."""
        mask = [0] * BITMASK_WORDS
        for index, word in data["mask"]:
            mask[_number(index, BITMASK_WORDS - 1)] = _number(word, 0xFFFFFFFF)
        fields = []
        for number, op, value in data["fields"]:
            if _number(number, 0xFFFFFFFF) in STRING_FIELDS:
                if not isinstance(value, str):
                    raise ValueError(f"field {number}: a string expected, not {value!r}")
            else:
                value = _number(value, 0xFFFFFFFF)
            fields.append((number, str(op), value))
        return cls(_number(data["list"], 0xFF), _number(data["action"], 0xFF), mask, fields)


def _number(value: Any, top: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= top:
        raise ValueError(f"{value!r} is not a number from 0 to {top}")
    return value


def render_field(field: Field, watch: bool, names: Names) -> str:
    """One field as auditctl prints it. Differences from auditctl 3.0.9: path, dir and exe
    show their operator (3.0.9 always prints "=", later versions the operator)."""
    number, op, value = field
    name = FIELD_NAMES.get(number)
    if name is None:
        return f" f{number}{op}{signed(value)}"
    if number == MSGTYPE:
        return f" -F msgtype{op}{names.msgtype(value) or signed(value)}"
    if number in (WATCH, DIR):
        return f"-w {value}" if watch else f" -F {name}{op}{value}"
    if number in STRING_FIELDS and number != FILTERKEY:
        return f" -F {name}{op}{value}"
    if number == FILTERKEY:
        form = " -k %s" if watch else " -F key=%s"
        return "".join(form % key for key in value.split(KEY_SEPARATOR) if key)
    if number == PERM:
        letters = "".join(letter for bit, letter in ((4, "r"), (2, "w"), (1, "x"), (8, "a"))
                          if value & bit)
        return (" -p %s" if watch else " -F perm=%s") % letters
    if number == INODE:
        return f" -F inode{op}{value}"
    if number == FIELD_COMPARE:
        left, right = COMPARE_NAMES.get(value, ("", ""))
        return f" -C {left}{op}{right}" if left else ""
    if ARG0 <= number <= ARG3:
        return f" -F {name}{op}0x{value:X}"
    if number == EXIT and signed(value) < 0 and names.errno_name(-signed(value)):
        return f" -F exit{op}-{names.errno_name(-signed(value))}"
    if number == FSTYPE and value in FSTYPE_NAMES:
        return f" -F fstype{op}{FSTYPE_NAMES[value]}"
    return f" -F {name}{op}{signed(value)}"


class KernelState:
    """The kernel's audit status (audit_netlink's dict: the fields of struct audit_status
    that the kernel returned) and its rules, in the kernel's order, at one moment."""

    __slots__ = ("rules", "status")

    def __init__(self, status: Dict[str, int], rules: Iterable[Rule]) -> None:
        self.status = dict(status)
        self.rules = list(rules)

    @classmethod
    def from_kernel(cls, status: Dict[str, int], rule_data: Iterable[Any]) -> "KernelState":
        return cls(status, [Rule.from_data(data) for data in rule_data])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KernelState) and (self.status, self.rules) == (
            other.status, other.rules)

    def to_json(self) -> Dict[str, Any]:
        """A new document: changing it leaves this state as it is."""
        return {"status": dict(self.status), "rules": [rule.to_json() for rule in self.rules]}

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "KernelState":
        """ValueError (or TypeError, KeyError) when it is not what to_json() writes."""
        status = {str(name): _number(value, 0xFFFFFFFF) for name, value in data["status"].items()}
        return cls(status, [Rule.from_json(rule) for rule in data["rules"]])


def _minus(rules: List[Rule], others: List[Rule]) -> List[Rule]:
    """The rules that others lack (as a multiset), in their order."""
    left = Counter(others)
    missing = []
    for rule in rules:
        if left[rule]:
            left[rule] -= 1
        else:
            missing.append(rule)
    return missing


def _texts(rules: Iterable[Rule], names: Names) -> Tuple[str, ...]:
    return tuple(rule.text(names) for rule in rules)


def _key_list(rules: List[Rule], watched: Set[str]) -> str:
    return ", ".join(sorted(watched.intersection(key for rule in rules for key in rule.keys)))


def _key_losses(deployed: List[Rule], now: List[Rule], watched: Set[str],
                names: Names) -> List[Finding]:
    """rules-removed and rule-changed: deployed rules with a watched key that the kernel no
    longer holds; changed when a rule it holds now (and did not) carries one of the keys."""
    gone = [rule for rule in _minus(deployed, now) if watched.intersection(rule.keys)]
    added = _minus(now, deployed)
    removed: List[Rule] = []
    changed: List[Rule] = []
    replacements: List[Rule] = []
    for rule in gone:
        keys = watched.intersection(rule.keys)
        successors = [other for other in added if keys.intersection(other.keys)]
        (changed if successors else removed).append(rule)
        replacements.extend(other for other in successors if other not in replacements)
    found = []
    if removed:
        summary = f"{len(removed)} rule(s) removed, keys {_key_list(removed, watched)}"
        found.append(Finding("rules-removed", summary, _texts(removed, names), (),
                             tuple(_key_list(removed, watched).split(", "))))
    if changed:
        summary = f"{len(changed)} rule(s) changed, keys {_key_list(changed, watched)}"
        found.append(Finding("rule-changed", summary, _texts(changed, names),
                             _texts(replacements, names), tuple(_key_list(changed, watched).split(", "))))
    return found


def _shadowed(rules: List[Rule], never: Rule) -> Set[Rule]:
    """The rules after a never rule on its list: the ones it can keep from matching."""
    after = rules[rules.index(never) + 1:]
    return {rule for rule in after if rule.listnr == never.listnr and not rule.excluding}


def _excluding_losses(deployed: List[Rule], now: List[Rule], names: Names) -> List[Finding]:
    """rule-excluding: rules that keep events from being recorded (exclude list, never)
    that the deployed rules lack, or a deployed never rule now ahead of deployed rules
    it followed (deleted and prepended again: -A)."""
    new = [rule for rule in _minus(now, deployed) if rule.excluding]
    moved = []
    kept = set(deployed)
    for rule in now:
        if rule.action == NEVER and rule in kept and rule not in new:
            ahead = (_shadowed(now, rule) & kept) - _shadowed(deployed, rule)
            if ahead:
                moved.append(rule)
    if not new and not moved:
        return []
    parts = [f"{len(new)} new"] if new else []
    parts += [f"{len(moved)} moved ahead of rules they followed"] if moved else []
    before = _texts([rule for rule in deployed if rule in moved], names)
    return [Finding("rule-excluding", "rule(s) keeping events from being recorded: "
                    + ", ".join(parts), before, _texts(new + moved, names))]


def _setting_losses(before: Dict[str, int], after: Dict[str, int]) -> List[Finding]:
    """audit-disabled and audit-setting: auditing switched off; the failure mode, the backlog
    limit or wait time lowered; a rate limit set or lowered. Fields either lacks are passed."""
    found = []
    if before.get("enabled", 0) != 0 and after.get("enabled") == 0:
        summary = f"auditing disabled (enabled {before['enabled']} -> 0)"
        found.append(Finding("audit-disabled", summary, (), ()))
    for name in ("failure", "rate_limit", "backlog_limit", "backlog_wait_time"):
        if name not in before or name not in after:
            continue
        old, new = before[name], after[name]
        if name == "rate_limit":
            weaker = new != 0 and (old == 0 or new < old)  # 0: no limit
        else:
            weaker = new < old
        if weaker:
            found.append(Finding("audit-setting", f"{name} {old} -> {new}", (), ()))
    return found


def counter_losses(before: Dict[str, int], after: Dict[str, int]) -> List[Finding]:
    """events-lost when the kernel's lost counter went up between two reads of the status,
    lost-reset when it went down (auditctl --reset-lost)."""
    if "lost" not in before or "lost" not in after or before["lost"] == after["lost"]:
        return []
    old, new = before["lost"], after["lost"]
    if new > old:
        return [Finding("events-lost", f"the kernel lost {new - old} events (lost counter {old} -> {new})",
                        (), ())]
    return [Finding("lost-reset", f"lost counter reset ({old} -> {new}): the losses it counted are "
                    "no longer seen", (), ())]


def losses(deployed: KernelState, now: KernelState, watched_keys: Iterable[str],
           names: Optional[Names] = None) -> List[Finding]:
    """Every loss of coverage from the deployed state to now, one finding per kind (per
    setting for audit-setting). Widening (rules added that record more, limits raised,
    excluding rules removed) is none. The lost counter is compared between two reads
    (counter_losses), not with the deployed state."""
    names = names or default_names()
    return (_key_losses(deployed.rules, now.rules, set(watched_keys), names)
            + _excluding_losses(deployed.rules, now.rules, names)
            + _setting_losses(deployed.status, now.status))
