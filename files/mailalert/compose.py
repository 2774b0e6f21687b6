"""Composing the messages: an alert, a digest, a tamper finding (the header contract of
docs/design.md, "Alert mail headers")."""

# Python 3.6 (RHEL 8) has no list[str] or X | None in annotations: keep typing's names.
# ruff: noqa: UP006, UP035, UP045

import email.policy
import email.utils
import re
import time
from email.message import EmailMessage
from typing import List, Optional

from .config import HOSTNAME, TAMPER_RULE, Config, Rule
from .events import Event
from .limits import Held
from .tamper import Tamper
from .text import FIELD_MAX, escape_text, header_text

SUBJECT_PART_MAX = 60  # characters of one value in the Subject header
RECORD_MAX = 2000  # characters of one raw record in the body
BODY_LINE_MAX = 900  # characters per body line (SMTP allows 998)
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


def compose_digest(config: Config, rule: Rule, held: Held, window_end: float) -> EmailMessage:
    """One mail for everything a rule held back in a window, with the exact count."""
    subject = f"[audit] digest {rule.name}: {held.total} more events held back on {HOSTNAME}"
    message = _new_message(config, rule.to, subject)
    # One id per rule and window: a digest spooled again by the next plugin (this one was
    # killed between spooling it and recording it in status.json) is the same message.
    message.replace_header("Message-ID", f"<digest.{rule.name}.{window_end:.6f}@{HOSTNAME}>")
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


def compose_tamper(config: Config, rule: Rule, tamper: Tamper) -> EmailMessage:
    """The mail for one tamper finding: what changed, who did it, the records behind it, on
    which host (another node's, for an aggregating auditd)."""
    node = header_text(tamper.node, SUBJECT_PART_MAX)
    subject = f"[audit] tamper: {header_text(tamper.summary, 120)} on {node}"
    message = _new_message(config, rule.to, subject)
    message["X-Audit-Key"] = TAMPER_RULE
    message["X-Audit-Rule"] = rule.name
    message["X-Audit-Tamper"] = tamper.kind
    if tamper.event_id:
        message["X-Audit-Event"] = tamper.event_id
    if tamper.token:
        message["X-Audit-Verify"] = tamper.token
    lines = [f"Auditing on {node} was weakened or switched off ({tamper.kind}).", ""]
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
