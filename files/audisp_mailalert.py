#!/usr/bin/python3
"""audisp-mailalert: an auditd plugin that mails an alert when an audit event carries a watched key.

auditd starts it with the audit stream on stdin (plugins.d `format = string`) and an empty
environment. The main thread keeps stdin drained and feeds auparse; a cheap bytes check of
each chunk for the configured `key=` values picks the few events worth normalizing. Accepted
alerts are written to a spool directory first, then a worker thread delivers them (sendmail
or SMTP) with timeouts and retries, so a slow mail system never stalls auditd and nothing
accepted is lost. A per-rule rate limit turns floods into one digest per window.

Standard library and auparse only; runs on Python 3.6 and later (RHEL 8). See docs/plugin.md.
"""

# Python 3.6 (RHEL 8) has no list[str] or X | None in annotations: keep typing's names.
# ruff: noqa: UP006, UP035, UP045

# auditd sends SIGHUP to its plugins when it reloads, maybe while this one is still
# importing, and the default action of HUP (and TERM) is death. So they are held back from
# the first line on, until Plugin.run starts the SignalWatcher: a HUP then means "load the
# config", which start-up does anyway. _signal is the C module under `signal`, which would
# cost tens of milliseconds of imports (enum) first.
import _signal

HELD_SIGNALS = {_signal.SIGHUP, _signal.SIGTERM, _signal.SIGINT}
if __name__ == "__main__":
    _signal.pthread_sigmask(_signal.SIG_BLOCK, HELD_SIGNALS)

import argparse
import configparser
import email.policy
import email.utils
import errno
import json
import os
import pwd
import queue
import re
import select
import signal
import smtplib
import socket
import ssl
import stat
import struct
import subprocess
import sys
import syslog
import threading
import time
import unicodedata
from bisect import bisect_left
from collections import Counter, OrderedDict
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from typing import List, Optional, Tuple

try:
    import auparse
except ImportError:  # reported in main(): --help and config checks still work without it
    auparse = None

PROG = "audisp-mailalert"
DEFAULT_CONFIG = "/etc/audit/audisp-mailalert.conf"
EXIT_USAGE = 2

TICK = 0.5  # seconds between timer duties (event aging, window ends, status file)
EOE_TIMEOUT = 1  # seconds after which auparse completes an event that got no EOE record
READ_SIZE = 65536
MAX_LINE = 65536  # bytes of one record line; the kernel writes at most about 9 KB
MAX_CANDIDATES = 10000  # serials of events whose key looked right, waiting for auparse
MAX_DIGEST_GROUPS = 1000  # distinct subject/action/object groups kept per digest
STATUS_INTERVAL = 1.0  # seconds between two writes of status.json
QUEUE_SIZE = 1000  # names handed to the delivery worker; beyond that it re-scans the spool
SHUTDOWN_DELIVERY = 10  # seconds (at least [mail] timeout) to deliver the queue at exit
MAX_MESSAGE_BYTES = 4 << 20  # a queue file larger than any alert or digest can be
SPOOL_MAX_FILES = 10000  # alerts waiting in queue/ (an MTA down for long)...
SPOOL_MAX_BYTES = 256 << 20  # ...and their bytes; beyond either, an alert is held in memory
UNSPOOLED_MAX = 1000  # alerts held in memory when the spool cannot take them...
UNSPOOLED_MAX_BYTES = 8 << 20  # ...and their bytes; beyond either, an alert is dropped

FIELD_MAX = 200  # characters of one value in the summary
SUBJECT_PART_MAX = 60  # characters of one value in the Subject header
RECORD_MAX = 2000  # characters of one raw record in the body
RECORDS_MAX = 50  # raw records listed in the body
BODY_LINE_MAX = 900  # characters per body line (SMTP allows 998)

TOKEN_RE = re.compile(r"[A-Za-z0-9-]{1,64}\Z")
RULE_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")
KEY_RE = re.compile(r"[!-~]{1,255}\Z")  # printable ASCII, no space; commas refused apart
ADDRESS_RE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+(@[A-Za-z0-9.-]+)?\Z")
# A record's serial: "[node=N ]type=T msg=audit(SEC.MILLI:SERIAL):"
SERIAL_RE = re.compile(rb"(?:node=\S+ )?type=\S+ msg=audit\(\d+\.\d+:(\d+)\)")
HOSTNAME = socket.gethostname()
TAMPER_RULE = "tamper"  # the tamper alerts' rule name and X-Audit-Key


class ConfigError(Exception):
    """A config or command line problem; the message names the file, section and key."""


class Rule:
    """One `[rule NAME]`: the keys it watches, who gets its mail, and its rate limit."""

    def __init__(self, name: str, keys: List[str], to: List[str], max_mails: int, window: int):
        self.name = name
        self.keys = keys
        self.to = to
        self.max_mails = max_mails
        self.window = window


class Config:
    """The validated contents of the INI file (and the KEY arguments)."""

    def __init__(self) -> None:
        self.path = DEFAULT_CONFIG
        self.required = True  # the file must exist (given with --config); else may be absent
        self.to = ["root"]
        self.sender = "root@" + HOSTNAME
        self.transport = "sendmail"
        self.sendmail = "/usr/sbin/sendmail"
        self.smtp_host = ""
        self.smtp_port = 0
        self.smtp_tls = "starttls"
        # smtp_ca_file's bundle, loaded at start and at every SIGHUP; None: the system store.
        self.smtp_context = None  # type: Optional[ssl.SSLContext]
        self.smtp_user = ""
        self.smtp_password = ""
        self.timeout = 30
        self.max_mails = 10
        self.window = 300
        self.spool_dir = "/var/spool/audisp-mailalert"
        self.retry_min = 30
        self.retry_max = 3600
        self.rules = []  # type: List[Rule]
        # The tamper alerts' rule ([tamper]); None when they are switched off.
        self.tamper = None  # type: Optional[Rule]

    def all_rules(self) -> List[Rule]:
        """The rules that have a rate limit: the [rule NAME]s and the tamper rule."""
        return self.rules + ([self.tamper] if self.tamper else [])


ALLOWED = {
    "mail": {"to", "from", "transport", "sendmail", "smtp_host", "smtp_port", "smtp_tls",
             "smtp_ca_file", "smtp_user", "smtp_password_file", "timeout"},
    "limits": {"max_mails", "window"},
    "spool": {"dir", "retry_min", "retry_max"},
    "rule": {"keys", "to", "max_mails", "window"},
    "tamper": {"enabled", "to", "max_mails", "window"},
}
# Rule names that are not free: the KEY arguments' rule and the tamper alerts'.
RESERVED_RULE_NAMES = ("args", "tamper")


class Section:
    """One section of the config file (or the command line's KEYs), read with the place
    that error messages name: `FILE: [SECTION] KEY: ...`."""

    def __init__(self, path: str, name: str, values) -> None:
        self.path = path
        self.name = name
        self.values = values  # a configparser section, or a dict

    def __contains__(self, key: str) -> bool:
        return key in self.values

    def error(self, key: str, text: str) -> ConfigError:
        return ConfigError("{}: [{}]{}: {}".format(self.path, self.name, " " + key if key else "", text))

    def int(self, key: str, low: int, high: int, default: int) -> int:
        if key not in self.values:
            return default
        value = self.values[key]
        try:
            number = int(value.strip())
        except ValueError:
            raise self.error(key, f"not a whole number: {value!r}")
        if not low <= number <= high:
            raise self.error(key, f"{number} is out of range {low}..{high}")
        return number

    def choice(self, key: str, choices: Tuple[str, ...], default: str) -> str:
        value = self.values.get(key, default).strip()
        if value not in choices:
            raise self.error(key, "must be {}, not {!r}".format(
                " or ".join([", ".join(choices[:-1]), choices[-1]]), value))
        return value

    def comma_list(self, key: str, what: str) -> List[str]:
        """The non-empty items of a comma-separated value; none at all is an error naming what."""
        items = [item.strip() for item in self.values[key].split(",") if item.strip()]
        if not items:
            raise self.error(key, f"no {what} given")
        return items

    def addresses(self, key: str, default: List[str]) -> List[str]:
        if key not in self.values:
            return default
        addresses = self.comma_list(key, "address")
        for address in addresses:
            if address.startswith("-") or not ADDRESS_RE.match(address):
                raise self.error(key, f"not a plain mail address (user or user@domain): {address!r}")
        return addresses

    def keys(self, key: str) -> List[str]:
        keys = self.comma_list(key, "audit key")
        for audit_key in keys:
            if not KEY_RE.match(audit_key):
                raise self.error(key, f"an audit key is 1-255 printable characters without spaces: {audit_key!r}")
        return keys

    def abspath(self, key: str, default: str) -> str:
        value = self.values.get(key, default).strip()
        if not value.startswith("/"):
            raise self.error(key, f"must be an absolute path: {value!r}")
        return value

    def password(self, key: str) -> str:
        """The password in the file the key names, which must be private: only the plugin's
        user (root) can read it, and only it can change it."""
        filename = self.abspath(key, "")
        try:
            with open(filename, "rb") as handle:
                info = os.fstat(handle.fileno())
                # smtplib sends AUTH credentials as ASCII only
                secret = handle.read(4096).decode("ascii").strip()
        except (OSError, UnicodeDecodeError) as err:
            raise self.error(key, f"cannot read {filename}: {err}")
        if info.st_uid != os.geteuid():
            raise self.error(key, f"{filename} is owned by uid {info.st_uid}, not {os.geteuid()}; "
                                  "make it root's, mode 0600")
        if info.st_mode & 0o077:
            raise self.error(key, f"{filename} is readable by others (mode {info.st_mode & 0o777:o}); "
                                  "make it 0600")
        return secret

    def tls_context(self, key: str) -> ssl.SSLContext:
        """A client TLS context that trusts exactly the CA bundle named by the key (PEM), with
        certificate and host name verification as ssl.create_default_context sets them."""
        filename = self.abspath(key, "")
        try:
            context = ssl.create_default_context(cafile=filename)
        except (OSError, ssl.SSLError) as err:
            raise self.error(key, f"cannot load the CA bundle {filename}: {err}")
        if not context.cert_store_stats()["x509"]:
            raise self.error(key, f"{filename} holds no certificate")
        return context


def load_config(path: str, arg_keys: List[str], must_exist: bool) -> Config:
    """Read and validate the INI file; every problem is a ConfigError naming file/section/key."""
    config = Config()
    config.path = path
    config.required = must_exist
    parser = _read_ini(path, must_exist)

    def section(name: str) -> Section:
        return Section(path, name, parser[name] if parser.has_section(name) else {})

    _load_mail(config, section("mail"))
    _load_limits(config, section("limits"))
    _load_spool(config, section("spool"))
    _load_rules(config, path, parser)
    _load_tamper(config, section("tamper"))
    if arg_keys:
        keys = Section("command line", "args", {"KEY": ",".join(arg_keys)}).keys("KEY")
        if any("," in k for k in arg_keys):
            raise ConfigError("command line: [args] KEY: a key cannot contain a comma")
        config.rules.append(Rule("args", keys, config.to, config.max_mails, config.window))
    if not config.rules:
        raise ConfigError(f"{path}: no [rule NAME] section and no KEY argument: nothing to watch")
    return config


def _read_ini(path: str, must_exist: bool) -> configparser.ConfigParser:
    """The parsed file, with every section and key checked against ALLOWED."""
    parser = configparser.ConfigParser(interpolation=None, default_section="\0none")
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except FileNotFoundError:
        if must_exist:
            raise ConfigError(f"{path}: no such file")
    except (OSError, UnicodeDecodeError, configparser.Error) as err:
        raise ConfigError(f"{path}: {err}".replace("\n", " "))
    for name in parser.sections():
        kind = "rule" if name.startswith("rule ") else name
        section = Section(path, name, parser[name])
        if kind not in ALLOWED:
            raise section.error("", "unknown section (expected mail, limits, spool, tamper or 'rule NAME')")
        for key in parser[name]:
            if key not in ALLOWED[kind]:
                raise section.error(key, "unknown key (allowed: {})".format(", ".join(sorted(ALLOWED[kind]))))
    return parser


def _load_mail(config: Config, mail: Section) -> None:
    config.to = mail.addresses("to", config.to)
    senders = mail.addresses("from", [config.sender])
    if len(senders) > 1:  # one From, one envelope sender: a second one would be ignored
        raise mail.error("from", f"one address only, not {len(senders)}")
    config.sender = senders[0]
    config.transport = mail.choice("transport", ("sendmail", "smtp"), config.transport)
    config.sendmail = mail.abspath("sendmail", config.sendmail)
    config.timeout = mail.int("timeout", 1, 3600, config.timeout)
    _load_smtp(config, mail)


def _load_smtp(config: Config, mail: Section) -> None:
    config.smtp_tls = mail.choice("smtp_tls", ("starttls", "tls", "none"), config.smtp_tls)
    if "smtp_ca_file" in mail:
        config.smtp_context = mail.tls_context("smtp_ca_file")
    config.smtp_host = mail.values.get("smtp_host", "").strip()
    config.smtp_port = mail.int("smtp_port", 1, 65535, 465 if config.smtp_tls == "tls" else 25)
    config.smtp_user = mail.values.get("smtp_user", "").strip()
    if config.transport != "smtp":
        return
    if not config.smtp_host:
        raise mail.error("smtp_host", "required when transport = smtp")
    if config.smtp_user:
        if "smtp_password_file" not in mail:
            raise mail.error("smtp_password_file", "required when smtp_user is set")
        config.smtp_password = mail.password("smtp_password_file")


def _load_limits(config: Config, limits: Section) -> None:
    config.max_mails = limits.int("max_mails", 1, 1000000, config.max_mails)
    config.window = limits.int("window", 1, 86400 * 7, config.window)


def _load_spool(config: Config, spool: Section) -> None:
    config.spool_dir = spool.abspath("dir", config.spool_dir)
    config.retry_min = spool.int("retry_min", 1, 86400, config.retry_min)
    config.retry_max = spool.int("retry_max", 1, 86400 * 7, config.retry_max)
    if config.retry_max < config.retry_min:
        raise spool.error("retry_max", f"smaller than retry_min ({config.retry_min})")


