"""Rate limits: at most max_mails mails per rule and window, then one digest."""

# Python 3.6 (RHEL 8) has no list[str] or X | None in annotations: keep typing's names.
# ruff: noqa: UP006, UP035

from collections import Counter
from typing import Dict, List, Tuple

from .config import Rule
from .text import escape_text

MAX_DIGEST_GROUPS = 1000  # distinct subject/action/object groups kept per digest
MAX_SAVED_GROUPS = 100  # of them in status.json (the biggest): the rest is saved as "(other)"
OTHER = ("(other)", "(other)", "(other)")


class Held:
    """What a rule held back in its current window."""

    def __init__(self) -> None:
        self.total = 0
        self.groups = Counter()  # type: Counter
        self.first = 0.0


class Window:
    """A rule's current rate-limit window."""

    def __init__(self, rule: Rule, end: float) -> None:
        self.rule = rule  # as it was when the window began: a reload may drop it
        self.end = end
        self.sent = 0
        self.held = Held()


class Digest:
    """What one rule held back in one window, due to be mailed."""

    def __init__(self, rule: Rule, held: Held, window_end: float) -> None:
        self.rule = rule
        self.held = held
        self.window_end = window_end


def _shown(part) -> str:
    """A group's part as status.json has it: escaped already (escape_text), unless the
    file was changed by hand."""
    return part if isinstance(part, str) and part.isprintable() and len(part) <= 120 \
        else escape_text(str(part), 120)


class RateLimiter:
    """One window per rule (it starts with the first event after the last one ended): the
    first max_mails events are admitted, the rest are held back, counted by group, and
    reported in one digest when the window ends. Knows nothing of events or mail."""

    def __init__(self) -> None:
        self.windows = {}  # type: dict  # rule name -> its Window
        self.due = []  # type: List[Digest]  # of windows that admit() found ended

    def admit(self, rule: Rule, group: Tuple[str, str, str], now: float) -> bool:
        """Whether an event of the rule may be mailed now; else it is held back under group
        (subject, action, object)."""
        window = self.windows.get(rule.name)
        if window is None or now >= window.end:
            if window is not None and window.held.total:
                self.due.append(Digest(rule, window.held, window.end))
            window = self.windows[rule.name] = Window(rule, now + rule.window)
        if window.sent < rule.max_mails:
            window.sent += 1
            return True
        held = window.held
        if not held.total:
            held.first = now
        held.total += 1
        shown = (escape_text(group[0], 60), escape_text(group[1], 60), escape_text(group[2], 120))
        if shown not in held.groups and len(held.groups) >= MAX_DIGEST_GROUPS:
            shown = OTHER
        held.groups[shown] += 1
        return False

    def digests(self, rules: List[Rule], now: float, force: bool = False) -> List[Digest]:
        """The digests due: those admit() found, and one for each window that ended (every
        window, when forced: at exit). Ended windows are forgotten, and so are the windows
        of rules that are no longer among rules, after their digest."""
        due, self.due = self.due, []
        current = {rule.name: rule for rule in rules}
        for name, window in list(self.windows.items()):
            ended = now >= window.end
            rule = current.get(name)
            if window.held.total and (ended or force or rule is None):
                due.append(Digest(rule or window.rule, window.held, min(now, window.end)))
                window.held = Held()
            if ended or rule is None:
                del self.windows[name]
        return due

    def row(self, rule: Rule) -> dict:
        """The rule's status.json row: enough of its window for the next plugin to go on
        with it (resume)."""
        window = self.windows.get(rule.name)
        if window is None:
            return {"keys": rule.keys, "window_end": None, "sent": 0, "held": 0}
        held = window.held
        groups = held.groups.most_common(MAX_SAVED_GROUPS)
        rest = held.total - sum(count for _group, count in groups)
        if rest:
            groups.append((OTHER, rest))
        return {"keys": rule.keys, "window_end": window.end, "sent": window.sent, "held": held.total,
                "held_first": held.first, "held_groups": [list(group) + [count] for group, count in groups]}

    def resume(self, rows: dict, rules: Dict[str, Rule]) -> List[str]:
        """Go on with the windows the plugin before this one left in status.json (rows: its
        "rules"), of the rules named in rules: what they sent and held back counts here as
        if this plugin had done it; a window that ended since is digested by this one. The
        names of the rules resumed; a row that is not what row() writes is passed over."""
        resumed = []
        for name, row in rows.items():
            rule = rules.get(name)
            window = self._window(rule, row) if rule is not None and isinstance(row, dict) else None
            if window is not None:
                self.windows[name] = window
                resumed.append(name)
        return resumed

    @staticmethod
    def _window(rule: Rule, row: dict):
        end, sent, total = row.get("window_end"), row.get("sent"), row.get("held")
        groups = row.get("held_groups", [])
        if not (isinstance(end, (int, float)) and isinstance(sent, int) and isinstance(total, int)
                and sent >= 0 and total >= 0 and isinstance(groups, list)):
            return None
        window = Window(rule, float(end))
        window.sent = sent
        window.held.total = total
        window.held.first = float(row.get("held_first") or end)
        for group in groups:
            if isinstance(group, list) and len(group) == 4 and isinstance(group[3], int) and group[3] > 0:
                window.held.groups[tuple(_shown(part) for part in group[:3])] += group[3]
        counted = sum(window.held.groups.values())
        if counted < total:
            window.held.groups[OTHER] += total - counted
        return window
