"""playbooks/deploy.yml across a fleet: FLEET_SIZE (default 15, as make test-fleet sets
it) systemd containers from the lab's Debian 12 rootfs, in three groups with their own recipients and rules, the vaulted
SMTP password, files only (a container has no kernel audit: audit_mail_alert_manage_auditd
is false, as in extensions/molecule/docker). The tests run in file order on one fleet and
build on each other (make test-fleet runs pytest with -x):

1. the first run deploys every host as the inventory says, in the batches serial decides;
2. a second run changes nothing on any host;
3. --tags rules after one key changed in one group's vars touches only that group's hosts,
   and there only the rules file and the plugin config (and notifies the reload);
4. state absent leaves no file of the product on any host;
5. on the clean fleet, a batch where hosts fail the role's validation (bad host vars)
   stops the rollout: the hosts of the later batches are left untouched.

Figures (wall times, tasks per host, where a run spends its time): build/fleet/figures.txt.
Run with `make test-fleet` (docker, the collection tree, the lab image).
"""

import os
import shutil
import subprocess
import time

import fleet as F
import pytest

SIZE = int(os.environ.get("FLEET_SIZE", "15"))
# The changed key of test 3, in group db: pg-config becomes pg-conf.
TAGGED_GROUP, OLD_KEY, NEW_KEY = "db", "pg-config", "pg-conf"
RULE_TASKS = {"Plugin | Write the plugin config", "Rules | Write the audit rules"}
RELOAD_HANDLERS = {"Read auditd's pid for the reload", "Reload auditd"}
# Test 5: the bad host vars, each refused by the role's validation before any change.
BAD_HOST_VARS = [
    # a header injection through a recipient
    {"audit_mail_alert_to": ["secops@example.com\nBcc: attacker@example.net"]},
    # nobody to mail
    {"audit_mail_alert_to": []},
]
REFUSING_TASK = "Validate | Recipients, transport, limits and the rules together"


def problems_text(problems: dict[str, list[str]]) -> str:
    return "\n".join(f"{host}: {'; '.join(p)}" for host, p in problems.items() if p)


@pytest.fixture(scope="module")
def fleet():
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "info"], capture_output=True, check=False).returncode:
        pytest.fail("no docker daemon: run through `make test-fleet` (tests/lab/with-dockerd.sh)")
    if not (F.BUILD / "ansible_collections/linux_audit/mail_alert/roles").is_dir():
        pytest.fail("no collection tree: run `make collection-tree` (make test-fleet does)")
    assert SIZE >= 10, "FLEET_SIZE below 10 leaves too few serial batches for the failing-batch test"
    began = time.monotonic()
    fl = F.Fleet(SIZE)
    start_seconds = 0.0
    F.teardown()
    try:
        start_seconds = fl.start()
        print(f"==> fleet: {SIZE} containers up (ssh answers) in {start_seconds:.1f} s", flush=True)
        fl.write_inventory()
        # The scan and the path checks see nothing of the product before the first run.
        before = fl.probe_all()
        dirty = {h: s["found"] + [p for p, e in s["paths"].items() if e] for h, s in before.items()}
        assert not any(dirty.values()), f"product files before any run: {dirty}"
        yield fl
    finally:
        F.teardown()
        if fl.runs:
            text = F.figures_text(fl, start_seconds, time.monotonic() - began)
            (F.WORK / "figures.txt").write_text(text)
            print("\n==> fleet figures (build/fleet/figures.txt)\n" + text, flush=True)


def test_first_run_deploys_every_host(fleet):
    run = fleet.playbook("first")
    assert run.rc == 0, run
    assert sorted(run.recap) == sorted(fleet.hosts), run
    bad = {h: r for h, r in run.recap.items() if r["failures"] or r["unreachable"] or not r["changed"]}
    assert not bad, f"hosts failed, unreachable or unchanged on the first run: {bad}"
    # serial 20% of the ordered host list decides the batches: ansible ran exactly those.
    assert run.batches() == [set(b) for b in fleet.batches()], (run.batches(), fleet.batches())
    states = fleet.probe_all()
    problems = {h: fleet.deployment_problems(h, s) for h, s in states.items()}
    assert not any(problems.values()), problems_text(problems)
    # The vaulted password reached the hosts and never the output (the role's no_log).
    assert fleet.smtp_password not in run.log.read_text()


def test_second_run_changes_nothing(fleet):
    run = fleet.playbook("unchanged")
    assert run.rc == 0, run
    assert sorted(run.recap) == sorted(fleet.hosts), run
    changed = {h: r["changed"] for h, r in run.recap.items() if r["changed"] or r["failures"]}
    assert not changed, f"PLAY RECAP reports changes or failures on a second run: {changed}"
    assert run.changed() == {}, f"tasks that reported a change: {run.changed()}"