def _load_rules(config: Config, path: str, parser: configparser.ConfigParser) -> None:
    for name in parser.sections():
        if not name.startswith("rule "):
            continue
        section = Section(path, name, parser[name])
        rule_name = name[len("rule "):].strip()
        if not RULE_NAME_RE.match(rule_name) or rule_name in RESERVED_RULE_NAMES:
            raise section.error("", "a rule name is 1-64 of A-Z a-z 0-9 _ . - and not 'args' or 'tamper'")
        # [rule r] and [rule  r ] are two sections to configparser but one rule name here.
        if any(rule.name == rule_name for rule in config.rules):
            raise section.error("", f"a second rule named {rule_name!r}")
        if "keys" not in section:
            raise section.error("keys", "required")
        config.rules.append(_rule(config, section, rule_name, section.keys("keys")))


def _rule(config: Config, section: Section, name: str, keys: List[str]) -> Rule:
    """A rule with its own to, max_mails and window where the section sets them, else the
    [mail] and [limits] ones."""
    return Rule(name, keys, section.addresses("to", config.to),
                section.int("max_mails", 1, 1000000, config.max_mails),
                section.int("window", 1, 86400 * 7, config.window))


def _load_tamper(config: Config, tamper: Section) -> None:
    """[tamper]: on unless enabled = no; recipients and limit default to the main ones."""
    enabled = tamper.values.get("enabled", "yes").strip().lower()
    if enabled not in ("yes", "no"):
        raise tamper.error("enabled", f"must be yes or no, not {enabled!r}")
    if enabled == "yes":
        config.tamper = _rule(config, tamper, TAMPER_RULE, [TAMPER_RULE])


# ---------------------------------------------------------------------------------------
# Logging: syslog always, stderr too when somebody can read it.

class Log:
    """The plugin's own problems go to syslog (ident audisp-mailalert) and maybe stderr."""

    def __init__(self) -> None:
        self.to_stderr = False
        syslog.openlog(PROG, syslog.LOG_PID, syslog.LOG_DAEMON)

    def _emit(self, priority: int, message: str) -> None:
        message = escape_text(message, 1000)
        syslog.syslog(priority, message)
        if self.to_stderr:
            try:
                sys.stderr.write(f"{PROG}: {message}\n")
                sys.stderr.flush()
            except (OSError, ValueError):
                pass

    def error(self, message: str) -> None:
        self._emit(syslog.LOG_ERR, message)

    def warning(self, message: str) -> None:
        self._emit(syslog.LOG_WARNING, message)

    def info(self, message: str) -> None:
        self._emit(syslog.LOG_INFO, message)


def _fstat_mode(fd: int) -> int:
    """The st_mode of an open file descriptor; 0 when it is closed."""
    try:
        return os.fstat(fd).st_mode
    except OSError:
        return 0


def stderr_is_useful() -> bool:
    """True unless stderr is closed or /dev/null (as when auditd starts the plugin)."""
    try:
        st = os.fstat(2)
        null = os.stat("/dev/null")
    except OSError:
        return False
    return (st.st_dev, st.st_ino) != (null.st_dev, null.st_ino)


# ---------------------------------------------------------------------------------------
# Turning attacker-controlled text into something safe to show.

# Characters that escape_text looks at one by one: all but printable ASCII and backslash.
# Of those, the Unicode categories that do not show as themselves and so could disguise a
# file name: format characters (bidi marks and overrides, zero-width spaces, tags: Cf),
# spaces other than the ASCII one (no-break, ideographic: Zs), line and paragraph
# separators (Zl, Zp), lone surrogates (Cs); they are shown as \uNNNN.
NOT_PLAIN_RE = re.compile(r"[^\x20-\x5b\x5d-\x7e]")
UNSEEN_CATEGORIES = ("Cf", "Cs", "Zl", "Zp", "Zs")


def escape_text(text: str, limit: int) -> str:
    """Make text one printable line: control characters, undecodable bytes and characters
    that do not show as themselves (UNSEEN_CATEGORIES) become visible escapes; longer than
    limit is cut with a marker saying how many characters were cut. Only what is shown is
    escaped, so that a huge value costs no more than a short one."""
    if NOT_PLAIN_RE.search(text, 0, limit):
        shown, used = _escape_head(text, limit)
    else:
        shown, used = text[:limit], min(len(text), limit)
    if used < len(text):
        return f"{shown}...[{len(text) - used} more characters]"
    return shown


def _escape_head(text: str, limit: int) -> Tuple[str, int]:
    """The escaped start of text, at most limit characters long and with no escape cut
    in two, and how many characters of text it shows."""
    out, size = [], 0
    for used, char in enumerate(text[:limit]):
        shown = _escape_char(char)
        if size + len(shown) > limit:
            return "".join(out), used
        out.append(shown)
        size += len(shown)
    return "".join(out), min(len(text), limit)


def _escape_char(char: str) -> str:
    code = ord(char)
    if code < 0x20 or code == 0x7F or 0x80 <= code < 0xA0:
        return f"\\x{code:02x}"
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if char == "\\":
        return "\\\\"
    if code > 0x7F and unicodedata.category(char) in UNSEEN_CATEGORIES:
        return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
    return char


def header_text(text: str, limit: int) -> str:
    """escape_text, plus: no RFC 2047 encoded word can be smuggled in ("=?" -> "=\\?")."""
    return escape_text(text, limit).replace("=?", "=\\?")


def unescape_octal(text: str) -> str:
    """auparse's tty escaping writes control bytes as \\ooo; turn them back into characters
    so that escape_text shows every value in one notation."""
    return re.sub(r"\\([0-3][0-7]{2})", lambda m: chr(int(m.group(1), 8)), text)


# ---------------------------------------------------------------------------------------
# Reading one event from auparse.

class Event:
    """The normalized view of one audit event (all values already safe to show)."""

    def __init__(self) -> None:
        self.keys = []  # type: List[str]
        self.record_type = ""
        self.subject = ""
        self.action = ""
        self.object = ""
        self.how = ""
        self.result = ""
        self.kind = ""
        self.node = HOSTNAME
        self.time = ""
        self.serial = 0
        self.ppid = ""
        self.records = []  # type: List[str]


def _field_value(au) -> str:
    """The interpreted value of the current field. auparse hands back bytes it could not
    decode as UTF-8 as a UnicodeDecodeError: then decode the raw (hex) value ourselves."""
    try:
        value = au.interpret_field()
    except UnicodeDecodeError as err:
        value = err.object.decode("utf-8", "surrogateescape")
    except (RuntimeError, ValueError, OSError):
        value = None
    if value is None:
        value = _field_str(au)
    return unescape_octal(value)


def _positioned(au, method: str) -> Optional[str]:
    """Call an aup_normalize_* cursor method; the field it lands on, or None."""
    function = getattr(au, method, None)
    if function is None:
        return None
    try:
        if not function():
            return None
    except (RuntimeError, ValueError, OSError):
        return None
    return _field_value(au)


def _text(au, method: str) -> str:
    """Call an aup_normalize_* method that returns a string; "" when it has none."""
    function = getattr(au, method, None)
    if function is None:
        return ""
    try:
        value = function()
    except UnicodeDecodeError as err:
        return err.object.decode("utf-8", "surrogateescape")
    except (RuntimeError, ValueError, OSError):
        return ""
    return value if isinstance(value, str) else ""


def _find(au, name: str = "") -> bool:
    """find_field(name), or find_field_next() without a name: whether the cursor is on such
    a field now. For "not found" the binding raises OSError instead of returning None
    whenever errno still holds an earlier, unrelated error (a verify request that does
    not exist leaves ENOENT): that is not found too, not a reason to skip the event. A
    raw value that is not UTF-8 raises UnicodeDecodeError: found (_field_value reads it)."""
    try:
        return bool(au.find_field(name) if name else au.find_field_next())
    except UnicodeDecodeError:
        return True
    except OSError:
        return False


def timestamp(au):
    """The event's time stamp (.sec .milli .serial), or None: an event may have none, and
    the binding raises OSError for that too when errno is stale (see _find)."""
    try:
        return au.get_timestamp()
    except OSError:
        return None


def _field_str(au) -> str:
    """The current field's raw value; "" when there is none (see _find about OSError)."""
    try:
        return au.get_field_str() or ""
    except (UnicodeDecodeError, RuntimeError, ValueError, OSError):
        return ""


def event_keys(au) -> Tuple[str, List[str]]:
    """The first record's type and every key of the event. auparse 3.x splits a key field
    holding several keys into several `key` fields; older ones hand back one value with
    the \\x01 separator auditctl uses: both are split here."""
    keys = []  # type: List[str]
    au.first_record()
    try:
        record_type = au.get_type_name() or ""
    except LookupError:  # a type number this auparse has no name for
        record_type = ""
    while True:
        if _find(au, "key"):
            while True:
                value = _field_value(au)
                if value and value != "(null)":
                    keys.extend(k for k in value.split("\x01") if k)
                if not _find(au):
                    break
        if keys or not au.next_record():
            break
    return record_type, keys


def read_event(au) -> Event:
    """Normalize the current event (auparse_normalize) and read what the alert shows."""
    event = Event()
    event.record_type, event.keys = event_keys(au)
    stamp = timestamp(au)  # not None: on_event saw it
    event.time = f"{stamp.sec}.{stamp.milli:03d}"
    event.serial = stamp.serial
    au.first_record()
    if _find(au, "node"):
        event.node = _field_str(au) or HOSTNAME
    au.first_record()
    if _find(au, "ppid"):
        event.ppid = _field_str(au)

    au.first_record()
    try:
        au.aup_normalize(auparse.NORM_OPT_NO_ATTRS)
    except (ValueError, OSError):
        pass  # the fields below then fall back to empty values
    subject = _positioned(au, "aup_normalize_subject_primary")
    if subject in (None, "", "unset", "4294967295", "-1"):
        subject = _positioned(au, "aup_normalize_subject_secondary") or subject
    event.subject = subject or "unknown"
    event.action = _text(au, "aup_normalize_get_action")
    event.object = _positioned(au, "aup_normalize_object_primary") or ""
    event.how = _text(au, "aup_normalize_how")
    event.result = _positioned(au, "aup_normalize_get_results") or ""
    event.kind = _text(au, "aup_normalize_get_event_kind")

    au.first_record()
    while True:
        try:
            text = au.get_record_text() or ""
        except UnicodeDecodeError as err:
            text = err.object.decode("utf-8", "surrogateescape")
        except OSError:  # none (see _find)
            text = ""
        event.records.append(text)
        if len(event.records) >= RECORDS_MAX or not au.next_record():
            break
    return event


# ---------------------------------------------------------------------------------------
# Composing the messages.

# Bodies are encoded for 78-character lines (quoted-printable needs <= 76). Headers are
# written unfolded (RFC 5322 allows 998): the folder of the email package starts a Subject
# holding a backslash on a continuation line, which readers then show with a leading space.
MAIL_POLICY = email.policy.default.clone(linesep="\n", max_line_length=78)
WIRE_POLICY = MAIL_POLICY.clone(max_line_length=998)


def _new_message(config: Config, to: List[str], subject: str) -> EmailMessage:
    message = EmailMessage(policy=MAIL_POLICY)
    message["Date"] = email.utils.formatdate(localtime=True)
    message["Message-ID"] = email.utils.make_msgid("audit", domain=HOSTNAME)
    message["From"] = config.sender
    message["To"] = ", ".join(to)
    message["Subject"] = subject
    message["Auto-Submitted"] = "auto-generated"
    return message


def compose_alert(config: Config, rule: Rule, key: str, event: Event,
                  verify_token: Optional[str]) -> EmailMessage:
    """The alert for one event: the Subject names key, subject, action, object and host."""
    node = re.sub(r"[^A-Za-z0-9._-]", "_", event.node)[:255] or "unknown"

    def part(value: str) -> str:
        return header_text(value, SUBJECT_PART_MAX) or "-"

    subject = f"[audit] {part(key)}: {part(event.subject)} {part(event.action)} {part(event.object)} on {part(node)}"
    message = _new_message(config, rule.to, subject)
    message["X-Audit-Key"] = key
    message["X-Audit-Rule"] = rule.name
    message["X-Audit-Event"] = f"{event.time}:{event.serial}@{node}"
    if verify_token:
        message["X-Audit-Verify"] = verify_token

    def line(label: str, value: str) -> str:
        return "{:<9} {}".format(label + ":", escape_text(value, FIELD_MAX))

    summary = [
        f"An audit event matched rule {rule.name} (key {key}).",
        "",
        line("subject", event.subject),
        line("action", event.action),
        line("object", event.object),
        line("how", event.how),
        line("result", event.result),
        line("kind", event.kind),
        line("keys", ", ".join(event.keys)),
        line("time", time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(float(event.time)))
             + " (" + event.time + ")"),
        line("serial", str(event.serial)),
        line("node", node),
        "",
        "Raw records (control characters escaped, long records cut):",
    ]
    _set_body(message, summary + _record_lines(event.records))
    return message


def _record_lines(records: List[str]) -> List[str]:
    """Raw records for a body, escaped and cut; SMTP allows 998 characters per line, so a
    long record continues on indented lines."""
    lines = []
    for record in records:
        text = escape_text(record, RECORD_MAX)
        lines.append(text[:BODY_LINE_MAX])
        lines.extend("    " + text[i:i + BODY_LINE_MAX]
                     for i in range(BODY_LINE_MAX, len(text), BODY_LINE_MAX))
    return lines


def _set_body(message: EmailMessage, lines: List[str]) -> None:
    """Plain 7bit text when the body is ASCII (readable in --print output and any mail
    reader), quoted-printable UTF-8 when a value holds other characters."""
    body = "\n".join(lines) + "\n"
    try:
        body.encode("ascii")
        cte = "7bit"
    except UnicodeEncodeError:
        cte = "quoted-printable"
    message.set_content(body, charset="utf-8", cte=cte)


class Held:
    """What a rule held back in its current window."""

    def __init__(self) -> None:
        self.total = 0
        self.groups = Counter()  # type: Counter
        self.first = 0.0


