"""Config and command line: every bad value is refused with exit code 2 and a message that
names the file, the section and the key; good files give the documented defaults."""

import os

import pytest
from conftest import log_bytes, run_plugin, write_config
from mailalert.config import load_config

GOOD_RULE = "[rule r]\nkeys = amx-hostile\n"
NOBODY = 65534


@pytest.mark.parametrize("text, section, key, words", [
    ("[mail]\ncolour = blue\n" + GOOD_RULE, "[mail]", "colour", "unknown key"),
    ("[mail]\ntransport = pigeon\n" + GOOD_RULE, "[mail]", "transport", "sendmail or smtp"),
    ("[mail]\nto = root, -oQ/tmp/x\n" + GOOD_RULE, "[mail]", "to", "not a plain mail address"),
    ("[mail]\nto = a@b\nc@d\n" + GOOD_RULE, "", "", "parsing"),
    ("[mail]\nsendmail = sendmail\n" + GOOD_RULE, "[mail]", "sendmail", "absolute path"),
    ("[mail]\nsmtp_tls = maybe\n" + GOOD_RULE, "[mail]", "smtp_tls", "starttls, tls or none"),
    ("[mail]\ntransport = smtp\n" + GOOD_RULE, "[mail]", "smtp_host", "required"),
    ("[mail]\nsmtp_port = 70000\n" + GOOD_RULE, "[mail]", "smtp_port", "out of range"),
    ("[mail]\ntimeout = soon\n" + GOOD_RULE, "[mail]", "timeout", "not a whole number"),
    ("[limits]\nmax_mails = 0\n" + GOOD_RULE, "[limits]", "max_mails", "out of range"),
    ("[limits]\nwindow = -5\n" + GOOD_RULE, "[limits]", "window", "out of range"),
    ("[spool]\ndir = spool\n" + GOOD_RULE, "[spool]", "dir", "absolute path"),
    ("[spool]\nretry_min = 60\nretry_max = 10\n" + GOOD_RULE, "[spool]", "retry_max", "retry_min"),
    ("[rule r]\nto = root\n", "[rule r]", "keys", "required"),
    ("[rule r]\nkeys = with space\n", "[rule r]", "keys", "without spaces"),
    ("[rule r]\nkeys = ,\n", "[rule r]", "keys", "no audit key"),
    ("[rule r]\nkeys = k\nwindow = 1h\n", "[rule r]", "window", "not a whole number"),
    ("[rule r]\nkeys = k\nfilter = x\n", "[rule r]", "filter", "unknown key"),
    ("[rule bad/name]\nkeys = k\n", "[rule bad/name]", "", "rule name"),
    ("[rule args]\nkeys = k\n", "[rule args]", "", "rule name"),
    ("[rules]\nkeys = k\n", "[rules]", "", "unknown section"),
    ("[DEFAULT]\nto = root\n" + GOOD_RULE, "[DEFAULT]", "", "unknown section"),
    ("[mail]\nto = root\n", "", "", "nothing to watch"),
    # configparser keeps both sections; the names are the same once stripped
    ("[rule r]\nkeys = a\n[rule  r ]\nkeys = b\n", "[rule  r ]", "", "a second rule named 'r'"),
    ("[mail]\nfrom = a@example.com, b@example.com\n" + GOOD_RULE, "[mail]", "from",
     "one address only, not 2"),
])
def test_bad_config_is_refused_naming_file_section_and_key(tmp_path, text, section, key, words):
    config = write_config(tmp_path, text)
    result = run_plugin(["--config", config, "--print"], log_bytes("hostile"))
    message = result.stderr.decode()
    assert result.returncode == 2, message
    assert str(config) in message
    assert f"{section} {key}".strip() in message
    assert words in message
    assert result.stdout == b"", "nothing may be processed with a bad config"


def test_smtp_password_file_must_be_private(tmp_path):
    secret = tmp_path / "pass"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    config = write_config(tmp_path, "[mail]\ntransport = smtp\nsmtp_host = localhost\n"
                          f"smtp_user = alert\nsmtp_password_file = {secret}\n{GOOD_RULE}")
    result = run_plugin(["--config", config, "--print"])
    assert result.returncode == 2
    assert "[mail] smtp_password_file" in result.stderr.decode()
    assert "0600" in result.stderr.decode()
    secret.chmod(0o600)
    assert run_plugin(["--config", config, "--print"]).returncode == 0
    secret.write_text("w\u00f6rd\n")
    result = run_plugin(["--config", config, "--print"])
    assert result.returncode == 2 and "'ascii' codec" in result.stderr.decode()


def test_smtp_password_file_must_be_owned_by_the_plugins_user(tmp_path):
    """Mode 0600 is not private when the file is somebody else's: they can read and
    change it. The plugin runs as root (the tests too), so root must own it."""
    if os.geteuid() != 0:
        pytest.skip("needs root to give the file to nobody")
    secret = tmp_path / "pass"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    config = write_config(tmp_path, "[mail]\ntransport = smtp\nsmtp_host = localhost\n"
                          f"smtp_user = alert\nsmtp_password_file = {secret}\n{GOOD_RULE}")
    os.chown(secret, NOBODY, NOBODY)
    result = run_plugin(["--config", config, "--print"])
    message = result.stderr.decode()
    assert result.returncode == 2, message
    assert f"[mail] smtp_password_file: {secret} is owned by uid {NOBODY}, not {os.geteuid()}" in message
    os.chown(secret, os.geteuid(), os.getegid())
    assert run_plugin(["--config", config, "--print"]).returncode == 0


