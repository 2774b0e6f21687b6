"""Print one message of an mbox, found by its Message-ID: `show_mail.py MBOX MESSAGE_ID`.

Runs on the lab VM (standard library only) to show the alert mail exactly as delivered.
"""

import mailbox
import sys


def main(mbox_path: str, message_id: str) -> int:
    for message in mailbox.mbox(mbox_path, create=False):
        if message["Message-ID"] == message_id:
            sys.stdout.write(message.as_string())
            return 0
    print(f"show_mail.py: no message {message_id} in {mbox_path}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: show_mail.py MBOX MESSAGE_ID")
    sys.exit(main(sys.argv[1], sys.argv[2]))