def compose_digest(config: Config, rule: Rule, held: Held, window_end: float) -> EmailMessage:
    """One mail for everything a rule held back in a window, with the exact count."""
    subject = f"[audit] digest {rule.name}: {held.total} more events held back on {HOSTNAME}"
    message = _new_message(config, rule.to, subject)
    message["X-Audit-Digest"] = rule.name
    message["X-Audit-Rule"] = rule.name
    message["X-Audit-Key"] = ", ".join(rule.keys)
    lines = [
        "Rule {} (keys {}) reached its limit of {} mails per {} s.".format(
            rule.name, ", ".join(rule.keys), rule.max_mails, rule.window),
        "These events were not mailed one by one:",
        "",
        f"Held back: {held.total}",
        "First held back: {}".format(time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(held.first))),
        "Window end:      {}".format(time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(window_end))),
        "",
        "{:>7}  subject / action / object".format("count"),
    ]
    for (subject_name, action, obj), count in held.groups.most_common():
        lines.append(f"{count:>7}  {escape_text(subject_name, 60)} / {escape_text(action, 60)} / {escape_text(obj, 120)}")
    _set_body(message, lines)
    return message


# ---------------------------------------------------------------------------------------
# The spool: what was accepted and not yet delivered.

class DeliveryError(Exception):
    """A failed delivery attempt. permanent: the MTA refused the message itself (a 5xx reply
    to MAIL, RCPT or DATA, or a sendmail exit status for bad data or addressee), so no retry
    can deliver it; anything else (server down, 4xx, TLS, login) may pass on a retry."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class SpoolFull(OSError):
    """The queue holds SPOOL_MAX_FILES files or SPOOL_MAX_BYTES already."""


def check_private_dir(path: str, follow: bool) -> None:
    """Refuse a directory that someone else could have filled or can change: one not owned
    by the plugin's user (root) or writable by group or others; with follow False, a
    symbolic link too. Its files are mailed out by root."""
    info = os.stat(path) if follow else os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise PermissionError(f"{path} is not a directory (a symbolic link?)")
    if info.st_uid != os.geteuid():
        raise PermissionError(f"{path} is owned by uid {info.st_uid}, not {os.geteuid()}")
    if info.st_mode & 0o022:
        raise PermissionError(f"{path} is writable by group or others "
                              f"(mode {stat.S_IMODE(info.st_mode):o}); make it 0700")


def sync_dir(path: str) -> None:
    """fsync a directory, so that a file created, renamed or removed in it stays so after
    a power failure. Best effort: the change itself is done, and a directory that cannot
    be synced is no reason to take it back."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_whole(temporary: str, path: str, data: bytes, mode: int, durable: bool) -> None:
    """Write path whole or not at all: into temporary (created new, so never through a
    planted link), synced first when durable, then renamed over path."""
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def replace_file(path: str, data: bytes) -> None:
    """Write path anew through path.tmp, renamed over it. A .tmp left behind, or planted (a
    symbolic link to another file), is removed first: never followed, never written through."""
    temporary = path + ".tmp"
    try:
        os.unlink(temporary)
    except FileNotFoundError:
        pass
    write_whole(temporary, path, data, 0o644, durable=False)


class Spool:
    """The spool directory's layout, its one owner here (docs/design.md): `<dir>/queue/`
    holds one complete message per file (written under a temporary name, then renamed); a
    file is deleted only after its delivery succeeded. `<dir>/bad/` holds the files that no
    delivery can succeed with (refused for good, or unreadable as mail). `status.json`, the
    `verify/` requests and the role's `maintenance` marker are read and written here too."""

    def __init__(self, directory: str) -> None:
        self.dir = directory
        self.queue_dir = os.path.join(directory, "queue")
        self.bad_dir = os.path.join(directory, "bad")
        self.verify_dir = os.path.join(directory, "verify")
        self.status_path = os.path.join(directory, "status.json")
        self.maintenance_path = os.path.join(directory, "maintenance")
        self.bad_count = 0  # files in bad/: counted at start, plus those moved there since
        self._seq = 0
        self._lock = threading.Lock()  # guards _seq, _sizes and _bytes: two threads use them
        self._sizes = {}  # type: dict  # name -> bytes of each file in queue/
        self._bytes = 0  # their sum

    def prepare(self) -> None:
        """Make or check the directories: PermissionError when someone else could have put
        files there (check_private_dir)."""
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        check_private_dir(self.dir, follow=True)  # the configured path may be a link
        os.chmod(self.dir, 0o700)
        for path in (self.queue_dir, self.bad_dir):
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                pass
            check_private_dir(path, follow=False)
            self._remove_leftovers(path)
        self.bad_count = len([n for n in os.listdir(self.bad_dir) if not n.startswith(".")])
        for name in self.names():
            try:
                self._note(name, os.lstat(os.path.join(self.queue_dir, name)).st_size)
            except OSError:
                pass

    @staticmethod
    def _remove_leftovers(directory: str) -> None:
        """Remove the .NAME.tmp files of writes that a kill or a crash cut short: no other
        process writes here, and the plugin has not begun to."""
        for name in os.listdir(directory):
            if name.startswith(".") and name.endswith(".tmp"):
                os.unlink(os.path.join(directory, name))

    def new_name(self) -> str:
        """A name that sorts by acceptance time, unique in the plugin's lifetime."""
        with self._lock:
            self._seq += 1
            return f"{int(time.time() * 1e6):017d}-{os.getpid()}-{self._seq:06d}.eml"

    def add(self, data: bytes) -> str:
        """Accept a message into the queue; its name. OSError when the spool cannot take it:
        SpoolFull at the queue's bound (SPOOL_MAX_FILES, SPOOL_MAX_BYTES)."""
        with self._lock:
            if len(self._sizes) >= SPOOL_MAX_FILES or self._bytes + len(data) > SPOOL_MAX_BYTES:
                raise SpoolFull(f"the queue is at its bound: {len(self._sizes)} files, "
                                f"{self._bytes >> 20} MB")
        name = self.new_name()
        self._write(self.queue_dir, name, data)
        self._note(name, len(data))
        return name

    def _note(self, name: str, size: int) -> None:
        with self._lock:
            self._sizes[name] = size
            self._bytes += size

    def forget(self, name: str) -> None:
        """A queue file is gone: it no longer counts towards the bound."""
        with self._lock:
            self._bytes -= self._sizes.pop(name, 0)

    def add_bad(self, name: str, data: bytes) -> None:
        """Keep a message that was never spooled, and cannot be delivered, in bad/."""
        self._write(self.bad_dir, name, data)
        self.bad_count += 1

    @staticmethod
    def _write(directory: str, name: str, data: bytes) -> None:
        """Write the file whole or not at all: under a temporary name, synced, renamed."""
        write_whole(os.path.join(directory, "." + name + ".tmp"), os.path.join(directory, name),
                    data, 0o600, durable=True)
        sync_dir(directory)  # the rename itself must survive a power failure

    def names(self) -> List[str]:
        try:
            return sorted(n for n in os.listdir(self.queue_dir) if n.endswith(".eml")
                          and not n.startswith("."))
        except OSError:
            return []

    def read(self, name: str) -> bytes:
        """The message. FileNotFoundError when it is gone; a permanent DeliveryError when it
        is no file the plugin wrote (a symbolic link, not a regular file, too large), which
        is neither followed nor read; another OSError when reading fails."""
        path = os.path.join(self.queue_dir, name)
        try:  # O_NONBLOCK: opening a FIFO would wait for a writer
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise DeliveryError(f"{path} is a symbolic link (not followed)", permanent=True)
            raise
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise DeliveryError(f"{path} is not a regular file", permanent=True)
            if info.st_size > MAX_MESSAGE_BYTES:
                raise DeliveryError(f"{path} holds {info.st_size} bytes, more than any alert",
                                    permanent=True)
            return os.read(fd, MAX_MESSAGE_BYTES)
        finally:
            os.close(fd)

    def remove(self, name: str) -> None:
        os.unlink(os.path.join(self.queue_dir, name))
        self.forget(name)
        sync_dir(self.queue_dir)  # else a delivered alert may be back after a power failure

    def move_to_bad(self, name: str) -> None:
        os.rename(os.path.join(self.queue_dir, name), os.path.join(self.bad_dir, name))
        self.forget(name)
        sync_dir(self.bad_dir)
        sync_dir(self.queue_dir)
        self.bad_count += 1

    def maintenance(self, log: Log) -> Optional[Tuple[int, int]]:
        """The window (START, END) of the role's maintenance marker `<dir>/maintenance`, END
        capped at START + MAINTENANCE_MAX; None when there is none, or when it is not a
        regular file of root's that only root can write (then it is ignored, and logged)."""
        path = self.maintenance_path
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError as err:  # ELOOP: a symbolic link
            log.warning(f"maintenance marker {path} ignored: {err}")
            return None
        try:
            info = os.fstat(fd)
            raw = os.read(fd, 128) if stat.S_ISREG(info.st_mode) else b""
        finally:
            os.close(fd)
        fields = raw.split()
        if info.st_uid != os.geteuid() or info.st_mode & 0o022 or len(fields) != 2 \
                or not all(field.isdigit() for field in fields):
            log.warning(f"maintenance marker {path} ignored: not a root-only file holding START END")
            return None
        start, end = int(fields[0]), int(fields[1])
        return start, min(end, start + MAINTENANCE_MAX)

    def write_status(self, document: dict) -> None:
        """Write status.json anew (replace_file: never through a planted link)."""
        replace_file(self.status_path, json.dumps(document, indent=1, sort_keys=True).encode())

    def verify_token(self, ppid: str, log: Log) -> Optional[str]:
        """The token of a verification request `<dir>/verify/<ppid>`, if there is one."""
        if not ppid.isdigit():
            return None
        try:
            fd = os.open(os.path.join(self.verify_dir, ppid), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return None  # none, or a symbolic link (not followed)
        try:
            raw = os.read(fd, 128) if stat.S_ISREG(os.fstat(fd).st_mode) else b""
        finally:
            os.close(fd)
        token = raw.decode("ascii", "replace").strip()
        if not TOKEN_RE.match(token):
            log.warning(f"verify request {self.verify_dir}/{ppid} holds no valid token; ignored")
            return None
        return token


# ---------------------------------------------------------------------------------------
# Delivery.

# The sysexits.h codes by which a sendmail says that it refuses the message. Not
# EX_UNAVAILABLE (69): postfix's sendmail exits with it while its daemon is down.
SENDMAIL_REFUSALS = {65: "EX_DATAERR", 67: "EX_NOUSER", 68: "EX_NOHOST"}
SENDMAIL_STDERR_MAX = 4096  # bytes of a sendmail's complaint read for the log


def envelope(data: bytes) -> Tuple[str, List[str]]:
    """Sender and recipients, read back from the spooled message's From and To. A file that
    gives none cannot be delivered, now or later: a permanent failure."""
    try:
        headers = BytesHeaderParser(policy=email.policy.default).parsebytes(data)
        sender = email.utils.parseaddr(str(headers.get("From", "")))[1]
        recipients = [address for _name, address in email.utils.getaddresses(
            [str(v) for v in headers.get_all("To", [])]) if address]
    except (ValueError, LookupError, TypeError, AttributeError) as err:  # the email package's
        raise DeliveryError(f"cannot parse the message: {type(err).__name__}: {err}", permanent=True)
    if not recipients:
        raise DeliveryError("the message has no recipient", permanent=True)
    return sender, recipients


def crlf(data: bytes) -> bytes:
    """The message with the CRLF line endings SMTP requires (RFC 5321 2.3.8): the spool holds
    LF, as sendmail wants it, and smtplib sends bytes unchanged. An existing CRLF stays one,
    a lone CR becomes one, as smtplib itself does for a str message."""
    return re.sub(rb"\r\n|\r|\n", b"\r\n", data)


def send_sendmail(config: Config, data: bytes) -> None:
    """Pipe the message to sendmail: argument list, no shell, explicit recipients, -oi.
    Its exit status alone says whether it took the message."""
    sender, recipients = envelope(data)
    command = [config.sendmail, "-oi"]
    if sender:
        command += ["-f", sender]
    command += ["--"] + recipients
    status, stderr = _run_sendmail(config, command, data)
    if status != 0:
        refusal = SENDMAIL_REFUSALS.get(status)
        raise DeliveryError("{} exited with {}: {}{}".format(
            config.sendmail, status, escape_text(stderr.decode("utf-8", "replace").strip(), 300),
            f" ({refusal}: refused, a permanent failure)" if refusal else ""),
            permanent=refusal is not None)


def _run_sendmail(config: Config, command: List[str], data: bytes) -> Tuple[int, bytes]:
    """Run sendmail with the message on stdin, for at most `timeout` seconds; its exit
    status and (the start of) what it wrote to stderr. stderr goes to a pipe of our own,
    read after the exit: communicate() would wait for it to close, which a child left
    behind by sendmail (a queue runner holding stderr) delays past the exit, making a
    delivered mail look hung, and retried."""
    errors, errors_write = os.pipe()
    try:
        try:
            process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors_write,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, cwd="/", close_fds=True,
                # preexec_fn runs between fork and exec: _unblock_signals takes no lock.
                start_new_session=True, preexec_fn=_unblock_signals)  # noqa: PLW1509
        except OSError as err:
            raise DeliveryError(f"cannot run {config.sendmail}: {err}")
        finally:
            os.close(errors_write)
        try:
            process.communicate(data, timeout=config.timeout)  # writes stdin, waits for the exit
        except subprocess.TimeoutExpired:
            _kill_group(process)
            raise DeliveryError(f"{config.sendmail} did not finish within {config.timeout} s")
        os.set_blocking(errors, False)
        try:
            stderr = os.read(errors, SENDMAIL_STDERR_MAX)
        except BlockingIOError:  # nothing written, and a child still holds the pipe
            stderr = b""
        return process.returncode, stderr
    finally:
        os.close(errors)


