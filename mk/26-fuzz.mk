# Fuzzing of the alert plugin: a script that prints figures, not a test (not in TEST_TARGETS).
# `make fuzz` feeds FUZZ_LINES mutated and generated audit record lines (seeds: the captured
# records of tests/audisp_plugin/data/*.log) through the real plugin (--print, system python3), in
# runs of 50,000 lines, and checks every run and every message (tests/audisp_plugin/fuzz_plugin.py).
# The inputs of failed runs are kept in build/fuzz/failed/. `make test` runs a short seeded
# run of the same script (tests/audisp_plugin/test_fuzz.py). Figures: docs/benchmarks.md.
FUZZ_LINES ?= 1000000
FUZZ_SEED ?= 20261202
FUZZ_DIR := $(BUILD)/fuzz

.PHONY: fuzz
fuzz: venv
	@echo "==> fuzz: $(FUZZ_LINES) record lines through the plugin (seed $(FUZZ_SEED))"
	rm -rf $(FUZZ_DIR) && mkdir -p $(FUZZ_DIR)
	python tests/audisp_plugin/fuzz_plugin.py --lines $(FUZZ_LINES) --seed $(FUZZ_SEED) --keep $(FUZZ_DIR)/failed
