"""audit_alert_verify with tamper: true against the real chain (conftest.py): the watch is
removed and put back, and the plugin's tamper mail proven; with the plugin's tamper path
broken for real, the module names the plugin hop."""

from __future__ import annotations

import mailbox
import os
import time

from realchain import MAILBOX, run
from test_audit_alert_verify_chain import assert_fails_at


def loaded_rules(chain) -> list[str]:
    return [line for line in run("auditctl", "-l", "-k", chain.key).stdout.splitlines()
            if line.startswith("-")]


def removals_since(chain, started: float) -> list[str]:
    """op=remove_rule records of the chain's key the kernel logged since STARTED."""
    moment = time.localtime(started - 1)
    found = run("ausearch", "--input-logs", "-m", "CONFIG_CHANGE", "-k", chain.key,
                "--start", time.strftime("%m/%d/%y", moment), time.strftime("%H:%M:%S", moment),
                "--format", "raw", check=False).stdout
    return [line for line in found.splitlines() if "op=remove_rule" in line]


def tamper_mails(token: str) -> list[mailbox.mboxMessage]:
    box = mailbox.mbox(MAILBOX, create=False)
    try:
        return [message for message in box if message["X-Audit-Key"] == "tamper"
                and message["X-Audit-Verify"] == token]
    finally:
        box.close()


def test_tamper_mail_proven_and_the_watch_put_back(chain):
    rule = f"-w {chain.watched} -p x -k {chain.key}"
    assert loaded_rules(chain) == [rule]
    started = time.time()
    result = chain.verify(tamper=True)
    assert not result["failed"], result.get("msg")
    tamper = result["tamper"]
    assert tamper["checked"] is True and tamper["rules"] == [rule]
    # The kernel logged the removal, the plugin mailed it, marked with the module's token.
    assert len(removals_since(chain, started)) == 1
    [mail] = tamper_mails(tamper["token"])
    assert mail["X-Audit-Tamper"] == "rules-removed"
    assert mail["Message-ID"] == tamper["message_id"]
    assert mail["X-Audit-Event"].startswith(tamper["event"] + "@")
    assert chain.key in mail.get_payload(decode=True).decode()
    # The watch is back, exactly, and the request gone.
    assert loaded_rules(chain) == [rule]
    assert not os.listdir(chain.spool / "verify")
    print(f"tamper mail after {tamper['latency']} s: {tamper['message_id']}")
    # And it still raises alerts.
    again = chain.verify()
    assert not again["failed"], again.get("msg")


def test_tamper_not_run_in_check_mode(chain):
    started = time.time()
    result = chain.verify(check_mode=True, tamper=True)
    assert not result["failed"], result.get("msg")
    assert result["tamper"]["checked"] is False
    assert "check mode" in result["tamper"]["skipped"]
    assert removals_since(chain, started) == []


def test_tamper_off_in_the_config_names_the_plugin_and_removes_nothing(chain):
    chain.write_config(extra="[tamper]\nenabled = no\n")
    chain.hup_plugin()
    started = time.time()
    result = chain.verify(tamper=True, timeout=5)
    assert_fails_at(result, "tamper_plugin")
    assert "[tamper] enabled = no" in result["msg"]
    assert removals_since(chain, started) == []
    assert len(loaded_rules(chain)) == 1


def test_plugin_that_mails_no_tamper_alert_is_named(chain):
    # The plugin runs with its tamper alerts off, while its config file says on (the
    # default) again: the module removes the watch for real, and no mail comes.
    chain.write_config(extra="[tamper]\nenabled = no\n")
    chain.hup_plugin()
    chain.write_config()
    started = time.time()
    result = chain.verify(tamper=True, timeout=5)
    assert_fails_at(result, "tamper_plugin")
    assert "no trace of a tamper alert" in result["msg"]
    assert len(removals_since(chain, started)) == 1
    assert loaded_rules(chain) == [f"-w {chain.watched} -p x -k {chain.key}"]
    assert not os.listdir(chain.spool / "verify")
