# Copyright (c) audit mail alert developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The judgement of audit_alert_verify: is each hop of the alert chain working?

Every function here is pure: it takes the evidence the module gathered once (plain dicts
and lists: auditctl output parsed, status.json, the spool queue, mailq, the mailbox) and
returns hops, {"name", "ok", "detail"}. Nothing here reads the host, so each verdict is
unit-tested on plain data.
"""

from typing import List, Optional, Tuple

from ansible_collections.linux_audit.mail_alert.plugins.module_utils import alert_plugin
from ansible_collections.linux_audit.mail_alert.plugins.module_utils.audit_state import (
    normalize_event_id,
)

# What a broken hop means, for the failure message; in chain order.
BROKEN = {
    "audit_enabled": "kernel auditing is disabled",
    "rule_loaded": "audit rule not loaded",
    "auditd_running": "auditd not running",
    "plugin_configured": "plugin not configured in auditd",
    "plugin_running": "plugin not running",
    "plugin_key": "plugin not configured for the key",
    "mailbox_writable": "mailbox not writable",
    "event_logged": "event not logged",
    "plugin_alert": "plugin raised no alert for the event",
    "rate_limit": "plugin rate limit held the alert back",
    "plugin_delivery": "mail not handed to the MTA",
    "mta_queue": "mail still in the MTA queue, or the MTA down",
    "mailbox": "mailbox not written",
    # The tamper path (option tamper): the watch removed and restored.
    "tamper_removed": "the rule with the key could not be removed for the tamper check",
    "tamper_logged": "the kernel logged no removal of the rule",
    "tamper_plugin": "plugin raised no tamper alert for the removed rule",
    "tamper_delivery": "tamper mail not handed to the MTA",
    "tamper_mta_queue": "tamper mail still in the MTA queue, or the MTA down",
    "tamper_mailbox": "tamper mail not in the mailbox",
}


def hop(name: str, ok: bool, detail: str) -> dict:
    return {"name": name, "ok": bool(ok), "detail": detail}


def failure_message(hops: List[dict]) -> str:
    """`<what is broken> (hop <name>): <what was found>` for the first broken hop."""
    broken = next(item for item in hops if not item["ok"])
    return f"{BROKEN[broken['name']]} (hop {broken['name']}): {broken['detail']}"


def alert_matches(alert: dict, event_ids: Optional[List[str]], token: Optional[str]) -> bool:
    """An alert is ours if it names one of our events (any event when EVENT_IDS is None)
    and carries our token, if we wrote one."""
    if event_ids is not None and normalize_event_id(alert.get("event") or "") not in event_ids:
        return False
    return token is None or alert.get("verify") == token


# -- before the command: what can be seen without an event -------------------------------

def audit_enabled(status: Optional[dict], error: str) -> dict:
    if status is None:
        return hop("audit_enabled", False, error)
    return hop("audit_enabled", status.get("enabled") in (1, 2),
               f"auditctl -s: enabled {status.get('enabled')}")


def rule_loaded(key: str, rules: Optional[List[dict]], error: str) -> dict:
    if rules is None:
        return hop("rule_loaded", False, error)
    matching = [rule["rule"] for rule in rules if key in rule["keys"]]
    if not matching:
        return hop("rule_loaded", False, f"auditctl -l lists no rule with key {key}")
    return hop("rule_loaded", True, f"auditctl -l: {'; '.join(matching)}")


def auditd_running(pid: int, name: Optional[str]) -> dict:
    if not pid:
        return hop("auditd_running", False, "auditctl -s: no audit daemon registered (pid 0)")
    return hop("auditd_running", name == "auditd",
               f"auditctl -s: pid {pid}, which is {name or 'not a running process'}")


def plugin_configured(conf: dict, program_executable: bool, config: dict, spool_dir: str,
                      spool_exists: bool) -> dict:
    where, program = conf["file"], conf["path"]
    if not conf["exists"]:
        problem = f"{where} does not exist"
    elif conf["error"]:
        problem = conf["error"]
    elif not conf["active"]:
        problem = f"{where}: active is not yes"
    elif not program or not program_executable:
        problem = f"{where}: path {program} is not an executable file"
    elif conf["format"] != "string":
        problem = f"{where}: format is {conf['format']}; the plugin reads format = string"
    elif config["error"]:
        problem = config["error"]
    elif not spool_exists:
        problem = f"spool directory {spool_dir} does not exist"
    else:
        args = " ".join(conf["args"]) or "none"
        return hop("plugin_configured", True,
                   f"{where}: active, path {program}, args {args}; spool {spool_dir}")
    return hop("plugin_configured", False, problem)


def plugin_running(program: Optional[str], processes: List[dict], auditd_pid: int) -> dict:
    if not program:
        return hop("plugin_running", False, "no plugin path is configured")
    if not processes:
        return hop("plugin_running", False, f"no process runs {program}")
    described = ", ".join(f"pid {process['pid']} (parent {process['ppid']})"
                          for process in processes)
    if auditd_pid and not any(process["ppid"] == auditd_pid for process in processes):
        return hop("plugin_running", False, f"{program} runs ({described}) but not as a "
                   f"child of auditd (pid {auditd_pid}), so it gets no events")
    return hop("plugin_running", True, f"{program}: {described}")


def plugin_key(key: str, conf: dict, config: dict) -> dict:
    args_keys = alert_plugin.keys_from_args(conf["args"])
    rules = alert_plugin.rules_for_key(key, config["rules"], args_keys)
    if rules:
        return hop("plugin_key", True, f"key {key} is watched by plugin rule(s) "
                   f"{', '.join(rules)} ({config['file']})")
    return hop("plugin_key", False, f"no [rule] in {config['file']} and no argument in "
               f"{conf['file']} lists key {key}")


def mailbox_writable(path: str, problem: Optional[str]) -> dict:
    if problem:
        return hop("mailbox_writable", False, f"the MTA cannot write {path}: {problem}")
    return hop("mailbox_writable", True, f"{path} can be written")


def before_command(seen: dict) -> List[dict]:
    """The hops that can be checked without an event, in chain order, from the evidence
    of Verification.look_before (keys as used below)."""
    status = seen["status"] or {}
    auditd_pid = status.get("pid") or 0
    return [
        audit_enabled(seen["status"], seen["status_error"]),
        rule_loaded(seen["key"], seen["rules"], seen["rules_error"]),
        auditd_running(auditd_pid, seen["auditd_name"]),
        plugin_configured(seen["conf"], seen["program_executable"], seen["config"],
                          seen["spool_dir"], seen["spool_exists"]),
        plugin_running(seen["conf"]["path"], seen["processes"], auditd_pid),
        plugin_key(seen["key"], seen["conf"], seen["config"]),
        mailbox_writable(seen["mailbox"], seen["mailbox_problem"]),
    ]


# -- after the command: where the alert stopped ------------------------------------------

def held_growth(before: dict, after: dict) -> dict:
    """{rule: how many more alerts it held back} between two held_counts."""
    return {name: count - before.get(name, 0) for name, count in after.items()
            if count > before.get(name, 0)}


def new_in_queue(before: Optional[dict], after: Optional[dict]) -> List[str]:
    """Queue ids mailq lists now that it did not list before (None: no mailq)."""
    return sorted(set((after or {}).get("ids", [])) - set((before or {}).get("ids", [])))


def delivered_since(status: Optional[dict], started: float) -> bool:
    """Whether status.json records a delivery to the MTA since STARTED."""
    last_delivery = (status or {}).get("last_delivery")
    return isinstance(last_delivery, (int, float)) and last_delivery >= started


def event_logged(events: List[dict], search: str, rc: Optional[int], command: List[str]) -> dict:
    if not events:
        return hop("event_logged", False, f"{search} found no event since the command ran (rc "
                   f"{rc}); does {' '.join(command)} trigger the rule, and does auditd write "
                   "its log?")
    return hop("event_logged", True, f"event(s) {', '.join(event['id'] for event in events)}")


def unmarked_hop(name: str, what: str, message: dict, token: Optional[str]) -> dict:
    """The plugin hop broken by a MESSAGE for our event that lacks our token."""
    seen = message["verify"]
    header = f"with X-Audit-Verify {seen} instead of {token}" if seen else "without X-Audit-Verify"
    return hop(name, False, f"the {what} for event {message['event']} arrived {header}: "
               "the plugin ignored the verification request")


def plugin_alert(unmarked: List[dict], token: Optional[str], traced: bool, spool_dir: str,
                 status_error: Optional[str]) -> dict:
    """UNMARKED: our event's alerts that came without our token; TRACED: some part after
    the plugin (held, spool, MTA queue, delivery) shows the alert."""
    if unmarked:
        return unmarked_hop("plugin_alert", "alert", unmarked[0], token)
    if traced:
        return hop("plugin_alert", True, "the plugin handled the event")
    return hop("plugin_alert", False, "no trace of an alert for the event: nothing held back, "
               f"nothing in {spool_dir}/queue, nothing new in the MTA queue, no delivery in "
               "status.json since the command ran" + (f"; {status_error}" if status_error else ""))


def rate_limit(held: dict, token: Optional[str]) -> dict:
    if held:
        rules = ", ".join(f"{name} (+{count})" for name, count in sorted(held.items()))
        why = ("although the verification request was in place" if token
               else "(an ordinary alert: verify_marker is false)")
        return hop("rate_limit", False, f"status.json: rule(s) {rules} held alerts back since "
                   f"the command ran, {why}")
    return hop("rate_limit", True, "status.json: nothing held back since the command ran")


def plugin_delivery(queued: List[dict], status: Optional[dict], spool_dir: str,
                    name: str = "plugin_delivery", what: str = "alert",
                    ours: str = "for the event") -> dict:
    """QUEUED: our alerts (WHAT, OURS says which) that wait in the plugin's spool queue."""
    if queued:
        return hop(name, False, f"the {what} waits in {queued[0]['file']}; "
                   f"the plugin's last error: {(status or {}).get('last_error')}")
    return hop(name, True, f"no {what} {ours} waits in {spool_dir}/queue")


