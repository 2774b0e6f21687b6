"""What a user checks after deploying the role: packages, files, config, rules, process."""

import configparser
import hashlib
from pathlib import Path

import pytest
from audit_rules import Watch, parse_watches
from test_tamper import tamper_mails

PLUGIN = "/sbin/audisp-mailalert"
PLUGIN_CONF = "/etc/audit/plugins.d/audisp-mailalert.conf"
CONFIG = "/etc/audit/audisp-mailalert.conf"
RULES_FILE = "/etc/audit/rules.d/60-audit-mail-alert.rules"
SPOOL = "/var/spool/audisp-mailalert"
LIB = "/usr/lib/audisp-mailalert"
# The collection's copy of the plugin's package (this file is extensions/molecule/*/tests/).
PACKAGE_SRC = Path(__file__).resolve().parents[4] / "files" / "mailalert"
# The scenario's role variables (molecule.yml): key `alert` watching /usr/bin/w.
EXPECTED_WATCH = Watch(path="/usr/bin/w", perm="x", key="alert")


def key_values(text):
    """auditd's plugins.d format: `name = value` lines, # comments."""
    pairs = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _sep, value = line.partition("=")
            pairs[name.strip()] = value.strip()
    return pairs


@pytest.mark.parametrize("package", ["auditd", "python3-audit"])
def test_package_installed(host, package):
    assert host.package(package).is_installed


def test_the_package_is_the_collections_and_compiled(host):
    sources = sorted(PACKAGE_SRC.rglob("*.py"))
    assert len(sources) > 10
    for source in sources:
        installed = host.file(f"{LIB}/{source.relative_to(PACKAGE_SRC.parent)}")
        assert (installed.exists, installed.mode, installed.user) == (True, 0o644, "root"), installed.path
        assert installed.sha256sum == hashlib.sha256(source.read_bytes()).hexdigest(), installed.path
        compiled = host.run(f"ls {installed.path.rsplit('/', 1)[0]}/__pycache__/{source.stem}.*.pyc")
        assert compiled.rc == 0, f"{installed.path} is not compiled"


@pytest.mark.parametrize(
    ("path", "mode"),
    [(PLUGIN, 0o750), (CONFIG, 0o640), (PLUGIN_CONF, 0o640), (SPOOL, 0o700)],
)
def test_file_owner_and_mode(host, path, mode):
    f = host.file(path)
    assert f.exists, path
    assert (f.user, f.group) == ("root", "root")
    assert f.mode == mode, f"{path}: mode {f.mode:o}, expected {mode:o}"


def test_plugin_accepts_the_deployed_config(host):
    """The plugin starts on the target's Python with auparse and the role's config.

    With --print and no input it reads end-of-file and exits 0; a config it rejects exits 2
    with the field named (design.md).
    """
    result = host.run(f"{PLUGIN} --config {CONFIG} --print </dev/null")
    assert result.rc == 0, result.stderr


def test_plugins_d_conf_starts_the_plugin(host):
    conf = key_values(host.file(PLUGIN_CONF).content_string)
    assert conf["active"] == "yes"
    assert conf["path"] == PLUGIN
    assert conf["type"] == "always"
    assert conf["format"] == "string"


def test_plugin_config_mails_root(host):
    config = configparser.ConfigParser(interpolation=None)
    config.read_string(host.file(CONFIG).content_string)
    assert "root" in [to.strip() for to in config["mail"]["to"].split(",")]
    rule_keys = {
        key.strip()
        for name in config.sections() if name.startswith("rule ")
        for key in config[name].get("keys", "").split(",")
    }
    assert EXPECTED_WATCH.key in rule_keys


def test_rules_file_holds_the_watch(host):
    assert EXPECTED_WATCH in parse_watches(host.file(RULES_FILE).content_string)


def test_rule_loaded_in_kernel(host, kernel_audit):
    listed = host.run("auditctl -l")
    assert listed.rc == 0, listed.stderr
    assert EXPECTED_WATCH in parse_watches(listed.stdout)


def test_auditd_running_and_enabled(host, kernel_audit):
    auditd = host.service("auditd")
    assert auditd.is_running
    assert auditd.is_enabled


def test_plugin_process_is_a_child_of_auditd(host, kernel_audit):
    # The watchdog's timer runs the same program once a minute (--watchdog): not the plugin.
    plugins = [p for p in host.process.filter() if PLUGIN in p.args and "--watchdog" not in p.args]
    assert len(plugins) == 1, [p.args for p in plugins]
    parent = host.process.get(pid=plugins[0].ppid)
    assert parent.comm == "auditd"
    assert plugins[0].user == "root"


def test_the_role_s_own_runs_mailed_no_tamper_finding(host, kernel_audit):
    """Converge and idempotence (the role's loads, restarts and reloads) mailed no tamper
    finding. Checked here, before test_reload.py and test_tamper.py make findings of their own."""
    assert [m["Subject"] for m in tamper_mails(host)] == []
