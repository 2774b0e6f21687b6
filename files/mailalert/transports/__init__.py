"""The transports that hand a spooled message to the mail system (sendmail, SMTP), and what
they share: the failure they raise and the envelope read back from the message."""

# Python 3.6 (RHEL 8) has no list[str] or X | None in annotations: keep typing's names.
# ruff: noqa: UP006, UP035

import email.policy
import email.utils
from email.parser import BytesHeaderParser
from typing import List, Tuple


class DeliveryError(Exception):
    """A failed delivery attempt. permanent: the MTA refused the message itself (a 5xx reply
    to MAIL, RCPT or DATA, or a sendmail exit status for bad data or addressee), so no retry
    can deliver it; anything else (server down, 4xx, TLS, login) may pass on a retry."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


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