def mta_queue(mail_queue: Optional[dict], new_ids: List[str], since: str = "the command ran",
              name: str = "mta_queue") -> dict:
    """MAIL_QUEUE: mailq now ({"ids", "error"}, None without mailq); NEW_IDS: its ids that
    were not there before."""
    if mail_queue is None:
        return hop(name, True, "no mailq on this host to ask")
    if not (mail_queue["error"] or new_ids):
        return hop(name, True, f"mailq lists no mail queued since {since}")
    found = [f"{mail_queue['error']} (is the MTA running?)"] if mail_queue["error"] else []
    if new_ids:
        found.append(f"mailq lists mail queued since {since}: " + ", ".join(new_ids))
    return hop(name, False, "; ".join(found))


def mailbox_not_written(path: str, what: str, before: dict, after: dict,
                        name: str = "mailbox") -> dict:
    """The last hop when the awaited mail (WHAT) is not in the mailbox by the timeout."""
    found = (f"{after['kind']}, size {before['size']} then {after['size']}"
             if after["exists"] else "it does not exist")
    return hop(name, False, f"no {what} in {path} ({found})")


def after_command(seen: dict) -> List[dict]:
    """The hops after the command, in chain order, when no alert came, from the evidence
    of Verification.look_after (keys as used below)."""
    events, token = seen["events"], seen["token"]
    logged = event_logged(events, seen["search"], seen["rc"], seen["command"])
    if not events:
        return [logged]
    event_ids = [event["id"] for event in events]
    held = held_growth(seen["held_before"], alert_plugin.held_counts(seen["status"], seen["key"]))
    queued = [alert for alert in seen["queued"] if alert_matches(alert, event_ids, token)]
    new_ids = new_in_queue(seen["mail_queue_before"], seen["mail_queue"])
    unmarked = [message for message in seen["messages"]
                if token and message["event"] in event_ids and message["verify"] != token]
    traced = bool(held or queued or new_ids or delivered_since(seen["status"], seen["started"]))
    return [
        logged,
        plugin_alert(unmarked, token, traced, seen["spool_dir"], seen["status_error"]),
        rate_limit(held, token),
        plugin_delivery(queued, seen["status"], seen["spool_dir"]),
        mta_queue(seen["mail_queue"], new_ids),
        mailbox_not_written(seen["mailbox"], f"alert for event(s) {', '.join(event_ids)}",
                            seen["mailbox_before"], seen["mailbox_after"]),
    ]


