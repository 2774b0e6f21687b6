"""Parse `auditctl -l` output into watches, so tests compare fields, not text."""

from __future__ import annotations

import shlex
from itertools import pairwise
from typing import NamedTuple


class Watch(NamedTuple):
    path: str
    perm: str
    key: str


def parse_watches(auditctl_list: str) -> list[Watch]:
    """Return the file watches of `auditctl -l`, in either form auditctl prints them.

    `-w PATH -p PERM -k KEY` and `-a always,exit ... -F path=PATH -F perm=PERM -F key=KEY`
    (the form kernels print for a watch on a single file, or the rule was written that way).
    """
    watches = []
    for line in auditctl_list.splitlines():
        words = shlex.split(line)
        fields: dict[str, str] = {}
        for flag, value in pairwise(words):
            if flag in ("-w", "-p", "-k"):
                fields[{"-w": "path", "-p": "perm", "-k": "key"}[flag]] = value
            elif flag == "-F" and "=" in value:
                name, _sep, field_value = value.partition("=")
                if name in ("path", "perm", "key"):
                    fields[name] = field_value
        if "path" in fields:
            watches.append(Watch(fields["path"], fields.get("perm", ""), fields.get("key", "")))
    return watches
