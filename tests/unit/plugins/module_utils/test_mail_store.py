"""Reading alert mail from mbox files and Maildirs, and MTA queue listings."""

from __future__ import annotations

import mailbox

from ansible_collections.linux_audit.mail_alert.plugins.module_utils import mail_store


def alert(key, event, verify=None, subject="alert"):
    text = (f"From: root@h\nTo: root\nSubject: {subject}\nMessage-ID: <{event}@h>\n"
            f"X-Audit-Key: {key}\nX-Audit-Event: {event}@h\n")
    if verify:
        text += f"X-Audit-Verify: {verify}\n"
    return text + "\nFrom the body, a line that mbox must escape.\n"


def test_mbox_alerts_by_key(tmp_path):
    path = tmp_path / "root"
    box = mailbox.mbox(str(path))
    box.add(alert("watch_w", "1795685868.750:7", verify="tok"))
    box.add(alert("other", "1795685868.751:8"))
    box.add("From: x\nSubject: not an alert\n\nhi\n")
    box.add(alert("watch_w", "1795685869.5:9", subject="second"))
    box.close()
    found = mail_store.alert_messages(str(path), "watch_w")
    assert [message["event"] for message in found] == ["1795685868.750:7", "1795685869.005:9"]
    assert found[0]["verify"] == "tok" and found[1]["verify"] is None
    assert found[0]["message_id"] == "<1795685868.750:7@h>"
    assert found[1]["subject"] == "second"
    assert found[0]["delivered"] is None  # mbox: the caller uses the file's mtime
    state = mail_store.mailbox_state(str(path))
    assert state["kind"] == "mbox" and state["exists"] and state["size"] == path.stat().st_size


def test_maildir_alerts_carry_delivery_time(tmp_path):
    path = tmp_path / "Maildir"
    box = mailbox.Maildir(str(path))
    key = box.add(alert("watch_w", "1795685868.750:7"))
    box.close()
    found = mail_store.alert_messages(str(path), "watch_w")
    assert len(found) == 1
    message_file = path / "new" / key
    assert found[0]["delivered"] == message_file.stat().st_mtime
    assert mail_store.mailbox_state(str(path))["kind"] == "maildir"


def test_missing_mailbox_is_empty(tmp_path):
    assert mail_store.alert_messages(str(tmp_path / "none"), "k") == []
    state = mail_store.mailbox_state(str(tmp_path / "none"))
    assert state["exists"] is False and state["size"] is None


def test_parse_mail_queue_dma():
    text = "ID\t: 16000c.555729782f20\nFrom\t: root@vm\nTo\t: root\n--\nID\t: 16000d.1\n"
    assert mail_store.parse_mail_queue(text) == ["16000c.555729782f20", "16000d.1"]


def test_parse_mail_queue_postfix():
    text = ("-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------\n"
            "A1B2C3D4E5*     432 Thu Nov 26 09:42:26  root@host\n"
            "                                         root@host\n\n"
            "4dT1xQ2Vb5z9sVv!    512 Thu Nov 26 09:43:00  root@host\n"
            "(connect to mx: Connection refused)\n"
            "-- 1 Kbytes in 2 Requests.\n")
    assert mail_store.parse_mail_queue(text) == ["A1B2C3D4E5", "4dT1xQ2Vb5z9sVv"]


def test_parse_mail_queue_exim():
    text = " 0m   320 1tFg8s-0001Ab-2C <root@host>\n          root@host\n\n"
    assert mail_store.parse_mail_queue(text) == ["1tFg8s-0001Ab-2C"]


def test_parse_mail_queue_empty():
    assert mail_store.parse_mail_queue("Mail queue is empty\n") == []
    assert mail_store.parse_mail_queue("") == []


def test_mailbox_unwritable_reasons(tmp_path, monkeypatch):
    path = tmp_path / "root"
    assert mail_store.mailbox_unwritable(str(path)) is None  # to be created: its directory
    monkeypatch.setattr(mail_store, "_immutable", lambda target: target == str(tmp_path))
    assert "immutable" in mail_store.mailbox_unwritable(str(path))
    path.write_text("")
    assert mail_store.mailbox_unwritable(str(path)) is None  # the file itself is not


def test_mailbox_watch_rereads_only_after_a_change(tmp_path, monkeypatch):
    path = tmp_path / "root"
    box = mailbox.mbox(str(path))
    box.add(alert("watch_w", "1795685868.750:7"))
    box.close()
    reads = []
    real = mail_store.alert_messages
    monkeypatch.setattr(mail_store, "alert_messages",
                        lambda *args: reads.append(args) or real(*args))
    watch = mail_store.MailboxWatch(str(path), "watch_w")
    assert len(watch.look()[0]) == 1
    assert len(watch.look()[0]) == 1
    assert len(reads) == 1  # unchanged: not parsed again
    box = mailbox.mbox(str(path))
    box.add(alert("watch_w", "1795685868.751:8"))
    box.close()
    messages, state = watch.look()
    assert len(messages) == 2 and len(reads) == 2
    assert state["size"] == path.stat().st_size