# -- the tamper path: a rule with the key removed, then put back --------------------------

def tamper_before(key: str, rules: List[str], enabled: Optional[int], config: dict) -> List[dict]:
    """The broken hop that keeps the tamper check from removing anything, or []: RULES are
    the loaded rules with KEY, ENABLED is `auditctl -s` enabled, CONFIG the plugin config."""
    if enabled == 2:
        return [hop("tamper_removed", False, "auditctl -s: enabled 2, the rules are locked "
                    "until reboot: no rule can be removed, by us or by anyone")]
    if not rules:
        return [hop("tamper_removed", False, f"auditctl -l -k {key} lists no rule with key {key}")]
    if not config["tamper"]:
        return [hop("tamper_plugin", False, f"[tamper] enabled = no in {config['file']}: the "
                    "plugin mails no tamper alert")]
    return []


def maintenance_pause(marker: Optional[alert_plugin.Maintenance], boot_id: str, uptime: float,
                      timeout: int, spool_dir: str) -> Tuple[float, Optional[dict]]:
    """(seconds to wait before removing the rule, so that the plugin does not take the
    removal for the role's own work; or 0 and the broken hop when that is longer than
    TIMEOUT). MARKER: alert_plugin.read_maintenance; BOOT_ID and UPTIME: this boot's id
    and seconds since boot (alert_plugin.read_boot_id, read_uptime). The plugin honours the
    marker while alert_plugin.maintenance_open, i.e. until UNTIL + 5 on the boot clock."""
    if not alert_plugin.maintenance_open(marker, boot_id, uptime):
        return 0.0, None
    until = min(marker.until, marker.opened + alert_plugin.MAINTENANCE_MAX)
    pause = round(until + alert_plugin.MAINTENANCE_LATE + 1 - uptime, 2)
    if pause > timeout:
        return 0.0, hop("tamper_plugin", False, f"{spool_dir}/maintenance: the role's "
                        f"maintenance window (until {until:.2f} s since boot) is open "
                        f"for {pause:.0f} s more, and the plugin takes a removal in it for "
                        "the role's own work")
    return pause, None


