"""Reading one event from auparse: its keys, the normalized view an alert shows, its records
with their fields. This module owns the auparse binding (None when python3-audit is missing)."""

# Python 3.6 (RHEL 8) has no list[str] or X | None in annotations: keep typing's names.
# ruff: noqa: UP006, UP035, UP045

import re
from typing import List, Optional, Tuple

try:
    import auparse
except ImportError:  # reported in cli.main(): --help and config checks still work without it
    auparse = None

from .config import HOSTNAME
from .text import unescape_octal

RECORDS_MAX = 50  # raw records listed in the body


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


# A change record's op and, for add_rule, its filter list (5: the exclude list).
RULE_LOAD_FIELDS_RE = re.compile(r" op=(\S+)(?:.*? list=(\d+))?")
EXCLUDE_LIST = "5"


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


def rule_loads_only(au) -> bool:
    """Whether every change record of the current event loads a rule that is not on the
    exclude list (auditctl -a/-w, augenrules --load, one per rule): cheaply, because most
    CONFIG_CHANGE events are such, and none of them is a tamper finding. One netlink
    message may carry several changes: each record is looked at, in its own text."""
    au.first_record()
    while True:
        try:
            kind, text = au.get_type_name(), au.get_record_text() or ""
        except (LookupError, UnicodeDecodeError, OSError):
            return False  # read it all (read_records copes)
        if kind == "CONFIG_CHANGE":
            fields = RULE_LOAD_FIELDS_RE.search(text.split("\x1d", 1)[0])
            if fields is None or fields.group(1) != "add_rule" or fields.group(2) == EXCLUDE_LIST:
                return False
        if not au.next_record():
            return True


def find_fields(au, names, every=(), plain=()) -> dict:
    """The named fields of the current event as (record type, raw value, value as auparse
    interprets it): the first occurrence of each, and of those in `every` each one, in
    record order. auparse searches the records (find_field), so only the fields asked for
    are read (rule conditions, conditions.py). A quoted string is shown unquoted, as
    auparse shows it, and a field in `plain` as it is: interpreting costs more than the
    search (a user name, hex text), and is done only where it changes the value."""
    found = {}  # type: dict
    for name in names:
        occurrences = found[name] = []
        au.first_record()
        located = _find(au, name)
        while located:
            try:
                record_type = au.get_type_name() or ""
            except LookupError:
                record_type = ""
            raw = _field_str(au)
            if name in plain:
                shown = raw
            elif len(raw) >= 2 and raw[0] == raw[-1] == '"':
                shown = unescape_octal(raw[1:-1]) if "\\" in raw else raw[1:-1]
            else:
                shown = _field_value(au)
            occurrences.append((record_type, raw, shown))
            located = name in every and _find(au)
    return found
