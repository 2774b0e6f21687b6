"""The command line: `audisp-mailalert [--config PATH] [--print | --record-state | --watchdog |
--check-config [--without-files]] [KEY ...]`."""

# Python 3.6 (RHEL 8) has no list[str] or X | None in annotations: keep typing's names.
# ruff: noqa: UP006, UP035, UP045

import argparse
import os
import sys
from typing import List, Optional

from . import PROG
from .audit_netlink import AuditNetlink
from .config import DEFAULT_CONFIG, Config, ConfigError, load_config
from .events import auparse
from .log import Log, stderr_is_useful
from .plugin import Plugin
from .spool import Spool
from .state_watch import record_state
from .watchdog import run_watchdog

EXIT_USAGE = 2


def parse_args(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG, description="auditd plugin: mail an alert when an audit event carries a "
        "watched key. Reads the audit stream (plugins.d format = string) on stdin.")
    parser.add_argument("--config", default=None, metavar="PATH",
                        help=f"INI config file (default {DEFAULT_CONFIG})")
    # One thing per run: the plugin itself, or one of the jobs beside it.
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--print", action="store_true", dest="print_only",
                      help="write each composed message to stdout (mbox) instead of "
                      "delivering it, e.g. to test a config against `ausearch --raw` output")
    mode.add_argument("--record-state", action="store_true",
                      help="read the rules and status the kernel enforces and keep them in the "
                      "spool as the deployed state that tamper alerts compare with (the role "
                      "runs it after it loads rules); then exit")
    mode.add_argument("--watchdog", action="store_true",
                      help="check once that auditd runs this program with this config and that "
                      "its status.json is fresh, and mail one tamper alert per outage when not "
                      "(the role runs it from a systemd timer or cron); then exit")
    mode.add_argument("--check-config", action="store_true",
                      help="check the config as the plugin does when it starts and exit: "
                      "0 and nothing printed when it would start with it, else 2 and the "
                      "problem on stdout as FILE: [SECTION] KEY: WHAT (the role checks the "
                      "config it renders so, before it writes anything)")
    parser.add_argument("--without-files", action="store_true",
                        help="with --check-config: do not open the files the config names "
                        "(smtp_ca_file, smtp_password_file), check only their paths; for a "
                        "config checked on another machine than the one it is for")
    parser.add_argument("keys", nargs="*", metavar="KEY",
                        help="audit keys forming one extra rule (named args) mailed to [mail] to")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.check_config:
        return check_config(args)
    log = Log()
    log.to_stderr = args.print_only or stderr_is_useful()
    try:
        config = load_config(args.config or DEFAULT_CONFIG, args.keys, args.config is not None)
    except ConfigError as err:
        log.to_stderr = True
        log.error(f"bad config: {err}")
        return EXIT_USAGE
    if auparse is None:
        log.to_stderr = True
        log.error("the auparse Python module is missing (install python3-audit)")
        return 1
    if args.watchdog:
        return run_watchdog(config, log, os.path.realpath(sys.argv[0]))
    if args.record_state:
        return record_deployed_state(config, log)
    return Plugin(config, log, args.print_only, args.keys).run()


def check_config(args: argparse.Namespace) -> int:
    """--check-config: the config loaded as at start; the problem printed, nothing logged
    (the check may run on a machine where the plugin does not)."""
    try:
        load_config(args.config or DEFAULT_CONFIG, args.keys, args.config is not None,
                    read_files=not args.without_files)
    except ConfigError as err:
        print(err)
        return EXIT_USAGE
    return 0


def record_deployed_state(config: Config, log: Log) -> int:
    """--record-state: the kernel's rules and status now are the deployed state."""
    spool = Spool(config.spool_dir)
    try:
        spool.prepare()
        netlink = AuditNetlink()
        try:
            state = record_state(spool, netlink)
        finally:
            netlink.close()
    except OSError as err:
        log.to_stderr = True
        log.error(f"cannot record the deployed audit state in {spool.deployed_path}: {err}")
        return 1
    print(f"recorded {len(state.rules)} rules and the status in {spool.deployed_path}")
    return 0
