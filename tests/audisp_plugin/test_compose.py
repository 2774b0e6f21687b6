"""The alert mail built from real events whose fields are hostile (file names and command
lines with CR/LF, invalid UTF-8, encoded words, shell syntax, 4 KiB of text): the header
set is fixed, nothing is injected, and the alert is still sent with the values escaped."""

import email.utils
import re
import socket

import pytest
from conftest import events_with_key, log_bytes, print_messages

CONFIG = ("[mail]\nto = sec@example.com, ops@example.com\nfrom = audit@example.com\n"
          "[limits]\nmax_mails = 1000\n[rule hostile]\nkeys = amx-hostile, amx-exec\n")
ALERT_HEADERS = ["Date", "Message-ID", "From", "To", "Subject", "Auto-Submitted",
                 "X-Audit-Key", "X-Audit-Rule", "X-Audit-Event", "Content-Type",
                 "Content-Transfer-Encoding", "MIME-Version"]


@pytest.fixture(scope="module")
def messages(tmp_path_factory):
    data = log_bytes("hostile", "exec-args")
    found = print_messages(tmp_path_factory.mktemp("message"), CONFIG, data)
    expected = len(events_with_key(data, "amx-hostile")) + len(events_with_key(data, "amx-exec"))
    assert len(found) == expected, "every hostile event must still raise its alert"
    return found


def by_object(messages, fragment):
    matching = [m for m in messages if fragment in m.get_content().split("object:", 1)[1]
                .split("\n", 1)[0]]
    assert len(matching) == 1, f"expected one alert whose object holds {fragment!r}"
    return matching[0]


def test_every_alert_has_exactly_the_documented_headers(messages):
    for message in messages:
        assert list(message.keys()) == ALERT_HEADERS
        assert message["From"] == "audit@example.com"
        assert message["To"] == "sec@example.com, ops@example.com"
        assert message["Auto-Submitted"] == "auto-generated"
        assert email.utils.parsedate_to_datetime(message["Date"]) is not None
        assert re.fullmatch(r"<[^<>@\s]+@[^<>@\s]+>", message["Message-ID"])
        assert re.fullmatch(r"\d+\.\d{3}:\d+@" + re.escape(socket.gethostname()),
                            message["X-Audit-Event"])
    assert len({m["Message-ID"] for m in messages}) == len(messages)


def test_subject_is_one_bounded_line_naming_key_subject_action_object_host(messages):
    host = socket.gethostname()
    for message in messages:
        subject = message["Subject"]
        assert "\n" not in subject and "\r" not in subject
        assert len(subject) < 400
        assert subject.startswith("[audit] {}: ".format(message["X-Audit-Key"]))
        assert subject.endswith(" on " + host)
    touched = by_object(messages, "by-nobody-auid")
    assert touched["Subject"] == "[audit] amx-hostile: nobody opened-file by-nobody-auid on " + host


def test_newline_in_a_file_name_does_not_make_a_header(messages):
    alert = by_object(messages, "evil\\x0a")
    assert alert.get_all("Subject") == [alert["Subject"]]
    assert "pwned" in alert["Subject"] and "\\x0aSubject: pwned" in alert["Subject"]
    assert "object:   evil\\x0aSubject: pwned" in alert.get_content()


def test_carriage_return_does_not_add_a_bcc(messages):
    alert = by_object(messages, "cr\\x0d")
    assert alert["Bcc"] is None and alert["Cc"] is None
    assert "\\x0dBcc: victim@example.com" in alert["Subject"]


def test_encoded_word_in_a_name_is_shown_literally_not_decoded(messages):
    alert = by_object(messages, "=?utf-8?q?")
    assert alert["Bcc"] is None
    # The reader sees the characters the attacker typed, never their decoded meaning.
    assert "=\\?utf-8?q?=0D=0ABcc:_evil@example.com?=" in alert["Subject"]
    assert "object:   =?utf-8?q?=0D=0ABcc:_evil@example.com?=" in alert.get_content()


def test_invalid_utf8_is_escaped_and_still_alerts(messages):
    alert = by_object(messages, "bad-utf8")
    assert "bad-utf8-\\xff\\xfe-\\xc3" in alert["Subject"]
    assert "object:   bad-utf8-\\xff\\xfe-\\xc3" in alert.get_content()


def test_shell_syntax_and_terminal_escapes_are_inert_text(messages):
    shell = by_object(messages, "$(rm -rf ~)")
    assert "$(rm -rf ~);`id`|&<>'\"" in shell["Subject"]
    terminal = by_object(messages, "tab")
    assert "tab\\x09here\\x01\\x1b[31mred" in terminal.get_content()
    assert "\x1b" not in terminal.as_string()


def test_long_values_are_cut_with_a_marker(messages):
    long_name = by_object(messages, "LLLL")
    assert "L" * 40 in long_name["Subject"]
    assert "...[190 more characters]" in long_name["Subject"]
    assert "...[50 more characters]" in long_name.get_content()


def test_command_line_with_control_bytes_and_4k_argument(messages):
    run = [m for m in messages if m["X-Audit-Key"] == "amx-exec"]
    assert len(run) == 1
    body = run[0].get_content()
    assert "action:   executed" in body
    # a long record goes on over indented lines: join them to see the whole record
    execve = body.split("type=EXECVE", 1)[1].split("\ntype=", 1)[0].replace("\n    ", "")
    assert "A" * 1000 in execve
    assert "...[" in execve and "more characters]" in execve, "the 4 KiB argument must be cut"
    assert max(len(line) for line in body.splitlines()) <= 998
    assert "\r" not in body and "\x00" not in body


def test_body_carries_the_normalized_summary_and_the_raw_records(messages):
    alert = by_object(messages, "by-nobody-auid")
    body = alert.get_content()
    serial = alert["X-Audit-Event"].split(":")[1].split("@")[0]
    for line in ("subject:  nobody", "action:   opened-file", "how:      /usr/bin/touch",
                 "result:   yes", "kind:     audit-rule", "keys:     amx-hostile",
                 "serial:   " + serial):
        assert line in body
    records = [line for line in body.splitlines() if line.startswith("type=")]
    assert records[0].startswith("type=SYSCALL msg=audit(")
    assert all(f":{serial}):" in line for line in records)
    assert any(line.startswith("type=PATH") for line in records)


def test_wire_form_has_no_bare_control_characters(messages):
    for message in messages:
        wire = message.as_bytes()
        head = wire.split(b"\n\n", 1)[0]
        assert all(32 <= b < 127 or b in b"\r\n\t" for b in head)
        header_lines = [line for line in head.split(b"\n") if line and not line[:1].isspace()]
        assert [line.split(b":", 1)[0].decode() for line in header_lines] == ALERT_HEADERS