def _unblock_signals() -> None:
    """In a child before exec: the plugin's threads keep HUP, TERM and INT blocked (see
    SignalWatcher), and a blocked mask would pass on to sendmail and what it starts."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_SIGNALS)


def _kill_group(process: subprocess.Popen) -> None:
    """Kill a hung sendmail and whatever it started, then reap it without waiting on pipes
    a grandchild may still hold open."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        if process.stdin:
            process.stdin.close()
    except OSError:
        pass
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _reply(code: int, text: bytes) -> str:
    """A server's reply as one line: its code and its text, escaped like any server text."""
    return f"{code} {escape_text(text.decode('utf-8', 'replace'), 300)}"


def _refused_recipients(where: str, refused: dict) -> DeliveryError:
    """RCPT refused for some or all recipients ({address: (code, text)}): permanent when
    every reply is a 5xx (a 4xx, such as greylisting, may pass later)."""
    replies = "; ".join(f"{_reply(code, text)} (RCPT {address})"
                        for address, (code, text) in refused.items())
    if all(code >= 500 for code, _text in refused.values()):
        return DeliveryError(f"SMTP {where}: refused by the server: {replies}", permanent=True)
    return DeliveryError(f"SMTP {where}: recipient(s) not accepted: {replies}")


def send_smtp(config: Config, data: bytes) -> None:
    """Hand the message to an SMTP server: STARTTLS, implicit TLS or plain, optional login.
    The server's certificate and host name are verified against smtp_ca_file or the system
    store. With starttls nothing but EHLO and STARTTLS is sent before TLS is up: a server
    that does not offer it (or refuses it) fails the delivery, there is no plaintext fallback."""
    sender, recipients = envelope(data)
    where = f"{config.smtp_host}:{config.smtp_port}"
    try:
        if config.smtp_tls == "tls":
            server = smtplib.SMTP_SSL(config.smtp_host, config.smtp_port, timeout=config.timeout,
                                      context=config.smtp_context or ssl.create_default_context())
        else:
            server = smtplib.SMTP(config.smtp_host, config.smtp_port, timeout=config.timeout)
        try:
            if config.smtp_tls == "starttls":
                try:
                    server.starttls(context=config.smtp_context or ssl.create_default_context())
                except smtplib.SMTPNotSupportedError:
                    raise DeliveryError(f"SMTP {where}: the server does not offer STARTTLS; "
                                        "nothing is sent without TLS (smtp_tls = starttls)")
            if config.smtp_user:
                server.login(config.smtp_user, config.smtp_password)
            refused = server.sendmail(sender, recipients, crlf(data))
        finally:
            try:
                server.quit()
            except (smtplib.SMTPException, OSError):
                server.close()
    except smtplib.SMTPRecipientsRefused as err:  # every one; some is the dict returned
        raise _refused_recipients(where, err.recipients)
    except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as err:
        if err.smtp_code >= 500:
            raise DeliveryError(f"SMTP {where}: refused by the server: "
                                f"{_reply(err.smtp_code, err.smtp_error)}", permanent=True)
        raise DeliveryError(f"SMTP {where}: {err}")
    except (smtplib.SMTPException, OSError, ssl.SSLError) as err:
        raise DeliveryError(f"SMTP {where}: {err}")
    if refused:
        raise _refused_recipients(where, refused)


class Status:
    """Shared state behind status.json (written by the main thread, at most once a second)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queue = 0
        self.last_error = None  # type: Optional[str]
        self.last_error_permanent = False  # the MTA refused that message: no retry can help
        self.last_delivery = None  # type: Optional[float]
        self.bad = 0  # files in <spool>/bad/
        self.unspooled = 0  # alerts held in memory, the spool could not take them
        self.dropped = 0  # alerts lost since start: no room in the spool nor in memory
        self.long_lines = 0  # input lines dropped for being longer than MAX_LINE
        self.tamper_suppressed = 0  # tamper findings in the role's maintenance window
        self.changed = True

    def document(self, now: float, rules: dict) -> dict:
        """status.json's content (docs/design.md); rules: each rule's RateLimiter row."""
        with self.lock:
            self.changed = False
            return {
                "pid": os.getpid(),
                "updated": now,
                "rules": rules,
                "queue": self.queue,
                "last_error": self.last_error,
                "last_error_permanent": self.last_error_permanent,
                "last_delivery": self.last_delivery,
                "bad": self.bad,
                "unspooled": self.unspooled,
                "dropped": self.dropped,
                "long_lines": self.long_lines,
                "tamper_suppressed": self.tamper_suppressed,
            }


class StatusFile:
    """Writes status.json (Spool.write_status) from Status and the rate limiter's rows when
    something changed, at most every STATUS_INTERVAL seconds; a failure to write it is
    logged once and retried at the next tick. With --print (print_only) there is none."""

    def __init__(self, spool: Spool, status: Status, log: Log, print_only: bool) -> None:
        self.spool = spool
        self.status = status
        self.log = log
        self.print_only = print_only
        self.written = 0.0
        self.error = None  # type: Optional[str]  # the last failure to write it

    def write(self, limiter: "RateLimiter", rules: List[Rule], force: bool = False) -> None:
        if self.print_only:
            return
        now = time.time()
        if not force and (not self.status.changed or now - self.written < STATUS_INTERVAL):
            return
        document = self.status.document(now, {rule.name: limiter.row(rule) for rule in rules})
        self.written = now
        try:
            self.spool.write_status(document)
        except OSError as err:
            self.status.changed = True  # try again at the next tick; say so once
            if str(err) != self.error:
                self.log.error(f"cannot write {self.spool.status_path}: {err}")
            self.error = str(err)
            return
        self.error = None


class Deliverer(threading.Thread):
    """The delivery worker: takes spooled names from a bounded queue and delivers them.
    A failure pauses all delivery (the transport is likely down) for retry_min seconds,
    doubling up to retry_max while failures go on; the failed message goes behind those
    that failed less often, so one message that always fails cannot block the others.
    Alerts the spool could not take come held in memory (hold), and are delivered alike."""

    def __init__(self, spool: Spool, status: Status, log: Log, config: Config) -> None:
        super().__init__(name="delivery", daemon=True)
        self.spool = spool
        self.status = status
        self.log = log
        self.config = config
        self.inbox = queue.Queue(QUEUE_SIZE)  # type: queue.Queue
        self.rescan = True  # the spool may hold more than the inbox: list it again
        self.stopping = False
        self.stop_deadline = 0.0
        self.pending = {}  # type: dict  # spool name -> failed attempts
        self.failures_in_a_row = 0
        self.paused_until = 0.0  # monotonic time
        self.lock = threading.Lock()  # guards unspooled, which the reading thread adds to
        self.unspooled = {}  # type: dict  # name -> message: accepted but not in the spool

    def hold(self, data: bytes) -> bool:
        """Take an alert the spool could not, to deliver it from memory; False (not taken)
        when UNSPOOLED_MAX alerts or UNSPOOLED_MAX_BYTES are held already."""
        with self.lock:
            if len(self.unspooled) >= UNSPOOLED_MAX or \
                    sum(map(len, self.unspooled.values())) + len(data) > UNSPOOLED_MAX_BYTES:
                return False
            name = self.spool.new_name()
            self.unspooled[name] = data
            held = len(self.unspooled)
        with self.status.lock:  # now: the worker may be busy with a hung delivery
            self.status.unspooled = held
            self.status.changed = True
        self.submit(name)
        return True

    def submit(self, name: str) -> None:
        try:
            self.inbox.put_nowait(name)
        except queue.Full:
            self.rescan = True

    def stop(self, deadline: float) -> None:
        self.stop_deadline = deadline
        self.stopping = True
        self.submit("")

    def run(self) -> None:
        while True:
            # Read before collecting: once stop() was called every name is in the inbox,
            # so this pass is the last one and misses none.
            last_pass = self.stopping
            self._collect()
            if time.monotonic() >= self.paused_until:
                # Fewest failed attempts first, then oldest first (names sort by time).
                for name in sorted(self.pending, key=lambda n: (self.pending[n], n)):
                    if self.stopping and time.monotonic() >= self.stop_deadline:
                        break
                    if not self._deliver(name):
                        break
            self._publish()
            if last_pass:
                self._spool_unspooled()
                self._publish()
                return  # what is left stays spooled for the next start
            if self.pending:
                self._wait(max(0.05, self.paused_until - time.monotonic()))
            else:
                self._wait(60.0)

    def _wait(self, seconds: float) -> None:
        try:
            name = self.inbox.get(timeout=min(seconds, 60.0))
        except queue.Empty:
            return
        if name:
            self.pending.setdefault(name, 0)

    def _collect(self) -> None:
        while True:
            try:
                name = self.inbox.get_nowait()
            except queue.Empty:
                break
            if name:
                self.pending.setdefault(name, 0)
        if self.rescan:
            self.rescan = False
            names = set(self.spool.names())
            with self.lock:
                names |= set(self.unspooled)
            for name in names:
                self.pending.setdefault(name, 0)
            for name in list(self.pending):
                if name not in names:
                    del self.pending[name]

    def _deliver(self, name: str) -> bool:
        """One attempt at one message. False: pause all delivery (a temporary failure, of the
        transport most likely). A message refused for good goes to bad/, the others go on."""
        try:
            data = self._message(name)
        except FileNotFoundError:
            self.pending.pop(name, None)  # gone (delivered by an earlier run): nothing to do
            self.spool.forget(name)
            return True
        except DeliveryError as err:
            return self._failed(name, err)
        except OSError as err:  # kept: an I/O error may pass, and the file is all there is
            return self._failed(name, DeliveryError(f"cannot read it: {err}"))
        try:
            if self.config.transport == "smtp":
                send_smtp(self.config, data)
            else:
                send_sendmail(self.config, data)
        except (DeliveryError, ValueError) as err:
            return self._failed(name, err if isinstance(err, DeliveryError) else DeliveryError(str(err)))
        self._delivered(name)
        return True

    def _message(self, name: str) -> bytes:
        with self.lock:
            data = self.unspooled.get(name)
        return self.spool.read(name) if data is None else data

    def _delivered(self, name: str) -> None:
        with self.lock:
            held = self.unspooled.pop(name, None)
        try:
            if held is None:
                self.spool.remove(name)
        except OSError as err:
            self.log.error(f"delivered {name} but cannot remove it: {err}")
        self.pending.pop(name, None)
        self.failures_in_a_row = 0
        with self.status.lock:
            self.status.last_delivery = time.time()
            self.status.changed = True

    def _failed(self, name: str, err: DeliveryError) -> bool:
        with self.status.lock:
            self.status.last_error = f"{name}: {err}"
            self.status.last_error_permanent = err.permanent
            self.status.changed = True
        if err.permanent and self._quarantine(name, err):
            return True
        self.pending[name] = self.pending.get(name, 0) + 1
        self.failures_in_a_row += 1
        delay = min(self.config.retry_max,
                    self.config.retry_min * 2 ** min(self.failures_in_a_row - 1, 30))
        self.paused_until = time.monotonic() + delay
        self.log.error(f"delivery of {name} failed (attempt {self.pending[name]}), "
                       f"next try in {delay} s: {err}")
        return False

    def _quarantine(self, name: str, err: DeliveryError) -> bool:
        """Move a message that no retry can deliver to bad/, out of the others' way."""
        with self.lock:
            held = self.unspooled.pop(name, None)
        try:
            if held is None:
                self.spool.move_to_bad(name)
            else:
                self.spool.add_bad(name, held)
        except OSError as failure:
            if held is not None:  # no retry can deliver it, and there is no room to keep it
                self.pending.pop(name, None)
                self._count_dropped(1, f"{name}, held in memory, failed for good ({err}) and "
                                       f"cannot be written to {self.spool.bad_dir}: {failure}")
                return True
            self.log.error(f"cannot move {name} to {self.spool.bad_dir}: {failure}")
            return False  # then it is retried like any failure, with the pause
        self.pending.pop(name, None)
        self.log.error(f"delivery of {name} failed for good, moved to {self.spool.bad_dir}: {err}")
        with self.status.lock:
            self.status.bad = self.spool.bad_count
            self.status.changed = True
        return True

    def _publish(self) -> None:
        """status.json's queue (spooled alerts waiting) and unspooled (held in memory)."""
        with self.lock:
            counts = (sum(1 for name in self.pending if name not in self.unspooled),
                      len(self.unspooled))
        with self.status.lock:
            if (self.status.queue, self.status.unspooled) != counts:
                self.status.queue, self.status.unspooled = counts
                self.status.changed = True

    def _spool_unspooled(self) -> None:
        """At exit: the alerts still held in memory go to the spool if it has room again;
        the others are lost."""
        with self.lock:
            held, self.unspooled = self.unspooled, {}
        lost = 0
        for data in held.values():
            try:
                self.spool.add(data)
            except OSError:
                lost += 1
        if lost:
            self._count_dropped(lost, f"{lost} alerts held in memory are lost at exit: "
                                      "the spool still cannot take them")

    def _count_dropped(self, count: int, message: str) -> None:
        self.log.error(message)
        with self.status.lock:
            self.status.dropped += count
            self.status.changed = True


