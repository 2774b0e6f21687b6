"""The role's checks of rule conditions (plugins/filter/alert_conditions.py) on plain data:
each refusal names the variable, the rule and the field; the names it asks the host for."""

from __future__ import annotations

import pytest
from ansible_collections.linux_audit.mail_alert.plugins.filter.alert_conditions import (
    condition_errors,
    condition_names,
)

WATCH = {"key": "sudoers", "path": "/etc/sudoers", "perm": "wa"}


def rule(**conditions) -> dict:
    return dict(WATCH, **conditions)


def test_good_conditions_pass():
    rules = [rule(match={"success": "no", "uid": ["0", "root"]},
                  ignore=[{"exe": "/usr/sbin/vi*", "auid": ["alice", "bob"]}, {"auid": "unset"},
                          {"path": "/etc/sudoers.d/[a-z]*", "comm": "visudo", "tty": "pts0",
                           "node": "web1", "syscall": "openat", "gid": "adm", "euid": "0"}]),
             dict(WATCH, key="plain")]
    assert condition_errors(rules, [{"auid": "deploy"}]) == []


@pytest.mark.parametrize("conditions, tamper, message", [
    ({"ignore": [{"auid": "x"}, {"user": "x"}]}, [],
     'audit_mail_alert_rules[0] (key "sudoers") ignore[1]: unknown field "user"'),
    ({"match": {"success": False}}, [],
     'audit_mail_alert_rules[0] (key "sudoers") match.success must be "yes" or "no"'),
    ({"match": {"success": "failed"}}, [], 'match.success must be "yes" or "no"'),
    ({"ignore": [{"uid": []}]}, [], 'ignore[0].uid: an empty list fits no event'),
    ({"match": {"tty": "pts*"}}, [], "match.tty takes no glob (only exe, comm, path do)"),
    ({"match": {"auid": 1000}}, [], "match.auid: a value is a string"),
    ({"match": {}}, [], "match must be a mapping of fields"),
    ({"ignore": {"auid": "x"}}, [], "ignore must be a list of mappings"),
    ({"ignore": ["auid=x"]}, [], "ignore[0] must be a mapping of fields"),
    ({}, [{"who": "x"}], 'audit_mail_alert_tamper_ignore[0]: unknown field "who"'),
    ({}, {"auid": "x"}, "audit_mail_alert_tamper_ignore must be a list of mappings"),
])
def test_bad_conditions_are_named(conditions, tamper, message):
    errors = condition_errors([rule(**conditions)], tamper)
    assert len(errors) == 1 and message in errors[0], errors


def test_names_to_look_up_on_the_host():
    rules = [rule(match={"uid": ["root", "0"], "gid": "adm"},
                  ignore=[{"auid": ["unset", "deploy"]}, {"euid": "www-data", "exe": "/x"}])]
    assert condition_names(rules, [{"auid": "ansible"}]) == {
        "users": {"root": 'audit_mail_alert_rules[0] (key "sudoers") match.uid',
                  "deploy": 'audit_mail_alert_rules[0] (key "sudoers") ignore[0].auid',
                  "www-data": 'audit_mail_alert_rules[0] (key "sudoers") ignore[1].euid',
                  "ansible": "audit_mail_alert_tamper_ignore[0].auid"},
        "groups": {"adm": 'audit_mail_alert_rules[0] (key "sudoers") match.gid'}}
