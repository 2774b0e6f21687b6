"""Where the plugin's CPU time goes on a corpus: the plugin in-process (as its main loop
drives it, delivery replaced by counting), CPU time of each part of the reading path:
start-up (imports, config), reading and cutting the stream into lines, the key scan, the
sifter's run regex (the contiguous ended events it drops), and auparse with the handling
of the events fed to it. Prints one line per part.

usage: python benchmarks/sift_phases.py CORPUS CONFIG
"""

import os
import sys
import time
from collections import Counter
from pathlib import Path

STARTED = time.process_time()
sys.dont_write_bytecode = True  # as the program: start-up compiles the package
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "files"))
from mailalert.config import load_config
from mailalert.log import Log
from mailalert.plugin import READ_SIZE, Plugin


class Timed:
    """A regex or function whose calls add their CPU time to spent[name]."""

    def __init__(self, target, name: str, spent: Counter) -> None:
        self.target, self.name, self.spent = target, name, spent

    def __call__(self, *args):
        started = time.process_time()
        try:
            result = self.target(*args)
            # finditer's work is done while it is iterated: do it here
            return list(result) if hasattr(result, "__next__") else result
        finally:
            self.spent[self.name] += time.process_time() - started

    def __getattr__(self, attribute: str):
        method = getattr(self.target, attribute)
        return Timed(method, self.name, self.spent)


def main() -> None:
    corpus, config_path = sys.argv[1], sys.argv[2]
    spent = Counter()
    config = load_config(config_path, [], True)
    plugin = Plugin(config, Log(), True, [])
    mails = []
    plugin.outbox.put = mails.append
    sifter = plugin.sifter
    sifter.run_re = Timed(sifter.run_re, "run regex (drops contiguous ended events)", spent)
    sifter.feed = Timed(sifter.feed, "auparse and the handling of fed events", spent)
    plugin.pattern = Timed(plugin.pattern, "key scan", spent)
    plugin.finish_input = Timed(plugin.finish_input, "auparse and the handling of fed events", spent)
    spent["start-up (imports, config)"] = time.process_time() - STARTED
    started = time.process_time()
    descriptor = os.open(corpus, os.O_RDONLY)
    while True:
        data = os.read(descriptor, READ_SIZE)
        if not data:
            break
        plugin.framer.feed(data)
    plugin.finish_input()
    total = time.process_time() - started
    spent["reading, lines, the rest of the sifter"] = total - sum(
        value for name, value in spent.items() if not name.startswith("start-up"))
    for name, value in spent.most_common():
        print(f"{name:45} {value:6.2f} s CPU")
    print(f"{'total':45} {total + spent['start-up (imports, config)']:6.2f} s CPU; "
          f"{len(mails)} messages composed")


if __name__ == "__main__":
    main()
