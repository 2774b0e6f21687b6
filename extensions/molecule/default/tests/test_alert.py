"""The end-to-end proof: running the watched command brings a real alert mail.

The collection's own module `audit_alert_verify` runs /usr/bin/w on the target and waits
for the alert; then this test reads the mailbox itself and checks the message it named.
"""

import email
import email.policy
import mailbox
import os
import tempfile

MAILBOX = "/var/mail/root"


def read_mbox(host, path):
    """The target's mbox, parsed here with the standard library."""
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "mbox")
        with open(local, "wb") as out:
            out.write(host.file(path).content)
        return [
            email.message_from_bytes(m.as_bytes(), policy=email.policy.default)
            for m in mailbox.mbox(local, create=False)
        ]


def test_running_w_mails_an_alert(host, kernel_audit):
    result = host.ansible(
        "linux_audit.mail_alert.audit_alert_verify",
        f"command=/usr/bin/w key=alert mailbox={MAILBOX} timeout=60",
        check=False,
        become=True,
    )
    assert [h["name"] for h in result["hops"] if not h["ok"]] == []
    assert 0 < result["latency"] < 60

    matching = [m for m in read_mbox(host, MAILBOX) if m["Message-ID"] == result["message_id"]]
    assert len(matching) == 1, f"{result['message_id']} is not in {MAILBOX} exactly once"
    alert = matching[0]
    assert alert["X-Audit-Key"] == "alert"
    assert alert["X-Audit-Event"].startswith(result["event"] + "@")
    assert alert["X-Audit-Verify"] == result["token"]
    assert alert["Subject"] == result["subject"]
    assert "/usr/bin/w" in alert.get_body(preferencelist=("plain",)).get_content()
