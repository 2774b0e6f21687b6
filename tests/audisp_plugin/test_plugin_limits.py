"""Rate limit and digests: at most max_mails alerts per rule and window, the rest counted
exactly in one digest; verification requests bypass the limit."""

import re

from conftest import events_with_key, log_bytes, print_messages
from mailalert.compose import compose_digest
from mailalert.config import Config, Rule
from mailalert.limits import Held


def digest_counts(digest):
    body = digest.get_content()
    held = int(re.search(r"^Held back: (\d+)$", body, re.MULTILINE).group(1))
    groups = [int(n) for n in re.findall(r"^ +(\d+)  \S", body, re.MULTILINE)]
    return held, groups


def test_flood_gives_max_mails_alerts_and_one_exact_digest(tmp_path):
    data = log_bytes("flood")
    total = len(events_with_key(data, "amx-flood"))
    assert total >= 20, "the capture must hold a flood"
    messages = print_messages(tmp_path, "[rule flood]\nkeys = amx-flood\nmax_mails = 3\n", data)
    alerts = [m for m in messages if m["X-Audit-Digest"] is None]
    digests = [m for m in messages if m["X-Audit-Digest"] is not None]
    assert len(alerts) == 3
    assert len(digests) == 1
    digest = digests[0]
    assert digest["X-Audit-Digest"] == "flood" and digest["X-Audit-Rule"] == "flood"
    assert digest["X-Audit-Event"] is None
    held, groups = digest_counts(digest)
    assert held == total - 3
    assert sum(groups) == held
    assert "opened-file" in digest.get_content()
    # the alerts mailed are the first events, in order; no event is both mailed and held
    assert [m["X-Audit-Event"].split("@")[0] for m in alerts] == [
        f"{t}:{s}" for t, s in events_with_key(data, "amx-flood")[:3]]


def test_limits_are_per_rule(tmp_path):
    data = log_bytes("flood", "hostile")
    messages = print_messages(
        tmp_path, "[limits]\nmax_mails = 2\n[rule flood]\nkeys = amx-flood\n"
        "[rule hostile]\nkeys = amx-hostile\nmax_mails = 100\n", data)
    hostile = [m for m in messages if m["X-Audit-Rule"] == "hostile"]
    flood = [m for m in messages if m["X-Audit-Rule"] == "flood"]
    assert len(hostile) == len(events_with_key(data, "amx-hostile"))
    assert all(m["X-Audit-Digest"] is None for m in hostile)
    assert len(flood) == 3 and sum(m["X-Audit-Digest"] == "flood" for m in flood) == 1


def test_digest_groups_identical_subject_action_object():
    held = Held()
    for obj in ["/etc/shadow"] * 5 + ["/etc/passwd"] * 2:
        held.total += 1
        held.groups[("root", "opened-file", obj)] += 1
    config = Config()
    rule = Rule("r", ["k"], ["root"], 1, 60)
    digest = compose_digest(config, rule, held, 0.0)
    body = digest.get_content()
    assert re.search(r"^ +5  root / opened-file / /etc/shadow$", body, re.MULTILINE)
    assert re.search(r"^ +2  root / opened-file / /etc/passwd$", body, re.MULTILINE)
    assert "Held back: 7" in body
