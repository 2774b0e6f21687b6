"""Rate limits: at most max_mails mails per rule and window, then one digest."""

# Python 3.6 (RHEL 8) has no list[str] or X | None in annotations: keep typing's names.
# ruff: noqa: UP006, UP035

from collections import Counter
from typing import List, Tuple

from .config import Rule
from .text import escape_text

MAX_DIGEST_GROUPS = 1000  # distinct subject/action/object groups kept per digest


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
            shown = ("(other)", "(other)", "(other)")
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
        """The rule's status.json row."""
        window = self.windows.get(rule.name)
        return {"keys": rule.keys, "window_end": window.end if window else None,
                "sent": window.sent if window else 0, "held": window.held.total if window else 0}