def tamper_logged(removals: List[dict], key: str, search: str) -> dict:
    if not removals:
        return hop("tamper_logged", False, f"{search} finds no op=remove_rule record for key "
                   f"{key} since the rule was removed; does auditd write its log?")
    return hop("tamper_logged", True, "CONFIG_CHANGE op=remove_rule: "
               + ", ".join(change["id"] for change in removals))


def tamper_plugin(unmarked: List[dict], token: str, suppressed: int, traced: bool,
                  spool_dir: str, status_error: Optional[str]) -> dict:
    """UNMARKED: tamper mails for our removal without our token; SUPPRESSED: how much
    status.json tamper_suppressed grew; TRACED: the spool, the MTA queue or a delivery
    shows a mail. (A plugin config with [tamper] enabled = no stops tamper_before.)"""
    if unmarked:
        return unmarked_hop("tamper_plugin", "tamper mail", unmarked[0], token)
    if suppressed > 0:
        return hop("tamper_plugin", False, f"status.json: tamper_suppressed +{suppressed}: the "
                   f"plugin took the removal for the role's own work ({spool_dir}/maintenance)")
    if traced:
        return hop("tamper_plugin", True, "the plugin handled the removal")
    return hop("tamper_plugin", False, "no trace of a tamper alert: nothing in "
               f"{spool_dir}/queue, nothing new in the MTA queue, no delivery in status.json "
               "since the rule was removed" + (f"; {status_error}" if status_error else ""))


def tamper_after(seen: dict) -> List[dict]:
    """The tamper hops after the removal, in chain order, when no tamper mail came, from
    the evidence of TamperCheck.look_after (keys as used below)."""
    key, token = seen["key"], seen["token"]
    removals = [change for change in seen["changes"]
                if change["op"] == "remove_rule" and change["ok"] and key in change["keys"]]
    logged = tamper_logged(removals, key, seen["search"])
    if not removals:
        return [logged]
    removal_ids = [change["id"] for change in removals]
    queued = [alert for alert in seen["queued"] if alert["key"] == alert_plugin.TAMPER_KEY
              and alert_matches(alert, None, token)]
    new_ids = new_in_queue(seen["mail_queue_before"], seen["mail_queue"])
    unmarked = [message for message in seen["messages"]
                if message["event"] in removal_ids and message["verify"] != token]
    suppressed = (_number(seen["status"], "tamper_suppressed")
                  - _number(seen["status_before"], "tamper_suppressed"))
    traced = bool(queued or new_ids or delivered_since(seen["status"], seen["started"]))
    return [
        logged,
        tamper_plugin(unmarked, token, suppressed, traced, seen["spool_dir"],
                      seen["status_error"]),
        plugin_delivery(queued, seen["status"], seen["spool_dir"], name="tamper_delivery",
                        what="tamper alert", ours="with our token"),
        mta_queue(seen["mail_queue"], new_ids, since="the rule was removed",
                  name="tamper_mta_queue"),
        mailbox_not_written(seen["mailbox"], f"tamper mail with X-Audit-Verify {token}",
                            seen["mailbox_before"], seen["mailbox_after"], name="tamper_mailbox"),
    ]


def _number(status: Optional[dict], name: str) -> int:
    value = (status or {}).get(name)
    return value if isinstance(value, int) else 0
