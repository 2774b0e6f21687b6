"""RateLimiter on its own: no auparse, no events, no mail; times are given, not read."""

import pytest
from mailalert.config import Rule
from mailalert.limits import MAX_DIGEST_GROUPS, RateLimiter

GROUP = ("alice", "opened-file", "/etc/shadow")


@pytest.fixture
def limiter():
    return RateLimiter()


@pytest.fixture
def rule():
    def make(name="r", max_mails=2, window=10):
        return Rule(name, [name + "-key"], ["root"], max_mails, window)
    return make


def admitted(limiter, rule, times, group=GROUP):
    return [limiter.admit(rule, group, t) for t in times]


def test_the_first_max_mails_of_a_window_pass_the_rest_are_held(limiter, rule):
    r = rule(max_mails=2, window=10)
    assert admitted(limiter, r, [100, 101, 102, 109.99]) == [True, True, False, False]
    assert limiter.row(r) == {"keys": ["r-key"], "window_end": 110, "sent": 2, "held": 2,
                              "held_first": 102, "held_groups": [[*GROUP, 2]]}
    assert limiter.digests([r], 109.99) == []


def test_the_window_ends_at_its_edge_and_its_digest_is_exact(limiter, rule):
    r = rule(max_mails=1, window=10)
    admitted(limiter, r, [100, 101, 102, 103])
    [digest] = limiter.digests([r], 110)  # now == end: the window has ended
    assert digest.rule is r and digest.window_end == 110
    assert digest.held.total == 3 and sum(digest.held.groups.values()) == 3
    assert digest.held.first == 101
    assert limiter.row(r)["window_end"] is None  # forgotten
    assert limiter.digests([r], 200) == []


def test_an_event_after_the_end_opens_a_new_window_and_the_old_digest_is_due(limiter, rule):
    r = rule(max_mails=1, window=10)
    admitted(limiter, r, [100, 105])
    assert limiter.admit(r, GROUP, 111) is True  # a new window: sent again from 0
    [digest] = limiter.digests([r], 111)
    assert digest.held.total == 1 and digest.window_end == 110
    assert limiter.row(r) == {"keys": ["r-key"], "window_end": 121, "sent": 1, "held": 0,
                              "held_first": 0.0, "held_groups": []}


def test_limits_are_per_rule(limiter, rule):
    one, other = rule("one", max_mails=1), rule("other", max_mails=3)
    assert admitted(limiter, one, [100, 100, 100]) == [True, False, False]
    assert admitted(limiter, other, [100, 100, 100, 100]) == [True, True, True, False]
    counts = {d.rule.name: d.held.total for d in limiter.digests([one, other], 0, force=True)}
    assert counts == {"one": 2, "other": 1}


def test_a_reload_that_changes_the_limit_mid_window_counts_what_was_sent(limiter, rule):
    admitted(limiter, rule(max_mails=2), [100, 101])
    raised = rule(max_mails=4)  # the reloaded rule, same name
    assert admitted(limiter, raised, [102, 103, 104]) == [True, True, False]
    lowered = rule(max_mails=1)
    assert admitted(limiter, lowered, [105]) == [False]
    [digest] = limiter.digests([lowered], 0, force=True)
    assert digest.held.total == 2 and digest.rule is lowered


def test_a_rule_dropped_by_a_reload_reports_its_digest_to_its_old_recipients(limiter, rule):
    gone = rule("gone", max_mails=1)
    admitted(limiter, gone, [100, 101, 102])
    [digest] = limiter.digests([rule("kept")], 103)  # its window has not ended
    assert digest.rule is gone and digest.held.total == 2 and digest.window_end == 103
    assert limiter.row(gone)["window_end"] is None


def test_groups_are_counted_and_capped(limiter, rule):
    r = rule(max_mails=1, window=1000)
    limiter.admit(r, GROUP, 0)
    groups = MAX_DIGEST_GROUPS + 5
    for n in range(groups):
        limiter.admit(r, ("alice", "opened-file", f"/tmp/{n}"), 1)
    limiter.admit(r, ("alice", "opened-file", "/tmp/0"), 1)
    [digest] = limiter.digests([r], 0, force=True)
    assert digest.held.total == groups + 1
    assert sum(digest.held.groups.values()) == groups + 1
    assert digest.held.groups[("(other)", "(other)", "(other)")] == 5
    assert digest.held.groups[("alice", "opened-file", "/tmp/0")] == 2


def test_held_back_values_are_escaped_for_the_digest(limiter, rule):
    r = rule(max_mails=1)
    limiter.admit(r, GROUP, 0)
    limiter.admit(r, ("eve\nBcc: x", "opened-file", "/tmp/a\x1b[31m"), 0)
    [digest] = limiter.digests([r], 0, force=True)
    assert list(digest.held.groups) == [("eve\\x0aBcc: x", "opened-file", "/tmp/a\\x1b[31m")]


# -- resume: the next plugin goes on with the windows of the one before (status.json rows)

def test_a_resumed_window_goes_on_counting_what_the_one_before_sent_and_held(rule):
    r = rule(max_mails=2, window=600)
    before = RateLimiter()
    assert admitted(before, r, [100, 101, 102]) == [True, True, False]
    after = RateLimiter()
    assert after.resume({"r": before.row(r)}, {"r": r}) == ["r"]
    assert admitted(after, r, [200, 201, 202]) == [False, False, False]
    assert after.digests([r], 699) == []
    [digest] = after.digests([r], 700)
    assert digest.held.total == 4 and digest.window_end == 700
    assert digest.held.groups == {GROUP: 4} and digest.held.first == 102


def test_a_window_that_ended_while_no_plugin_ran_is_digested_by_the_next_one(rule):
    r = rule(max_mails=1, window=10)
    before = RateLimiter()
    admitted(before, r, [100, 101, 102])
    after = RateLimiter()
    after.resume({"r": before.row(r)}, {"r": r})
    [digest] = after.digests([r], 500)
    assert digest.held.total == 2
    assert after.admit(r, GROUP, 500) is True  # a new window


def test_groups_beyond_those_saved_are_resumed_as_other(rule):
    r = rule(max_mails=0, window=600)
    before = RateLimiter()
    for n in range(150):
        before.admit(r, ("u", "a", f"/f{n}"), 100)
    row = before.row(r)
    assert len(row["held_groups"]) == 101 and row["held_groups"][-1] == ["(other)"] * 3 + [50]
    after = RateLimiter()
    after.resume({"r": row}, {"r": r})
    [digest] = after.digests([r], 0, force=True)
    assert digest.held.total == 150 and sum(digest.held.groups.values()) == 150


@pytest.mark.parametrize("row", [
    None, "x", {"window_end": "soon", "sent": 1, "held": 0}, {"window_end": 1.0, "sent": -1, "held": 0},
    {"window_end": 1.0, "sent": 1, "held": 0, "held_groups": "many"},
])
def test_a_row_that_is_not_what_row_writes_is_passed_over(rule, row):
    r = rule()
    limiter = RateLimiter()
    assert limiter.resume({"r": row}, {"r": r}) == []
    assert limiter.row(r)["window_end"] is None


def test_a_hand_edited_group_is_escaped(rule):
    r = rule(max_mails=0, window=600)
    limiter = RateLimiter()
    limiter.resume({"r": {"window_end": 700.0, "sent": 0, "held": 1,
                          "held_groups": [["evil\nBcc: x", "a", "o", 1]]}}, {"r": r})
    [digest] = limiter.digests([r], 0, force=True)
    assert all(part.isprintable() for group in digest.held.groups for part in group)
