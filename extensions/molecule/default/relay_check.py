"""Checks of the lab's submission relay, run on the VM by smtp_relay.yml (Python's stdlib only).

  relay_check.py probe HOST PORT CA_FILE USER PASSWORD
      The relay is as strict as the play says: no AUTH and no mail before STARTTLS, no mail
      without AUTH, and a message with bare LF line endings refused. Otherwise the
      plugin's delivery through it would prove nothing.
  relay_check.py mail MBOX MESSAGE_ID USER
      The message arrived whole and through the relay: parsed with email.policy.strict (any
      defect raises), its newest Received header is the relay's, with ESMTPSA (ESMTP, TLS,
      AUTH) and the SASL user.

Prints one JSON object; exit status 1 when a check fails.
"""

import email
import email.policy
import json
import mailbox
import smtplib
import ssl
import sys

BARE_LF = b"From: probe@localhost\nTo: root\nSubject: bare LF probe\n\nThis ends in a bare LF.\n"


def reply(call):
    """The server's (code, text) for one SMTP step, whether it succeeds or raises."""
    try:
        code, text = call()
    except smtplib.SMTPResponseException as err:
        code, text = err.smtp_code, err.smtp_error
    except smtplib.SMTPRecipientsRefused as err:
        code, text = next(iter(err.recipients.values()))
    except smtplib.SMTPServerDisconnected as err:
        return None, f"disconnected: {err}"
    return code, text.decode(errors="replace") if isinstance(text, bytes) else str(text)


def probe(host, port, ca_file, user, password):
    found = {}
    with smtplib.SMTP(host, int(port), timeout=30) as smtp:
        smtp.ehlo()
        found["ehlo_before_tls"] = sorted(smtp.esmtp_features)
        found["mail_before_tls"] = reply(lambda: smtp.mail("probe@localhost"))
        smtp.rset()
        smtp.starttls(context=ssl.create_default_context(cafile=ca_file))
        smtp.ehlo()
        found["auth_after_tls"] = smtp.esmtp_features.get("auth", "")
        smtp.mail("probe@localhost")
        found["rcpt_without_auth"] = reply(lambda: smtp.rcpt("root"))
        smtp.rset()
        smtp.login(user, password)
        smtp.mail("probe@localhost")
        smtp.rcpt("root")
        found["data_with_bare_lf"] = reply(lambda: smtp.data(BARE_LF))
    ok = ("auth" not in found["ehlo_before_tls"] and "starttls" in found["ehlo_before_tls"]
          and found["mail_before_tls"][0] == 530
          and "PLAIN" in found["auth_after_tls"].split()
          and found["rcpt_without_auth"][0] in (554, 553)
          and "bare <LF> received" in found["data_with_bare_lf"][1])
    return ok, found


def mail(path, message_id, user):
    box = mailbox.mbox(path, create=False)
    found = [email.message_from_bytes(box.get_bytes(key), policy=email.policy.strict)
             for key, msg in box.items() if msg["Message-ID"] == message_id]
    if len(found) != 1:
        return False, {"error": f"{len(found)} messages with Message-ID {message_id} in {path}"}
    message = found[0]
    received = " ".join(str(message.get_all("Received", [""])[0]).split())
    body = message.get_body(preferencelist=("plain",)).get_content()
    result = {"received": received, "subject": str(message["Subject"])}
    ok = (" with ESMTPSA " in received and f"(Authenticated sender: {user}" in received
          and message["X-Audit-Key"] == "alert" and "/usr/bin/w" in body)
    return ok, result


if __name__ == "__main__":
    modes = {"probe": (probe, 5), "mail": (mail, 3)}
    if len(sys.argv) < 2 or sys.argv[1] not in modes or len(sys.argv) != 2 + modes[sys.argv[1]][1]:
        sys.exit(__doc__)
    passed, details = modes[sys.argv[1]][0](*sys.argv[2:])
    print(json.dumps(details))
    sys.exit(0 if passed else 1)