class Outbox:
    """Where an accepted message goes: into the spool, and its name to the delivery worker;
    with --print (print_only), to stdout in mbox format instead (no spool, no worker). The
    reading thread never waits for mail: when the spool cannot take a message, the worker
    holds it in memory (Deliverer.hold); beyond that bound it is lost, and counted."""

    def __init__(self, spool: Spool, status: Status, log: Log, print_only: bool) -> None:
        self.spool = spool
        self.status = status
        self.log = log
        self.print_only = print_only
        self.deliverer = None  # type: Optional[Deliverer]

    def open(self, config: Config) -> None:
        """Prepare the spool and start the delivery worker (OSError: the spool is unusable)."""
        if self.print_only:
            return
        self.spool.prepare()
        self.status.bad = self.spool.bad_count
        self.deliverer = Deliverer(self.spool, self.status, self.log, config)
        self.deliverer.start()

    def reconfigure(self, config: Config) -> None:
        if self.deliverer:
            self.deliverer.config = config

    def put(self, message: EmailMessage) -> None:
        if self.print_only:
            out = sys.stdout.buffer
            out.write(f"From {PROG} {time.asctime()}\n".encode())
            out.write(message.as_bytes(policy=WIRE_POLICY.clone(mangle_from_=True)))
            out.write(b"\n")
            out.flush()
            return
        data = message.as_bytes(policy=WIRE_POLICY)
        try:
            name = self.spool.add(data)
        except OSError as err:
            self._hold(data, err)
            return
        if self.deliverer:
            self.deliverer.submit(name)

    def _hold(self, data: bytes, err: OSError) -> None:
        """The spool cannot take an alert (disk full, read-only): the worker gets it in
        memory, so that this thread never waits for mail; beyond that bound it is lost."""
        if self.deliverer and self.deliverer.hold(data):
            self.log.error(f"cannot spool an alert ({err}); it is held in memory for delivery")
            return
        self.log.error(f"cannot spool an alert ({err}), and {UNSPOOLED_MAX} alerts or "
                       f"{UNSPOOLED_MAX_BYTES >> 20} MB are held in memory already: it is dropped")
        with self.status.lock:
            self.status.dropped += 1
            self.status.changed = True

    def close(self, timeout: int) -> None:
        """At exit: the worker gets a last chance to deliver (at least SHUTDOWN_DELIVERY
        seconds); what it cannot stays in the spool for the next start."""
        if self.deliverer:
            budget = max(timeout, SHUTDOWN_DELIVERY)
            self.deliverer.stop(time.monotonic() + budget)
            self.deliverer.join(budget + timeout + 1)


# ---------------------------------------------------------------------------------------
# Tamper alerts: the changes by which auditing, or this plugin, is switched off
# (docs/plugin.md, "Tamper alerts").

# Records that can tell of tampering: an event holding one is always read with auparse.
TAMPER_TYPES = ("CONFIG_CHANGE", "DAEMON_END", "DAEMON_ABORT")
TAMPER_OPS = ("remove_rule", "set")  # the CONFIG_CHANGE ops that classify() looks at
UNSET_ID = "4294967295"  # an auid or session that was never set ((unsigned) -1)
BURST_QUIET = 1.0  # seconds without another rule removal that end a burst (auditctl -D)...
BURST_MAX = 5.0  # ...and the longest a burst waits for its mail
MAINTENANCE_MAX = 900  # seconds: the longest window the role's marker can open
MAINTENANCE_EARLY = 2  # slack before the window's start (the two clocks' resolution)...
MAINTENANCE_LATE = 5  # ...and after its end (a signal handled a moment later)
LOST_POLL = 5.0  # seconds between two reads of the kernel's lost-events counter
EXIT_DRAIN = 1.0  # seconds to read what auditd still sends after its SIGTERM


class Record:
    """One record of an event: its type, its text, and each field raw and as auparse
    interprets it (uid numbers as names, hex as text)."""

    def __init__(self, record_type: str, text: str) -> None:
        self.type = record_type
        self.text = text
        self.raw = {}  # type: dict
        self.shown = {}  # type: dict

    def number(self, name: str) -> Optional[int]:
        value = self.raw.get(name, "")
        return int(value) if value.isdigit() else None


def _step(au, method: str) -> bool:
    """first_field/next_field and the like: whether the cursor moved (see _find on OSError)."""
    try:
        return bool(getattr(au, method)())
    except OSError:
        return False


def read_records(au) -> List[Record]:
    """Every record of the current event, with its fields (at most RECORDS_MAX records)."""
    records = []  # type: List[Record]
    au.first_record()
    while len(records) < RECORDS_MAX:
        try:
            record_type = au.get_type_name() or ""
        except LookupError:
            record_type = ""
        try:
            text = au.get_record_text() or ""
        except UnicodeDecodeError as err:
            text = err.object.decode("utf-8", "surrogateescape")
        except OSError:
            text = ""
        record = Record(record_type, text)
        if _step(au, "first_field"):
            while True:
                try:
                    name = au.get_field_name() or ""
                except (UnicodeDecodeError, OSError):
                    name = ""
                if name and name not in record.raw:
                    record.raw[name] = _field_str(au)
                    record.shown[name] = _field_value(au)
                if not _step(au, "next_field"):
                    break
        records.append(record)
        if not _step(au, "next_record"):
            break
    return records


class Tamper:
    """One tamper finding: its kind (X-Audit-Tamper), a short summary for the Subject, what
    changed and who did it, when (epoch seconds) and the audit event behind it."""

    def __init__(self, kind: str, summary: str, what: List[str], who: str, when: float) -> None:
        self.kind = kind
        self.summary = summary
        self.what = what
        self.who = who
        self.when = when
        self.event_id = ""  # TIME:SERIAL@NODE of the (first) event, if any
        self.records = []  # type: List[str]
        self.removed = Counter()  # type: Counter  # rules-removed: watched key -> rules
        self.others = 0  # rules-removed: rules without a watched key in the same burst
        self.token = None  # type: Optional[str]  # a verification's, see Spool.verify_token


def describe_actor(records: List[Record]) -> str:
    """Who made the change, from the SYSCALL record the kernel attaches when a rule makes
    the system call auditable, else from the change record itself."""
    source = next((r for r in records if r.type == "SYSCALL"), None) or \
        next((r for r in records if r.type in TAMPER_TYPES), Record("", ""))
    parts = []
    for name in ("auid", "uid", "ses", "tty", "exe", "comm", "pid", "ppid", "subj"):
        raw, shown = source.raw.get(name), source.shown.get(name, "")
        if raw is None or (name in ("auid", "ses") and raw == UNSET_ID):
            continue
        parts.append(f"{name}={shown}" if shown == raw or not raw.isdigit() else f"{name}={shown}({raw})")
    if "auid" not in source.raw or source.raw.get("auid") == UNSET_ID:
        parts.insert(0, "auid=unset (no login session)")
    return " ".join(parts) or "unknown"


def _who_short(records: List[Record]) -> str:
    """The actor for a Subject: the login user (auid), else the uid, else unknown."""
    source = next((r for r in records if r.type == "SYSCALL"), None) or \
        next((r for r in records if r.type in TAMPER_TYPES), Record("", ""))
    auid = source.raw.get("auid")
    if auid and auid != UNSET_ID:
        return source.shown.get("auid") or auid
    uid = source.raw.get("uid")
    return "uid " + (source.shown.get("uid") or uid) if uid else "unknown"


def weakened_setting(name: str, new: int, old: int) -> Optional[str]:
    """Why setting NAME from old to new lets events go unrecorded or unreported, or None.
    Tightening a setting, or setting it to what it was (augenrules does on every load),
    is no tampering."""
    if name == "audit_failure" and new == 0 and old != 0:
        return f"failure mode {old} -> 0 (silent): the kernel no longer reports lost events"
    if name == "audit_rate_limit" and new and (not old or new < old):
        return f"rate limit {old or 'none'} -> {new} messages/s: events beyond it are dropped"
    if name == "audit_backlog_limit" and new < old:
        return f"backlog limit {old} -> {new}: a smaller queue drops events sooner"
    if name == "audit_backlog_wait_time" and new < old:
        return f"backlog wait time {old} -> {new}: the kernel waits less before it drops events"
    return None


def change_op(au) -> str:
    """The op= of the current event's first record, cheaply: most CONFIG_CHANGE events
    load rules (add_rule), which are no tamper finding and need no further reading."""
    au.first_record()
    return _field_str(au).strip('"').replace(" ", "_") if _find(au, "op") else ""


def classify(records: List[Record], watched: List[str]) -> Optional[Tamper]:
    """The tamper finding of one event's records, or None. watched: the configured keys."""
    change = next((r for r in records if r.type in TAMPER_TYPES), None)
    if change is None or change.raw.get("res") in ("0", "failed"):
        return None
    op = change.raw.get("op", "").strip('"').replace(" ", "_")  # as change_op() reads it
    who = _who_short(records)
    found = None
    if change.type == "DAEMON_END":
        found = Tamper("auditd-stopped", f"auditd stopped by {who}",
                       ["auditd stopped (DAEMON_END): no events are recorded until it starts again"],
                       describe_actor(records), 0.0)
    elif change.type == "DAEMON_ABORT":
        found = Tamper("auditd-aborted", "auditd aborted",
                       ["auditd aborted (DAEMON_ABORT): no events are recorded until it starts again"],
                       describe_actor(records), 0.0)
    elif op == "remove_rule":
        keys = [k for k in change.shown.get("key", "").split("\x01") if k and k != "(null)"]
        found = Tamper("rules-removed", "", [], describe_actor(records), 0.0)
        found.removed.update(k for k in keys if k in watched)
        found.others = 0 if found.removed else 1
    elif op == "set" and change.number("audit_enabled") == 0:
        found = Tamper("audit-disabled", f"auditing disabled by {who}",
                       ["auditing disabled (audit_enabled 1 -> 0): the kernel records no events"],
                       describe_actor(records), 0.0)
    elif op == "set":
        old = change.number("old")
        reasons = [weakened_setting(name, change.number(name), old) for name in change.raw
                   if name.startswith("audit_") and change.number(name) is not None and old is not None]
        reasons = [reason for reason in reasons if reason]
        if reasons:
            found = Tamper("audit-setting", f"audit setting weakened by {who}", reasons,
                           describe_actor(records), 0.0)
    if found is not None:
        found.records = [r.text for r in records]
    return found


class RemovalBurst:
    """Rule removals that come together (auditctl -D, augenrules) folded into one finding:
    it is due once BURST_QUIET seconds pass without another one, or BURST_MAX after its first."""

    def __init__(self, first: Tamper, now: float) -> None:
        self.tamper = first
        self.started = self.last = now
        self.actors = [first.who]

    def add(self, removal: Tamper, now: float) -> None:
        self.tamper.removed.update(removal.removed)
        self.tamper.others += removal.others
        self.tamper.token = self.tamper.token or removal.token
        self.tamper.records.extend(removal.records[:max(0, RECORDS_MAX - len(self.tamper.records))])
        if not any(_same_actor(removal.who, actor) for actor in self.actors):
            self.actors.append(removal.who)
        self.last = now

    def due(self, now: float) -> bool:
        return now - self.last >= BURST_QUIET or now - self.started >= BURST_MAX

    def finding(self) -> Optional[Tamper]:
        """The finding, when a watched key went; a burst of other rules alone is none."""
        tamper = self.tamper
        if not tamper.removed:
            return None
        keys = ", ".join(sorted(tamper.removed))
        tamper.summary = f"audit rules removed ({keys})"
        counts = f"Rules removed: {sum(tamper.removed.values())} with a watched key, {tamper.others} others"
        tamper.what = [f"Removed keys: {keys}", counts]
        tamper.who = "; ".join(self.actors[:5])
        return tamper


def _same_actor(one: str, other: str) -> bool:
    """Whether two actor descriptions differ only in pid and ppid (auditctl run twice)."""
    return re.sub(r" p?pid=\S+", "", one) == re.sub(r" p?pid=\S+", "", other)


def sender_description(pid: int, uid: int) -> str:
    """The sender of a signal: its pid and uid, and what /proc still tells of it (it may
    have exited: kill(1) does at once)."""
    parts = [f"pid={pid}", f"uid={_user_name(uid)}({uid})"]
    base = f"/proc/{pid}"
    try:
        parts.append("exe=" + os.readlink(base + "/exe"))
        with open(base + "/loginuid") as handle:
            auid = handle.read().strip()
        if auid != UNSET_ID:
            parts.insert(0, f"auid={_user_name(int(auid))}({auid})")
        with open(base + "/sessionid") as handle:
            session = handle.read().strip()
        if session != UNSET_ID:
            parts.append(f"ses={session}")
    except (OSError, ValueError):
        parts.append("(the sender has exited)")
    return " ".join(escape_text(part, FIELD_MAX) for part in parts)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return str(uid)


class KernelAuditStatus:
    """The kernel's audit status, as `auditctl -s` prints it, read over netlink (AUDIT_GET);
    needs CAP_AUDIT_CONTROL (auditd's plugins run as root)."""

    NETLINK_AUDIT = 9
    AUDIT_GET = 1000
    NLMSG_ERROR = 2
    NLM_F_REQUEST = 1
    HEADER = struct.Struct("=IHHII")  # struct nlmsghdr
    FIELDS = ("mask", "enabled", "failure", "pid", "rate_limit", "backlog_limit", "lost", "backlog")

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, self.NETLINK_AUDIT)
        self.sock.settimeout(1.0)
        self.seq = 0

    def read(self) -> dict:
        self.seq += 1
        self.sock.send(self.HEADER.pack(self.HEADER.size, self.AUDIT_GET, self.NLM_F_REQUEST, self.seq, 0))
        while True:
            reply = self.sock.recv(65536)
            _length, kind, _flags, seq, _pid = self.HEADER.unpack_from(reply)
            if seq != self.seq:
                continue
            if kind == self.NLMSG_ERROR:
                code = -struct.unpack_from("=i", reply, self.HEADER.size)[0]
                raise OSError(code, os.strerror(code))
            return dict(zip(self.FIELDS, struct.unpack_from("=8I", reply, self.HEADER.size)))


class SignalWatcher(threading.Thread):
    """HUP, TERM and INT stay blocked in every thread; this one takes them with sigwaitinfo,
    which, unlike a handler, tells who sent each (a kill of the plugin is a tamper finding).
    It wakes the main loop through a pipe (wake_fd); the main loop then calls take(), which
    turns what came into requests: a reload (HUP), or the stop (TERM, INT) and its sender."""

    def __init__(self) -> None:
        super().__init__(name="signals", daemon=True)
        self.received = queue.Queue()  # type: queue.Queue
        self.wake_fd = -1  # the pipe's end the main loop waits on (start() opens it)
        self.wake_write = -1
        self.stop_requested = False
        self.stop_sender = None  # type: Optional[tuple]  # (pid, uid) of the SIGTERM's sender
        self.stop_time = 0.0

    def start(self) -> None:
        """Block the signals (one that came since start-up is taken now) and start taking
        them. Before any other thread or child: they inherit the mask."""
        signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)  # main() did, a test may not
        self.wake_fd, self.wake_write = os.pipe()
        os.set_blocking(self.wake_fd, False)
        os.set_blocking(self.wake_write, False)
        super().start()

    def run(self) -> None:
        while True:
            self.received.put(signal.sigwaitinfo(HELD_SIGNALS))
            try:
                os.write(self.wake_write, b"s")
            except BlockingIOError:  # the pipe is full: the main loop is awake anyway
                pass

    def take(self) -> bool:
        """wake_fd woke the main loop: note the signals received since the last call.
        True when a HUP came (reload the config); a stop sets stop_requested."""
        try:
            os.read(self.wake_fd, 512)
        except BlockingIOError:
            pass
        reload = False
        while True:
            try:
                info = self.received.get_nowait()
            except queue.Empty:
                return reload
            if info.si_signo == signal.SIGHUP:
                reload = True
            elif not self.stop_requested:
                self.stop_requested = True
                self.stop_sender = (info.si_pid, info.si_uid)
                self.stop_time = time.time()


