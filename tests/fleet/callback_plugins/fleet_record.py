"""Write every task result of a playbook run as one JSON line, for the fleet tests.

ansible-core ships no JSON callback (`ansible-doc -t callback -l`: default, junit, minimal,
oneline, tree) and ansible.posix is not installed, so the fleet tests bring this one:
    ANSIBLE_CALLBACK_PLUGINS=tests/fleet/callback_plugins ANSIBLE_CALLBACKS_ENABLED=fleet_record
    FLEET_RECORD=run.jsonl ansible-playbook ...
Lines: {"event": "batch"} when a serial batch starts (ansible starts the play again for
each), {"event": "task"} when a task or handler starts, {"event": "result"} per host and
task (status ok/changed/failed/skipped/unreachable, seconds from the host's start of the
task to its result), {"event": "recap"} per host at the end (the PLAY RECAP's counts).
"""

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: fleet_record
type: aggregate
short_description: one JSON line per task result, for the fleet tests
description:
  - Writes batches, task starts, per-host results with their durations and the recap to
    the file named by the environment variable FLEET_RECORD.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "fleet_record"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        path = os.environ.get("FLEET_RECORD")
        self._out = open(path, "w", encoding="utf-8") if path else None  # noqa: SIM115
        self._started = {}
        self._origin = time.monotonic()

    def _write(self, **fields):
        if self._out is None:
            return
        fields["t"] = round(time.monotonic() - self._origin, 3)
        self._out.write(json.dumps(fields, sort_keys=True) + "\n")
        self._out.flush()

    @staticmethod
    def _task_fields(task):
        role = task._role.get_name(include_role_fqcn=False) if task._role else None
        return {"task": task.name or task.action, "action": task.action, "role": role, "uuid": task._uuid}

    def v2_playbook_on_play_start(self, play):
        self._write(event="batch", play=play.get_name())

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._write(event="task", handler=False, **self._task_fields(task))

    def v2_playbook_on_handler_task_start(self, task):
        self._write(event="task", handler=True, **self._task_fields(task))

    def v2_runner_on_start(self, host, task):
        self._started[(host.get_name(), task._uuid)] = time.monotonic()

    def _result(self, result, status):
        host = result._host.get_name()
        task = result._task
        started = self._started.pop((host, task._uuid), None)
        seconds = None if started is None else round(time.monotonic() - started, 3)
        if status == "ok" and result.is_changed():
            status = "changed"
        fields = {"host": host, "status": status, "seconds": seconds, **self._task_fields(task)}
        if status in ("failed", "unreachable"):
            fields["msg"] = str(result._result.get("msg", ""))
        self._write(event="result", **fields)

    def v2_runner_on_ok(self, result):
        self._result(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._result(result, "ignored" if ignore_errors else "failed")

    def v2_runner_on_skipped(self, result):
        self._result(result, "skipped")

    def v2_runner_on_unreachable(self, result):
        self._result(result, "unreachable")

    def v2_playbook_on_stats(self, stats):
        for host in sorted(stats.processed):
            self._write(event="recap", host=host, **stats.summarize(host))
        if self._out is not None:
            self._out.close()
            self._out = None
