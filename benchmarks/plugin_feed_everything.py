"""The plugin on its reference path: FEED_EVERYTHING set, so that every line of the stream
goes to auparse as it did before the event sifter (the plugin's own reading, matching and
delivery otherwise unchanged). Same command line as the plugin; for `make bench`."""

import importlib.util
import sys
from pathlib import Path

PLUGIN = Path(__file__).resolve().parents[1] / "files" / "audisp_mailalert.py"

spec = importlib.util.spec_from_file_location("audisp_mailalert", str(PLUGIN))
plugin = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plugin)
plugin.FEED_EVERYTHING = True
sys.exit(plugin.main())