class TamperWatch:
    """Turns tamper records, the end of the plugin and the kernel's lost-events counter into
    findings, and hands each to report(tamper) (the plugin rate-limits and mails it) unless
    it is the role's own work: then it is logged and counted, not mailed. With --print
    (print_only) no finding carries a verification token, and none is the role's work."""

    def __init__(self, report, spool: Spool, status: Status, print_only: bool, under_auditd: bool,
                 log: Log) -> None:
        self.report = report
        self.spool = spool
        self.status = status
        self.print_only = print_only
        self.under_auditd = under_auditd
        self.log = log
        self.burst = None  # type: Optional[RemovalBurst]
        self.auditd_ended = False  # a DAEMON_END or DAEMON_ABORT came
        self.parent = os.getppid()
        self.kernel = None  # type: Optional[KernelAuditStatus]
        self.lost = None  # type: Optional[int]
        self.next_poll = 0.0
        if under_auditd:
            self._open_kernel_status()

    def _open_kernel_status(self) -> None:
        try:
            self.kernel = KernelAuditStatus()
            self.lost = self.kernel.read()["lost"]
        except OSError as err:
            self.kernel = None
            self.log.warning(f"cannot read the kernel's audit status (lost events are not reported): {err}")

    def read(self, au, rules: List[Rule]) -> None:
        """The tamper finding of this event's records, if any, stamped with its time and id."""
        records = read_records(au)
        finding = classify(records, [k for rule in rules for k in rule.keys])
        if finding is None:
            return
        stamp = timestamp(au)
        finding.when = stamp.sec + stamp.milli / 1000.0
        node = next((r.raw["node"] for r in records if "node" in r.raw), HOSTNAME)
        finding.event_id = f"{stamp.sec}.{stamp.milli:03d}:{stamp.serial}@{node}"
        ppid = next((r.raw["ppid"] for r in records if "ppid" in r.raw), "")
        finding.token = self.spool.verify_token(ppid, self.log) if ppid and not self.print_only else None
        self.observe(finding)

    def suppressed(self, finding: Tamper) -> bool:
        """Whether a finding is the role's own work: its time lies in the window of the
        maintenance marker (Spool.maintenance). Then it is logged and counted, not mailed."""
        if self.print_only:
            return False
        window = self.spool.maintenance(self.log)
        if window is None or not window[0] - MAINTENANCE_EARLY <= finding.when <= window[1] + MAINTENANCE_LATE:
            return False
        self.log.info(f"tamper finding {finding.kind} during the role's maintenance, not mailed: "
                      f"{finding.summary or ', '.join(sorted(finding.removed))}")
        with self.status.lock:
            self.status.tamper_suppressed += 1
            self.status.changed = True
        return True

    def observe(self, tamper: Tamper) -> None:
        """A finding from the audit stream."""
        if tamper.kind in ("auditd-stopped", "auditd-aborted"):
            self.auditd_ended = True
        if self.suppressed(tamper):
            return
        if tamper.kind != "rules-removed":
            self.report(tamper)
            return
        now = time.monotonic()
        if self.burst is None:
            self.burst = RemovalBurst(tamper, now)
        else:
            self.burst.add(tamper, now)

    def tick(self, force: bool = False) -> None:
        """Mail a burst that is due (all of them when forced, at exit); read the lost counter."""
        now = time.monotonic()
        if self.burst is not None and (force or self.burst.due(now)):
            finding, self.burst = self.burst.finding(), None
            if finding is not None:
                self.report(finding)
        if self.kernel is not None and now >= self.next_poll:
            self.next_poll = now + LOST_POLL
            self._check_lost()

    def _check_lost(self) -> None:
        try:
            status = self.kernel.read()
        except OSError as err:
            self.log.warning(f"cannot read the kernel's audit status: {err}")
            return
        lost, before = status["lost"], self.lost
        self.lost = lost
        if before is None or lost <= before:  # a smaller count: auditctl --reset-lost
            return
        finding = Tamper("events-lost", f"the kernel lost {lost - before} audit events",
                         [(f"the kernel lost {lost - before} events (lost counter {before} -> {lost}); "
                           f"backlog_limit {status['backlog_limit']}, rate_limit {status['rate_limit']}, "
                           f"backlog {status['backlog']}")], "the kernel (no actor is recorded)", time.time())
        if not self.suppressed(finding):
            self.report(finding)

    def at_exit(self, stop: Optional[tuple], when: float) -> None:
        """The plugin ends: stop is (pid, uid) of the SIGTERM's sender, or None at EOF. Only
        when auditd runs the plugin: a test or a replay may stop it as it likes."""
        self.tick(force=True)
        if not self.under_auditd or self.auditd_ended:
            return  # auditd's own DAEMON_END told it already
        if stop is not None and stop[0] != self.parent:
            finding = Tamper("plugin-stopped", "the alert plugin was stopped",
                             [("the alert plugin got SIGTERM from a process other than auditd: "
                              "no alerts are mailed until auditd starts it again")],
                             sender_description(*stop), when)
        elif stop is not None:
            finding = Tamper("plugin-stopped", "auditd stopped the alert plugin",
                             [("auditd stopped the alert plugin without stopping itself: its "
                              "plugins.d entry was removed or deactivated and auditd reloaded")],
                             sender_description(*stop), when)
        elif os.getppid() != self.parent:
            finding = Tamper("auditd-stopped", "auditd ended without a word",
                             [("auditd ended without DAEMON_END (killed with SIGKILL, or it "
                              "crashed): no events are recorded until it starts again")],
                             "unknown (auditd could not say)", when)
        else:
            finding = Tamper("plugin-stopped", "auditd closed the alert plugin's input",
                             ["auditd closed the plugin's input without a signal"], "auditd", when)
        if not self.suppressed(finding):
            self.report(finding)


def compose_tamper(config: Config, rule: Rule, tamper: Tamper) -> EmailMessage:
    """The mail for one tamper finding: what changed, who did it, the records behind it."""
    subject = f"[audit] tamper: {header_text(tamper.summary, 120)} on {header_text(HOSTNAME, SUBJECT_PART_MAX)}"
    message = _new_message(config, rule.to, subject)
    message["X-Audit-Key"] = TAMPER_RULE
    message["X-Audit-Rule"] = rule.name
    message["X-Audit-Tamper"] = tamper.kind
    if tamper.event_id:
        message["X-Audit-Event"] = tamper.event_id
    if tamper.token:
        message["X-Audit-Verify"] = tamper.token
    lines = [f"Auditing on {HOSTNAME} was weakened or switched off ({tamper.kind}).", ""]
    lines += [escape_text(line, BODY_LINE_MAX) for line in tamper.what]
    lines += [
        "",
        "{:<9} {}".format("who:", escape_text(tamper.who, BODY_LINE_MAX - 10)),
        "{:<9} {}".format("time:", time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(tamper.when))),
        "{:<9} {}".format("event:", tamper.event_id or "-"),
    ]
    if tamper.records:
        lines += ["", "Raw records (control characters escaped, long records cut):"]
        lines += _record_lines(tamper.records)
    _set_body(message, lines)
    return message


# ---------------------------------------------------------------------------------------
# Rate limits: at most max_mails mails per rule and window, then one digest.

class Window:
    """A rule's current rate-limit window."""

    def __init__(self, rule: Rule, end: float) -> None:
        self.rule = rule  # as it was when the window began: a reload may drop it
        self.end = end
        self.sent = 0
        self.held = Held()


class Digest:
    """What one rule held back in one window, due to be mailed."""

    def __init__(self, rule: Rule, held: Held, window_end: float) -> None:
        self.rule = rule
        self.held = held
        self.window_end = window_end


class RateLimiter:
    """One window per rule (it starts with the first event after the last one ended): the
    first max_mails events are admitted, the rest are held back, counted by group, and
    reported in one digest when the window ends. Knows nothing of events or mail."""

    def __init__(self) -> None:
        self.windows = {}  # type: dict  # rule name -> its Window
        self.due = []  # type: List[Digest]  # of windows that admit() found ended

    def admit(self, rule: Rule, group: Tuple[str, str, str], now: float) -> bool:
        """Whether an event of the rule may be mailed now; else it is held back under group
        (subject, action, object)."""
        window = self.windows.get(rule.name)
        if window is None or now >= window.end:
            if window is not None and window.held.total:
                self.due.append(Digest(rule, window.held, window.end))
            window = self.windows[rule.name] = Window(rule, now + rule.window)
        if window.sent < rule.max_mails:
            window.sent += 1
            return True
        held = window.held
        if not held.total:
            held.first = now
        held.total += 1
        shown = (escape_text(group[0], 60), escape_text(group[1], 60), escape_text(group[2], 120))
        if shown not in held.groups and len(held.groups) >= MAX_DIGEST_GROUPS:
            shown = ("(other)", "(other)", "(other)")
        held.groups[shown] += 1
        return False

    def digests(self, rules: List[Rule], now: float, force: bool = False) -> List[Digest]:
        """The digests due: those admit() found, and one for each window that ended (every
        window, when forced: at exit). Ended windows are forgotten, and so are the windows
        of rules that are no longer among rules, after their digest."""
        due, self.due = self.due, []
        current = {rule.name: rule for rule in rules}
        for name, window in list(self.windows.items()):
            ended = now >= window.end
            rule = current.get(name)
            if window.held.total and (ended or force or rule is None):
                due.append(Digest(rule or window.rule, window.held, min(now, window.end)))
                window.held = Held()
            if ended or rule is None:
                del self.windows[name]
        return due

    def row(self, rule: Rule) -> dict:
        """The rule's status.json row."""
        window = self.windows.get(rule.name)
        return {"keys": rule.keys, "window_end": window.end if window else None,
                "sent": window.sent if window else 0, "held": window.held.total if window else 0}


# ---------------------------------------------------------------------------------------
# Framing the input: the stream comes in chunks of any size; the sifter takes whole lines.

class LineFramer:
    """Cuts the chunks read from stdin into whole lines and hands them on (`lines(bytes)`):
    a line that a chunk's end cuts waits for its rest; a line longer than MAX_LINE is dropped
    (no audit record is: a longer one, from a saved log of unknown origin, would be buffered
    whole by auparse) and counted in Status.long_lines; a NUL byte becomes ^@."""

    def __init__(self, lines, status: Status, log: Log) -> None:
        self.lines = lines
        self.status = status
        self.log = log
        self.partial = b""  # the start of a line whose end has not come yet
        self.skipping = False  # inside a line longer than MAX_LINE: drop up to its end

    def feed(self, data: bytes) -> None:
        """One chunk, as read."""
        if b"\0" in data:
            # auparse ends a record at a NUL byte, which would hide a key= after it; the
            # kernel never writes one raw, so only hostile input has it: show it as ^@.
            data = data.replace(b"\0", b"^@")
        if self.skipping:
            end = data.find(b"\n")
            if end < 0:
                return
            self.skipping = False
            data = data[end + 1:]
        last = data.rfind(b"\n")
        if last < 0:
            self._keep_partial(data)
            return
        start = 0
        if self.partial:  # the line begun in an earlier chunk ends here
            start = data.find(b"\n") + 1
            self._hand_on(self.partial + data[:start])
            self.partial = b""
        self._hand_on(data[start:last + 1])  # the chunk itself when it is all whole lines
        self._keep_partial(data[last + 1:])

    def finish(self) -> None:
        """End of input: a last line without its newline still counts."""
        if self.partial:
            self._hand_on(self.partial + b"\n")
            self.partial = b""

    def _hand_on(self, lines: bytes) -> None:
        """Hand on complete lines, leaving out those longer than MAX_LINE."""
        if len(lines) > MAX_LINE:  # else none of them can be that long
            kept = [line for line in lines.split(b"\n")[:-1] if len(line) <= MAX_LINE]
            self._count_long_lines(lines.count(b"\n") - len(kept))
            lines = b"".join(line + b"\n" for line in kept)
        if lines:
            self.lines(lines)

    def _keep_partial(self, data: bytes) -> None:
        if len(self.partial) + len(data) > MAX_LINE:
            self.partial = b""
            self.skipping = True
            self._count_long_lines(1)
        else:
            self.partial += data

    def _count_long_lines(self, count: int) -> None:
        """One log line for the first; status.json (and the log at exit) has the count."""
        if not count:
            return
        if not self.status.long_lines:
            self.log.warning(f"dropped a line longer than {MAX_LINE} bytes (no audit record is); "
                             "the others are only counted (long_lines in status.json)")
        self.status.long_lines += count
        self.status.changed = True


# ---------------------------------------------------------------------------------------
# Sifting the audit stream: only the records of events that may match reach auparse.
#
# auparse groups records into events by their time stamp (node, seconds, milliseconds,
# serial) and ends an event at a record of a "last record" type (EOE, PROCTITLE, the
# single-record user and daemon types), or when a record at least EOE_TIMEOUT seconds
# newer is added (or at feed_age_events, or flush_feed). The sifter groups the same way,
# with the same rules, so that auparse gets every record of every event that holds a
# candidate record (a key field that may hold a watched key, or a type of
# ALWAYS_CANDIDATE_TYPES), each event's records in stream order, and nothing else in the
# common case.
#
# Most of the stream is cut with one regex in C: a run of events whose records are
# contiguous, end with a last-record type and hold no candidate line is dropped whole.
# What that regex cannot vouch for (records of events interleaved with others, an event
# that does not end, a line that is not a plain record) goes line by line through the
# exact grouping below; a line that cannot be read as a record is fed as it is.

