"""The config contract: the INI file (and the KEY arguments) read into a validated Config;
every problem is a ConfigError naming `FILE: [SECTION] KEY`."""

# Python 3.6 (RHEL 8) has no list[str] or X | None in annotations: keep typing's names.
# ruff: noqa: UP006, UP035, UP045

import configparser
import json
import os
import re
import socket
import ssl
from typing import List, Optional, Tuple

DEFAULT_CONFIG = "/etc/audit/audisp-mailalert.conf"
HOSTNAME = socket.gethostname()
TAMPER_RULE = "tamper"  # the tamper alerts' rule name and X-Audit-Key
RULE_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")
KEY_RE = re.compile(r"[!-~]{1,255}\Z")  # printable ASCII, no space; commas refused apart
ADDRESS_RE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+(@[A-Za-z0-9.-]+)?\Z")


class ConfigError(Exception):
    """A config or command line problem; the message names the file, section and key."""


# Rule conditions (conditions.py evaluates them): the fields, as audit names them, and
# those whose values are shell-style globs.
CONDITION_FIELDS = ("auid", "uid", "euid", "gid", "exe", "comm", "syscall", "success", "tty",
                    "node", "path")
GLOB_FIELDS = ("exe", "comm", "path")
GLOB_CHARS = "*?["
CONDITION_VALUE_MAX = 4096


class Condition:
    """One `match` or `ignore` entry: (field, the values any of which fits) in the order
    written, and its text as the config gave it (for --print and the log)."""

    def __init__(self, fields: List[Tuple[str, List[str]]], text: str) -> None:
        self.fields = fields
        self.text = text


class Rule:
    """One `[rule NAME]`: the keys it watches, who gets its mail, its rate limit, and the
    conditions an event must meet to be mailed."""

    def __init__(self, name: str, keys: List[str], to: List[str], max_mails: int, window: int):
        self.name = name
        self.keys = keys
        self.to = to
        self.max_mails = max_mails
        self.window = window
        self.match = None  # type: Optional[Condition]
        self.ignore = []  # type: List[Condition]


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
        self.smtp_context: Optional[ssl.SSLContext] = None
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
        self.tamper: Optional[Rule] = None

    def all_rules(self) -> List[Rule]:
        """The rules that have a rate limit: the [rule NAME]s and the tamper rule."""
        return self.rules + ([self.tamper] if self.tamper else [])


ALLOWED = {
    "mail": {"to", "from", "transport", "sendmail", "smtp_host", "smtp_port", "smtp_tls",
             "smtp_ca_file", "smtp_user", "smtp_password_file", "timeout"},
    "limits": {"max_mails", "window"},
    "spool": {"dir", "retry_min", "retry_max"},
    "rule": {"keys", "to", "max_mails", "window", "match", "ignore"},
    "tamper": {"enabled", "to", "max_mails", "window", "ignore"},
}


# Rule names that are not free: the KEY arguments' rule and the tamper alerts'.
RESERVED_RULE_NAMES = ("args", "tamper")


class Section:
    """One section of the config file (or the command line's KEYs), read with the place
    that error messages name: `FILE: [SECTION] KEY: ...`."""

    def __init__(self, path: str, name: str, values, read_files: bool = True) -> None:
        self.path = path
        self.name = name
        self.values = values  # a configparser section, or a dict
        # False: the files a key names are not opened, only their paths checked (a config
        # checked on another machine than the one it is for: --check-config --without-files).
        self.read_files = read_files

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

    def condition(self, key: str, value, where: str) -> Condition:
        """One condition: a JSON object of fields, each a string or a non-empty list of
        strings; globs only on GLOB_FIELDS; success yes or no."""
        if not isinstance(value, dict) or not value:
            raise self.error(key, f"{where}must be a mapping of fields (e.g. {{\"auid\": \"unset\"}}), "
                                  f"not {json.dumps(value)}")
        fields = []
        for name, given in value.items():
            if name not in CONDITION_FIELDS:
                raise self.error(key, "{}unknown field {!r} (fields: {})".format(
                    where, name, ", ".join(CONDITION_FIELDS)))
            values = given if isinstance(given, list) else [given]
            if not values:
                raise self.error(key, f"{where}{name}: an empty list fits no event")
            for item in values:
                if not isinstance(item, str) or not item or len(item) > CONDITION_VALUE_MAX:
                    raise self.error(key, f"{where}{name}: a value is a string of 1-{CONDITION_VALUE_MAX} "
                                          f"characters, not {json.dumps(item)}")
                if name == "success" and item not in ("yes", "no"):
                    raise self.error(key, f"{where}success: must be \"yes\" or \"no\", not {json.dumps(item)}")
                if name not in GLOB_FIELDS and any(c in item for c in GLOB_CHARS):
                    raise self.error(key, f"{where}{name}: takes no glob (only {', '.join(GLOB_FIELDS)} do): "
                                          f"{json.dumps(item)}")
            fields.append((name, values))
        return Condition(fields, json.dumps(value, sort_keys=False))

    def conditions(self, key: str, many: bool) -> List[Condition]:
        """`match` (one JSON object; many=False) or `ignore` (a JSON list of them)."""
        if key not in self.values:
            return []
        try:
            value = json.loads(self.values[key])
        except ValueError as err:
            raise self.error(key, f"not JSON: {err}")
        if not many:
            return [self.condition(key, value, "")]
        if not isinstance(value, list):
            raise self.error(key, f"must be a JSON list of mappings, not {json.dumps(value)}")
        return [self.condition(key, item, f"[{index}] ") for index, item in enumerate(value)]

    def abspath(self, key: str, default: str) -> str:
        value = self.values.get(key, default).strip()
        if not value.startswith("/"):
            raise self.error(key, f"must be an absolute path: {value!r}")
        return value

    def password(self, key: str) -> str:
        """The password in the file the key names, which must be private: only the plugin's
        user (root) can read it, and only it can change it."""
        filename = self.abspath(key, "")
        if not self.read_files:
            return ""
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

    def tls_context(self, key: str) -> Optional[ssl.SSLContext]:
        """A client TLS context that trusts exactly the CA bundle named by the key (PEM), with
        certificate and host name verification as ssl.create_default_context sets them; None
        when the files are not read."""
        filename = self.abspath(key, "")
        if not self.read_files:
            return None
        try:
            context = ssl.create_default_context(cafile=filename)
        except (OSError, ssl.SSLError) as err:
            raise self.error(key, f"cannot load the CA bundle {filename}: {err}")
        if not context.cert_store_stats()["x509"]:
            raise self.error(key, f"{filename} holds no certificate")
        return context


def load_config(path: str, arg_keys: List[str], must_exist: bool, read_files: bool = True) -> Config:
    """Read and validate the INI file; every problem is a ConfigError naming file/section/key.
    read_files=False: the files that keys name (smtp_ca_file, smtp_password_file) are not
    opened, only their paths checked; such a Config has no password and no CA bundle."""
    config = Config()
    config.path = path
    config.required = must_exist
    parser = _read_ini(path, must_exist)

    def section(name: str) -> Section:
        return Section(path, name, parser[name] if parser.has_section(name) else {}, read_files)

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
        rule = _rule(config, section, rule_name, section.keys("keys"))
        rule.match = next(iter(section.conditions("match", many=False)), None)
        rule.ignore = section.conditions("ignore", many=True)
        config.rules.append(rule)


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
        config.tamper.ignore = tamper.conditions("ignore", many=True)