@pytest.mark.parametrize("address", ["-oQ/tmp/x", "ops(team)", "sec:x"])
def test_check_config_refuses_as_the_start_does(tmp_path, address):
    """--check-config: the start's own check, the problem on stdout, exit 2 (the role
    reports it naming its variable)."""
    config = write_config(tmp_path, f"[mail]\nto = root\n[rule r]\nkeys = k\nto = {address}\n")
    start = run_plugin(["--config", config, "--print"])
    check = run_plugin(["--config", config, "--check-config"])
    assert (start.returncode, check.returncode) == (2, 2), (start, check)
    assert check.stdout.decode() == f"{config}: [rule r] to: not a plain mail address (user or user@domain): {address!r}\n"
    assert check.stdout.decode().split(": ", 1)[1] in start.stderr.decode()


def test_check_config_accepts_a_good_config_silently(tmp_path):
    config = write_config(tmp_path, "[mail]\nto = root, ops@example.com\n" + GOOD_RULE)
    check = run_plugin(["--config", config, "--check-config"])
    assert (check.returncode, check.stdout, check.stderr) == (0, b"", b"")


def test_check_config_without_files_checks_only_their_paths(tmp_path):
    """The role checks on the controller a config whose CA bundle and password file are on
    the target: --without-files leaves them unopened, and still refuses a relative path."""
    text = ("[mail]\ntransport = smtp\nsmtp_host = relay\nsmtp_ca_file = /nonexistent/ca.pem\n"
            "smtp_user = alert\nsmtp_password_file = /nonexistent/pass\n" + GOOD_RULE)
    config = write_config(tmp_path, text)
    full = run_plugin(["--config", config, "--check-config"])
    assert full.returncode == 2 and b"[mail] smtp_ca_file: cannot load the CA bundle" in full.stdout, full
    assert run_plugin(["--config", config, "--check-config", "--without-files"]).returncode == 0
    relative = write_config(tmp_path, text.replace("/nonexistent/pass", "pass"))
    result = run_plugin(["--config", relative, "--check-config", "--without-files"])
    assert result.returncode == 2 and b"[mail] smtp_password_file: must be an absolute path" in result.stdout


def test_explicit_config_that_does_not_exist_is_refused(tmp_path):
    result = run_plugin(["--config", tmp_path / "missing.conf", "--print", "k"])
    assert result.returncode == 2
    assert "missing.conf: no such file" in result.stderr.decode()


def test_bad_command_line_exits_2():
    result = run_plugin(["--no-such-option"])
    assert result.returncode == 2
    assert "unrecognized arguments" in result.stderr.decode()


def test_key_argument_with_a_comma_is_refused(tmp_path):
    config = write_config(tmp_path, "[mail]\nto = root\n")
    result = run_plugin(["--config", config, "--print", "a,b"])
    assert result.returncode == 2
    assert "KEY" in result.stderr.decode()


def test_defaults(tmp_path):
    config = load_config(str(write_config(tmp_path, GOOD_RULE)), [], True)
    assert config.to == ["root"]
    assert config.transport == "sendmail"
    assert config.sendmail == "/usr/sbin/sendmail"
    assert config.spool_dir == "/var/spool/audisp-mailalert"
    assert (config.max_mails, config.window) == (10, 300)
    assert config.smtp_tls == "starttls" and config.smtp_port == 25
    rule = config.rules[0]
    assert (rule.name, rule.keys, rule.to, rule.max_mails, rule.window) == (
        "r", ["amx-hostile"], ["root"], 10, 300)


def test_rule_overrides_and_key_arguments(tmp_path):
    path = write_config(tmp_path, "[mail]\nto = sec@example.com, ops@example.com\n"
                        "[limits]\nmax_mails = 4\nwindow = 60\n"
                        "[rule web]\nkeys = web-conf, web-bin\nto = web@example.com\n"
                        "max_mails = 2\n[rule other]\nkeys = other\nwindow = 10\n")
    config = load_config(str(path), ["alert", "second"], True)
    rules = {r.name: (r.keys, r.to, r.max_mails, r.window) for r in config.rules}
    assert rules == {
        "web": (["web-conf", "web-bin"], ["web@example.com"], 2, 60),
        "other": (["other"], ["sec@example.com", "ops@example.com"], 4, 10),
        "args": (["alert", "second"], ["sec@example.com", "ops@example.com"], 4, 60),
    }


def test_default_config_may_be_absent_when_keys_are_given():
    config = load_config("/nonexistent/audisp-mailalert.conf", ["alert"], False)
    assert [(r.name, r.keys, r.to) for r in config.rules] == [("args", ["alert"], ["root"])]