# Events holding a record of one of these types always reach auparse, whatever their key:
# the tamper rule's records (extend TAMPER_TYPES to add one).
ALWAYS_CANDIDATE_TYPES = tuple(kind.encode() for kind in TAMPER_TYPES)
# The record types after which auparse 3.0.9 ends an event at once (probed by feeding it
# each type it knows followed by a second record of the same time stamp). LOGIN is left
# out: newer versions let a syscall record follow it. A type missing here only costs
# speed (its event waits for EOE or the timeout); one too many would cut events apart.
LAST_RECORD_TYPES = frozenset(b"""
    EOE PROCTITLE KERNEL USER USER_AUTH USER_ACCT USER_MGMT CRED_ACQ CRED_DISP USER_START
    USER_END USER_AVC USER_CHAUTHTOK USER_ERR CRED_REFR USYS_CONFIG USER_LOGIN USER_LOGOUT
    ADD_USER DEL_USER ADD_GROUP DEL_GROUP DAC_CHECK CHGRP_ID TEST TRUSTED_APP
    USER_SELINUX_ERR USER_CMD USER_TTY CHUSER_ID GRP_AUTH SYSTEM_BOOT SYSTEM_SHUTDOWN
    SYSTEM_RUNLEVEL SERVICE_START SERVICE_STOP GRP_MGMT GRP_CHAUTHTOK MAC_CHECK ACCT_LOCK
    ACCT_UNLOCK USER_DEVICE SOFTWARE_UPDATE DAEMON_START DAEMON_END DAEMON_ABORT
    DAEMON_CONFIG DAEMON_ROTATE DAEMON_RESUME DAEMON_ACCEPT DAEMON_CLOSE DAEMON_ERR
    MAC_UNLBL_ALLOW MAC_CIPSOV4_ADD MAC_CIPSOV4_DEL MAC_MAP_ADD MAC_MAP_DEL MAC_IPSEC_ADDSA
    MAC_IPSEC_DELSA MAC_IPSEC_ADDSPD MAC_IPSEC_DELSPD MAC_IPSEC_EVENT MAC_UNLBL_STCADD
    MAC_UNLBL_STCDEL MAC_CALIPSO_ADD MAC_CALIPSO_DEL ANOM_LOGIN_FAILURES ANOM_LOGIN_TIME
    ANOM_LOGIN_SESSIONS ANOM_LOGIN_ACCT ANOM_LOGIN_LOCATION ANOM_MAX_DAC ANOM_MAX_MAC
    ANOM_AMTU_FAIL ANOM_RBAC_FAIL ANOM_RBAC_INTEGRITY_FAIL ANOM_CRYPTO_FAIL ANOM_ACCESS_FS
    ANOM_EXEC ANOM_MK_EXEC ANOM_ADD_ACCT ANOM_DEL_ACCT ANOM_MOD_ACCT ANOM_ROOT_TRANS
    ANOM_LOGIN_SERVICE ANOM_LOGIN_ROOT ANOM_ORIGIN_FAILURES ANOM_SESSION RESP_ANOMALY
    RESP_ALERT RESP_KILL_PROC RESP_TERM_ACCESS RESP_ACCT_REMOTE RESP_ACCT_LOCK_TIMED
    RESP_ACCT_UNLOCK_TIMED RESP_ACCT_LOCK RESP_TERM_LOCK RESP_SEBOOL RESP_EXEC RESP_SINGLE
    RESP_HALT RESP_ORIGIN_BLOCK RESP_ORIGIN_BLOCK_TIMED RESP_ORIGIN_UNBLOCK_TIMED
    USER_ROLE_CHANGE ROLE_ASSIGN ROLE_REMOVE LABEL_OVERRIDE LABEL_LEVEL_CHANGE
    USER_LABELED_EXPORT USER_UNLABELED_EXPORT DEV_ALLOC DEV_DEALLOC FS_RELABEL
    USER_MAC_POLICY_LOAD ROLE_MODIFY USER_MAC_CONFIG_CHANGE USER_MAC_STATUS CRYPTO_TEST_USER
    CRYPTO_PARAM_CHANGE_USER CRYPTO_LOGIN CRYPTO_LOGOUT CRYPTO_KEY_USER CRYPTO_FAILURE_USER
    CRYPTO_REPLAY_USER CRYPTO_SESSION CRYPTO_IKE_SA CRYPTO_IPSEC_SA VIRT_CONTROL
    VIRT_RESOURCE VIRT_MACHINE_ID VIRT_INTEGRITY_CHECK VIRT_CREATE VIRT_DESTROY
    VIRT_MIGRATE_IN VIRT_MIGRATE_OUT""".split())
# The reference path: every line goes to auparse, as before the sifter (the differential
# test and `make bench` set it; benchmarks/plugin_feed_everything.py).
FEED_EVERYTHING = False
SIFT_BUFFER_MAX = 2 << 20  # bytes of undecided events held; beyond, they are fed to auparse
SIFT_OPEN_MAX = 10000  # events open at once (held or passing through); beyond, the oldest goes
CARRY_MAX = 256 << 10  # bytes of an unfinished event at the end of a chunk kept for the next
# An event whose first record loads a rule (auditctl -a/-w, augenrules --load, one per rule):
# never an alert (its first record is of a TAMPER_TYPES type) nor a tamper finding (its op
# is no TAMPER_OPS), so it need not reach auparse. ` op=` is the op field itself: the kernel
# hex-encodes a value holding a space, and the enriched part after \x1d is not looked at.
RULE_LOAD_RE = re.compile(rb"(?:node=[^ \n]+ )?type=CONFIG_CHANGE msg=audit\([0-9.:]+\):[^\n\x1d]*? op=add_rule ")
# One record's head as auparse reads it: [node=N ]type=T msg=audit(SEC.MILLI:SERIAL):
RECORD_HEAD_RE = re.compile(rb"(?:node=([^ \n]+) )?type=([^ \n]+) msg=audit\(([0-9]+)\.([0-9]+):([0-9]+)\):")


def _alternation(words) -> bytes:
    """A regex for exactly these words, as a trie: a word that is not one of them fails at
    its first byte instead of being compared with each."""
    branches, optional = {}, False
    for word in words:
        if word:
            branches.setdefault(word[:1], set()).add(word[1:])
        else:
            optional = True
    if not branches:
        return b""
    parts = [re.escape(first) + _alternation(rest) for first, rest in sorted(branches.items())]
    if len(parts) == 1 and not optional:
        return parts[0]
    return b"(?:" + b"|".join(parts) + b")" + (b"?" if optional else b"")


# A record of ALWAYS_CANDIDATE_TYPES: found by its needle, checked at the line's start.
ALWAYS_CANDIDATE_RE = re.compile(rb"(?:^|\n)(?:node=[^ \n]+ )?type=" + _alternation(ALWAYS_CANDIDATE_TYPES)
                                 + rb" msg=audit\([0-9]+\.[0-9]+:([0-9]+)\)")
ALWAYS_CANDIDATE_NEEDLES = tuple(b"type=" + kind + b" msg=audit(" for kind in ALWAYS_CANDIDATE_TYPES)


def _event_pattern(last_types, excluded_types) -> bytes:
    """A regex for one event whose records are contiguous and whose last record ends it
    (by auparse's rule): either a lone record of a last-record type, or records of one time
    stamp and node, of which only the last is of such a type. No record may be of an
    excluded type."""
    last = _alternation(set(last_types) - set(excluded_types))
    other = b"(?!" + _alternation(excluded_types) + b" )[^ \n]+" if excluded_types else b"[^ \n]+"
    stamp = rb"[0-9]+\.[0-9]+:[0-9]+"
    lone = rb"(?:node=[^ \n]+ )?type=" + last + rb" msg=audit\(" + stamp + rb"\):.*\n"
    first = rb"(?P<node>(?:node=[^ \n]+ )?)type=" + other + rb" msg=audit\((?P<stamp>" + stamp + rb")\):.*\n"
    same = rb"(?P=node)type=" + other + rb" msg=audit\((?P=stamp)\):.*\n"
    end = rb"(?P=node)type=" + last + rb" msg=audit\((?P=stamp)\):.*\n"
    return b"(?:" + lone + b"|" + first + b"(?:" + same + b")*?" + end + b")"


class _Open:
    """An event the sifter has seen records of and auparse has not ended yet: held (its
    records wait for the decision) or passing (it is a candidate: records go to auparse)."""

    __slots__ = ("records", "sec", "size")

    def __init__(self, sec: int) -> None:
        self.sec = sec
        self.records = []  # type: Optional[List[bytes]]  # None once passing
        self.size = 0


class EventSifter:
    """Takes the stream in chunks of whole lines; hands auparse (`feed`) the lines of every
    event that may match (each event's in stream order; held ones when their event turns
    out to be a candidate) and calls `mark(serial)` for each of its candidate records. `age(now)` mirrors auparse's feed_age_events, `finish()` its
    flush_feed: call them just before those."""

    def __init__(self, pattern: "re.Pattern", feed, mark) -> None:
        self.pattern = pattern
        self.feed = feed
        self.mark = mark
        self.open = OrderedDict()  # type: OrderedDict  # (node, sec, milli, serial) -> _Open
        self.oldest = 0  # no open event is older (seconds): aging looks no further before
        self.held = 0  # bytes of records held by open events
        self.carry = b""  # an unfinished event cut by the end of the last chunk
        self.fallbacks = 0  # times the buffer was full and held records went to auparse
        self.run_re = re.compile(b"(?:" + _event_pattern(LAST_RECORD_TYPES, ALWAYS_CANDIDATE_TYPES) + b")*")
        self.event_re = re.compile(_event_pattern(LAST_RECORD_TYPES, ()))
        self.tail_re = re.compile(rb"(?P<node>(?:node=[^ \n]+ )?)type=[^ \n]+ msg=audit\((?P<stamp>[0-9]+\.[0-9]+:[0-9]+)\):.*\n"
                                  rb"(?:(?P=node)type=[^ \n]+ msg=audit\((?P=stamp)\):.*\n)*\Z")

    def sift(self, data: bytes) -> None:
        """One chunk of whole lines (each ending in \\n)."""
        if self.carry:
            data, self.carry = self.carry + data, b""
        out = []  # type: List[bytes]
        marks = [data.rfind(b"\n", 0, m.start()) + 1 for m in self.pattern.finditer(data)]
        end, pos, next_mark = len(data), 0, 0
        fed_from = fed_to = 0  # contiguous ended events to feed, sliced once (a flood)
        while pos < end:
            if not self.open:
                if next_mark < len(marks) and marks[next_mark] < pos:
                    next_mark = bisect_left(marks, pos, next_mark)
                limit = marks[next_mark] if next_mark < len(marks) else end
                if limit > pos:
                    pos = self.run_re.match(data, pos, limit).end()  # dropped: no candidate in it
                    if pos == end:
                        break
                found = self.event_re.match(data, pos)
                if found:
                    stop = found.end()
                    if self._is_candidate(data, pos, stop, marks, next_mark):
                        if pos != fed_to:
                            if fed_to:
                                out.append(data[fed_from:fed_to])
                            fed_from = pos
                        fed_to = stop
                    pos = stop
                    continue
                if end - pos <= CARRY_MAX and self.tail_re.match(data, pos):
                    self.carry = data[pos:]  # its end comes with the next chunk (or tick)
                    break
            if fed_to:
                out.append(data[fed_from:fed_to])
                fed_from = fed_to = 0
            pos = self._line(data, pos, out)
        if fed_to:
            out.append(data[fed_from:fed_to])
        if out:
            # auparse hands over an ended event when it reads the next line; an empty one
            # (which it skips) makes that now instead of at the next chunk or tick.
            out.append(b"\n")
            self.feed(b"".join(out))

    def _is_candidate(self, data: bytes, start: int, stop: int, marks: List[int], next_mark: int) -> bool:
        """Whether a contiguous, ended event holds a candidate line; if so its serial is noted.
        A rule load is none, whatever keys it names (Plugin.handle passes it over)."""
        if not (next_mark < len(marks) and marks[next_mark] < stop) and not any(
                data.find(needle, start, stop) >= 0 for needle in ALWAYS_CANDIDATE_NEEDLES):
            return False
        if RULE_LOAD_RE.match(data, start):
            return False
        self.mark(int(RECORD_HEAD_RE.match(data, start).group(5)))
        return True

    def _line(self, data: bytes, pos: int, out: List[bytes]) -> int:
        """Group one line exactly as auparse would; returns where the next line starts."""
        stop = data.index(b"\n", pos) + 1
        line = data[pos:stop]
        head = RECORD_HEAD_RE.match(line)
        if head is None:  # not a record the sifter can read: auparse gets it as before
            out.append(line)
            return stop
        node, kind, sec, milli, serial = head.groups()
        key = (node, int(sec), int(milli), int(serial))
        sec = key[1]
        candidate = kind in ALWAYS_CANDIDATE_TYPES or self.pattern.search(line) is not None
        ended_passing = self._age_open(sec) if self.open and sec >= self.oldest + EOE_TIMEOUT else False
        event = self.open.get(key)
        if event is None:
            if not self.open or sec < self.oldest:
                self.oldest = sec
            event = self.open[key] = _Open(sec)
            if len(self.open) > SIFT_OPEN_MAX:
                self._evict(out)
        if candidate:
            self.mark(key[3])
        if event.records is not None and (candidate or ended_passing):
            # It may match (or this record must reach auparse to end an event there, as
            # it would without the sifter): its held records go first, then all of it.
            out.extend(event.records)
            self.held -= event.size
            event.records = None
        if event.records is None:
            out.append(line)
        else:
            event.records.append(line)
            event.size += len(line)
            self.held += len(line)
            if self.held > SIFT_BUFFER_MAX:
                self._overflow(out)
        if kind in LAST_RECORD_TYPES:
            self._close(key)
        return stop

    def _age_open(self, sec: int) -> bool:
        """auparse ends every event at least EOE_TIMEOUT seconds older than a record it adds.
        True when a passing event ended so: the record must then reach auparse too."""
        ended_passing = False
        for key in [k for k, event in self.open.items() if event.sec + EOE_TIMEOUT <= sec]:
            ended_passing = self._close(key) or ended_passing
        self.oldest = min((event.sec for event in self.open.values()), default=0)
        return ended_passing

    def _close(self, key) -> bool:
        """auparse ended the event: held records are dropped. True if it was passing."""
        event = self.open.pop(key)
        if event.records is None:
            return True
        self.held -= event.size
        return False

    def _overflow(self, out: List[bytes]) -> None:
        """The buffer is full: every held event goes to auparse and passes from now on."""
        self.fallbacks += 1
        for event in self.open.values():
            if event.records is not None:
                out.extend(event.records)
                event.records = None
        self.held = 0

    def _evict(self, out: List[bytes]) -> None:
        """Too many open events: the oldest one's held records go to auparse and the sifter
        forgets it (its later records are grouped anew: they cannot hide a candidate)."""
        _key, event = self.open.popitem(last=False)
        if event.records is not None:
            out.extend(event.records)
            self.held -= event.size

    def age(self, now: int) -> None:
        """The timer: auparse ends events that got no record for EOE_TIMEOUT seconds of the
        clock; an unfinished event carried over is sifted first (no more data came)."""
        out = []  # type: List[bytes]
        if self.carry:
            data, self.carry = self.carry, b""
            pos = 0
            while pos < len(data):
                pos = self._line(data, pos, out)
        if self.open:
            self._age_open(now)
        if out:
            self.feed(b"".join(out))

    def finish(self) -> None:
        """End of input: auparse ends every event; held ones never matched."""
        self.age(0)
        self.open.clear()
        self.held = 0