def test_tags_rules_touches_only_the_changed_group(fleet):
    others = [h for h in fleet.hosts if fleet.group_of[h] != TAGGED_GROUP]
    members = fleet.groups[TAGGED_GROUP]
    before = fleet.probe_all()
    rules = fleet.group_vars[TAGGED_GROUP]["audit_mail_alert_extra_rules"]
    assert [r["key"] for r in rules] == [OLD_KEY]
    rules[0]["key"] = NEW_KEY
    fleet.write_group_vars(TAGGED_GROUP)

    run = fleet.playbook("tags-rules", "--tags", "rules")
    assert run.rc == 0, run
    # Changes on exactly the group's hosts, and there exactly the rules file and config.
    changed = {h: sorted(tasks) for h, tasks in run.changed().items()}
    assert changed == {h: sorted(RULE_TASKS) for h in members}, f"changed tasks per host: {changed}"
    # The config change notified the reload on those hosts only (it skips itself where
    # auditd is not managed), and nothing asked for a restart.
    for handler in RELOAD_HANDLERS:
        assert run.hosts_with(handler) == set(members), (handler, run.hosts_with(handler))
    assert run.hosts_with("Restart auditd") == set()
    # Only the tagged steps ran: no package or SELinux task, no plugin program copy.
    ran = {r["task"] for r in run.results}
    assert not {t for t in ran if t.startswith(("Packages |", "SELinux |"))}, sorted(ran)
    assert "Plugin | Install the plugin program" in ran  # plugin.yml is tagged rules as a whole

    after = fleet.probe_all()
    problems = {h: fleet.deployment_problems(h, s) for h, s in after.items()}
    assert not any(problems.values()), problems_text(problems)
    for host in members:
        text = after[host]["paths"][F.role_paths()["rules_file"]]["text"]
        assert f"key={NEW_KEY}" in text and f"key={OLD_KEY}" not in text, text
    unchanged = {h for h in others if before[h] != after[h]}
    assert not unchanged, f"files changed on hosts outside {TAGGED_GROUP}: {sorted(unchanged)}"


def test_absent_leaves_no_product_file(fleet):
    run = fleet.playbook("absent", "-e", "audit_mail_alert_state=absent")
    assert run.rc == 0, run
    assert sorted(run.recap) == sorted(fleet.hosts), run
    assert all(r["changed"] for r in run.recap.values()), run.recap
    states = fleet.probe_all()
    left = {h: s["found"] + [p for p, e in s["paths"].items() if e] for h, s in states.items()}
    assert not any(left.values()), f"left behind: { {h: p for h, p in left.items() if p} }"


def test_failing_batch_stops_the_rollout(fleet):
    batches = fleet.batches()
    assert len(batches) >= 3, batches
    failing = 1  # the second batch: the first rolls out, the later ones must not
    bad_hosts = batches[failing][:len(BAD_HOST_VARS)]
    settings = F.playbook_settings()
    # More of the batch fails than max_fail_percentage allows.
    assert len(bad_hosts) / len(batches[failing]) * 100 > settings["max_fail_percentage"]
    for host, values in zip(bad_hosts, BAD_HOST_VARS, strict=True):
        fleet.write_host_vars(host, values)
    try:
        run = fleet.playbook("failing-batch")
    finally:
        for host in bad_hosts:
            fleet.write_host_vars(host, None)

    assert run.rc == 2, run
    done, later = batches[:failing], batches[failing + 1:]
    later_hosts = {h for b in later for h in b}
    # ansible stopped after the failing batch: no batch started after it, no result for a
    # host of a later batch, and the PLAY RECAP lists only the hosts that took part.
    assert run.batches() == [set(b) for b in batches[:failing + 1]], run.batches()
    assert not {r["host"] for r in run.results} & later_hosts, run
    assert sorted(run.recap) == sorted(h for b in batches[:failing + 1] for h in b), sorted(run.recap)
    # The bad hosts failed for their own reason, in the validation, naming the variable.
    failed = {r["host"]: r for r in run.results if r["status"] == "failed"}
    assert sorted(failed) == sorted(bad_hosts), failed
    for host in bad_hosts:
        assert failed[host]["task"] == REFUSING_TASK, failed[host]
        assert "audit_mail_alert_to" in failed[host]["msg"], failed[host]

    states = fleet.probe_all()
    problems = {h: fleet.deployment_problems(h, states[h]) for b in done for h in b}
    assert not any(problems.values()), problems_text(problems)
    # Nothing of the product on the failing batch (it stopped in the validation, before
    # any change, the good hosts too) nor on any host of a later batch.
    touched = {h: states[h]["found"] + [p for p, e in states[h]["paths"].items() if e]
               for b in batches[failing:] for h in b}
    assert not any(touched.values()), f"touched: { {h: p for h, p in touched.items() if p} }"
