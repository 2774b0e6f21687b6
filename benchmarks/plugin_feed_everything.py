"""The plugin on its reference path: FEED_EVERYTHING set, so that every line of the stream
goes to auparse as it did before the event sifter (the plugin's own reading, matching and
delivery otherwise unchanged). Same command line as the plugin; for `make bench`."""

import sys
from pathlib import Path

# As the program does: the package from files/, no bytecode written.
sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "files"))
import mailalert

mailalert.hold_signals()
from mailalert import plugin
from mailalert.cli import main

plugin.FEED_EVERYTHING = True
sys.exit(main())