# ---------------------------------------------------------------------------------------
# The plugin: reading, matching, limiting, accepting.


def key_pattern(rules: List[Rule], tamper: bool = False) -> "re.Pattern":
    """A bytes regex that finds a record whose key field may hold one of the keys: quoted
    (`key="k"`) or hex-encoded (several keys joined by \\x01, or a key with special
    characters). False positives only cost a normalization; the exact test comes later.
    The records of TAMPER_TYPES are found apart, whether `tamper` is on or not
    (ALWAYS_CANDIDATE_TYPES: EventSifter, mark_candidates): as an alternative in this regex
    they would cost it its literal prefix `key=`, and the scan would read every byte (1.9 s
    instead of 0.08 s over the 337 MB bench corpus)."""
    del tamper  # see above
    keys = sorted({k for rule in rules for k in rule.keys})
    quoted = b"|".join(re.escape(k.encode()) for k in keys)
    hexed = b"|".join(k.encode().hex().upper().encode() for k in keys)
    return re.compile(b'key=(?:"(?:' + quoted + b')"|[0-9A-F]*?(?:' + hexed + b'))')


def mark_candidates(pattern: "re.Pattern", lines: bytes, mark) -> None:
    """The reference path's scan (FEED_EVERYTHING): `mark(serial)` for each record whose key
    looks watched and each record of ALWAYS_CANDIDATE_TYPES, as the sifter marks them."""
    for match in pattern.finditer(lines):
        line = lines.rfind(b"\n", 0, match.start()) + 1
        found = SERIAL_RE.match(lines, line)
        if found:
            mark(int(found.group(1)))
    for needle in ALWAYS_CANDIDATE_NEEDLES:
        at = lines.find(needle)
        while at >= 0:
            line = lines.rfind(b"\n", 0, at) + 1
            found = ALWAYS_CANDIDATE_RE.match(lines, line - 1 if line else 0)
            if found:
                mark(int(found.group(1)))
            at = lines.find(needle, at + 1)


class Plugin:
    """The main thread: reads the audit stream (LineFramer, then EventSifter, then auparse),
    matches events to rules, and hands over: tamper events to the TamperWatch, alerts and
    findings through the RateLimiter to the Outbox. SignalWatcher and StatusFile serve the
    main loop."""

    def __init__(self, config: Config, log: Log, print_only: bool, arg_keys: List[str]) -> None:
        self.config = config
        self.log = log
        self.print_only = print_only
        self.arg_keys = arg_keys
        self.pattern = key_pattern(config.rules, config.tamper is not None)
        self.candidates = OrderedDict()  # type: OrderedDict  # serial -> None
        self.limiter = RateLimiter()
        self.status = Status()
        self.spool = Spool(config.spool_dir)
        self.outbox = Outbox(self.spool, self.status, log, print_only)
        self.status_file = StatusFile(self.spool, self.status, log, print_only)
        self.signals = SignalWatcher()
        # auditd hands its plugins one end of a socket pair; a test or `cat log |` a pipe.
        self.under_auditd = not print_only and stat.S_ISSOCK(_fstat_mode(0))
        self.tamper = TamperWatch(self.report_tamper, self.spool, self.status, print_only,
                                  self.under_auditd, log)
        self.au = auparse.AuParser(auparse.AUSOURCE_FEED, None)
        if hasattr(self.au, "set_eoe_timeout"):
            self.au.set_eoe_timeout(EOE_TIMEOUT)
        # auparse takes a plain function, not a bound method. The fast path is inlined:
        # most events are rejected by a dict lookup on their serial.
        candidates = self.candidates
        ready = auparse.AUPARSE_CB_EVENT_READY

        def on_event(au, cb_type, _user_data):
            try:
                if cb_type == ready and candidates:
                    stamp = timestamp(au)
                    if stamp is not None and stamp.serial in candidates:
                        self.on_candidate(au)
            except Exception as err:  # noqa: BLE001 - raised into auparse, it breaks feed()
                self.log.error(f"event skipped: {type(err).__name__}: {err}")

        self.au.add_callback(on_event, None)
        # Which lines reach auparse: those of events that may match (the sifter), or all of
        # them (FEED_EVERYTHING, the reference for the differential test and `make bench`).
        self.feed_everything = FEED_EVERYTHING
        self.sifter = EventSifter(self.pattern, self.au.feed, self._mark_candidate)
        self.framer = LineFramer(self._feed_lines, self.status, log)

    # -- a HUP: the config anew
    def reload(self) -> None:
        try:
            config = load_config(self.config.path, self.arg_keys, self.config.required)
        except ConfigError as err:
            self.log.error(f"reload refused, the old config stays in force: {err}")
            return
        if config.spool_dir != self.config.spool_dir:
            self.log.warning("[spool] dir changes take effect at the next start")
            config.spool_dir = self.config.spool_dir
        self.config = config
        self.send_digests()  # a rule that is gone reports what it held back
        self.pattern = key_pattern(config.rules, config.tamper is not None)
        self.outbox.reconfigure(config)
        self.status.changed = True
        self.log.info(f"config reloaded: {len(config.rules)} rules")

    # -- the main loop
    def run(self, stdin_fd: int = 0) -> int:
        self.signals.start()
        try:
            self.outbox.open(self.config)
        except OSError as err:
            self.log.error(f"cannot use the spool directory {self.spool.dir}: {err}")
            return 1
        self.log.info("started: {} rules, transport {}{}".format(
            len(self.config.rules), self.config.transport, " (print only)" if self.print_only else ""))
        try:
            while not self.signals.stop_requested:
                readable = select.select([stdin_fd, self.signals.wake_fd], [], [], TICK)[0]
                reload = self.signals.wake_fd in readable and self.signals.take()
                if stdin_fd in readable:
                    data = os.read(stdin_fd, READ_SIZE)
                    if not data:
                        break
                    self.guarded(self.framer.feed, data)
                if reload:
                    self.guarded(self.reload)
                self.guarded(self.tick)
        finally:
            self.shutdown(stdin_fd)
        return 0

    def guarded(self, step, *args) -> None:
        """Run one step of the loop; an unexpected error is logged, the plugin goes on
        (a plugin that exits makes auditd restart it, and stops alerting after a few)."""
        try:
            step(*args)
        except Exception as err:  # noqa: BLE001 - see docstring
            self.log.error(f"{step.__name__} failed: {type(err).__name__}: {err}")

    def tick(self) -> None:
        """Timer duties: age events (a lone event is not held until the next one),
        digest windows that ended, write status.json."""
        self.sifter.age(int(time.time()))  # auparse ages by time(NULL), whole seconds
        self.au.feed_age_events()
        self.tamper.tick()
        self.send_digests()
        self.status_file.write(self.limiter, self.config.all_rules())

    def _feed_lines(self, lines: bytes) -> None:
        """Scan and feed complete lines (from the LineFramer: none longer than MAX_LINE)."""
        if self.feed_everything:
            mark_candidates(self.pattern, lines, self._mark_candidate)
            self.au.feed(lines)
        else:
            self.sifter.pattern = self.pattern  # a reload may have changed the keys
            self.sifter.sift(lines)

    def _mark_candidate(self, serial: int) -> None:
        """The event with this serial may match: the callback hands it to on_candidate."""
        self.candidates[serial] = None
        if len(self.candidates) > MAX_CANDIDATES:
            self.candidates.popitem(last=False)

    def finish_input(self) -> None:
        """End of input: a last line without its newline still counts; auparse hands over
        every event it still holds."""
        self.framer.finish()
        self.sifter.finish()
        self.au.flush_feed()
        if self.sifter.fallbacks:
            self.log.info(f"the event buffer was full {self.sifter.fallbacks} times: its events "
                          "went to auparse as a whole")
        if self.status.long_lines:
            self.log.warning(f"input lines longer than {MAX_LINE} bytes dropped: {self.status.long_lines}")

    def on_candidate(self, au) -> None:
        serial = timestamp(au).serial
        self.candidates.pop(serial, None)
        try:
            self.handle(au)
        except Exception as err:  # noqa: BLE001 - a bad event must never stop the plugin
            self.log.error(f"event {serial} skipped: {type(err).__name__}: {err}")

    def handle(self, au) -> None:
        record_type, keys = event_keys(au)
        if record_type in TAMPER_TYPES:
            # Loading the watch is no alert; removing it, or switching auditing off, may be
            # a tamper finding.
            if self.config.tamper is not None and (record_type != "CONFIG_CHANGE" or change_op(au) in TAMPER_OPS):
                self.tamper.read(au, self.config.rules)
            return
        matches = []
        for rule in self.config.rules:
            key = next((k for k in rule.keys if k in keys), None)
            if key is not None:
                matches.append((rule, key))
        if not matches:
            return
        event = read_event(au)
        token = self.spool.verify_token(event.ppid, self.log) if event.ppid else None
        for rule, key in matches:
            self.accept(rule, key, event, token)

    def accept(self, rule: Rule, key: str, event: Event, token: Optional[str]) -> None:
        """Rate-limit, compose, and spool (or print) one alert."""
        if self.admit(rule, (event.subject, event.action, event.object), token):
            self.outbox.put(compose_alert(self.config, rule, key, event, token))

    def admit(self, rule: Rule, group: Tuple[str, str, str], token: Optional[str]) -> bool:
        """Whether the rule may mail now (RateLimiter). Verification mails are neither
        counted nor held back. A window that the event finds ended is digested first."""
        if token is not None:
            return True
        admitted = self.limiter.admit(rule, group, time.time())
        self.status.changed = True
        self.send_digests()
        return admitted

    def report_tamper(self, finding: Tamper) -> None:
        """TamperWatch's report: a finding is accepted as an alert is, under the tamper rule."""
        rule = self.config.tamper
        if rule is not None and self.admit(rule, (finding.who, finding.kind, finding.summary), finding.token):
            self.outbox.put(compose_tamper(self.config, rule, finding))

    def send_digests(self, force: bool = False) -> None:
        """Mail the digests that are due (all of them when forced, at exit)."""
        for digest in self.limiter.digests(self.config.all_rules(), time.time(), force):
            self.outbox.put(compose_digest(self.config, digest.rule, digest.held, digest.window_end))
            self.log.info(f"rule {digest.rule.name}: digest of {digest.held.total} held-back events")
            self.status.changed = True

    def _drain(self, stdin_fd: int) -> None:
        """Read what is left on stdin, up to EOF or for at most EXIT_DRAIN seconds."""
        deadline = time.monotonic() + EXIT_DRAIN
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([stdin_fd], [], [], left)[0]:
                return
            data = os.read(stdin_fd, READ_SIZE)
            if not data:
                return
            self.guarded(self.framer.feed, data)

    def shutdown(self, stdin_fd: int) -> None:
        """EOF or SIGTERM: finish the events auparse holds, say whether the end is a tamper
        finding, digest every window, then give the worker a last chance to deliver; what
        it cannot stays in the spool."""
        if self.signals.stop_sender is not None and self.under_auditd:
            self._drain(stdin_fd)  # a stopping auditd sends DAEMON_END just before SIGTERM
        self.finish_input()
        if self.config.tamper is not None:
            self.tamper.at_exit(self.signals.stop_sender, self.signals.stop_time or time.time())
        self.send_digests(force=True)
        self.outbox.close(self.config.timeout)
        self.status_file.write(self.limiter, self.config.all_rules(), force=True)
        self.log.info("stopped")


def parse_args(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG, description="auditd plugin: mail an alert when an audit event carries a "
        "watched key. Reads the audit stream (plugins.d format = string) on stdin.")
    parser.add_argument("--config", default=None, metavar="PATH",
                        help=f"INI config file (default {DEFAULT_CONFIG})")
    parser.add_argument("--print", action="store_true", dest="print_only",
                        help="write each composed message to stdout (mbox) instead of "
                        "delivering it, e.g. to test a config against `ausearch --raw` output")
    parser.add_argument("keys", nargs="*", metavar="KEY",
                        help="audit keys forming one extra rule (named args) mailed to [mail] to")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    log = Log()
    log.to_stderr = args.print_only or stderr_is_useful()
    try:
        config = load_config(args.config or DEFAULT_CONFIG, args.keys, args.config is not None)
    except ConfigError as err:
        log.to_stderr = True
        log.error(f"bad config: {err}")
        return EXIT_USAGE
    if auparse is None:
        log.to_stderr = True
        log.error("the auparse Python module is missing (install python3-audit)")
        return 1
    return Plugin(config, log, args.print_only, args.keys).run()


if __name__ == "__main__":
    sys.exit(main())
