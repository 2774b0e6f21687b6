"""The command line: `audisp-mailalert [--config PATH] [--print] [KEY ...]`."""

# Python 3.6 (RHEL 8) has no list[str] or X | None in annotations: keep typing's names.
# ruff: noqa: UP006, UP035, UP045

import argparse
import sys
from typing import List, Optional

from . import PROG
from .config import DEFAULT_CONFIG, ConfigError, load_config
from .events import auparse
from .log import Log, stderr_is_useful
from .plugin import Plugin

EXIT_USAGE = 2


def parse_args(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG, description="auditd plugin: mail an alert when an audit event carries a "
        "watched key. Reads the audit stream (plugins.d format = string) on stdin.")
    parser.add_argument("--config", default=None, metavar="PATH",
                        help=f"INI config file (default {DEFAULT_CONFIG})")
    parser.add_argument("--print", action="store_true", dest="print_only",
                        help="write each composed message to stdout (mbox) instead of "
                        "delivering it, e.g. to test a config against `ausearch --raw` output")
    parser.add_argument("keys", nargs="*", metavar="KEY",
                        help="audit keys forming one extra rule (named args) mailed to [mail] to")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
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
    return Plugin(config, log, args.print_only, args.keys).run()
