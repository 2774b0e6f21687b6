"""Delivery to an SMTP server: STARTTLS, implicit TLS or plain, optional login."""

import re
import smtplib
import ssl

from ..config import Config
from ..text import escape_text
from . import DeliveryError, envelope


def crlf(data: bytes) -> bytes:
    """The message with the CRLF line endings SMTP requires (RFC 5321 2.3.8): the spool holds
    LF, as sendmail wants it, and smtplib sends bytes unchanged. An existing CRLF stays one,
    a lone CR becomes one, as smtplib itself does for a str message."""
    return re.sub(rb"\r\n|\r|\n", b"\r\n", data)


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
