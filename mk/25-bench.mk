# Benchmarks of the alert plugin: scripts that print figures, not tests (not in TEST_TARGETS).
# `make bench` captures real events from this host's auditd (root; it holds the host auditd
# lock while its rules are loaded), or falls back to the committed capture, builds under
# build/bench/ a 250,000-event corpus (1 % keyed), the same with the capture's CONFIG_CHANGE
# events (near-misses) and a 100,000-event flood, builds the C reference plugin (gcc and
# libauparse-dev come from mk/apt-packages through `make deps`), and times the plugin
# against a line-read floor, a bare auparse loop, the C plugin and its own reference path.
# The capture waits at most CAPTURE_LOCK_WAIT seconds (300) for the host auditd lock.
# Figures: docs/benchmarks.md.
BENCH_DIR := $(BUILD)/bench

.PHONY: bench
bench: venv
	@echo "==> bench: capturing real audit events from this host"
	mkdir -p $(BENCH_DIR)
	if ! benchmarks/capture_events.sh $(BENCH_DIR)/captured.log; then \
	  echo "bench: capture failed; using the committed tests/audisp_plugin/data/captured-raw.log"; \
	  cp tests/audisp_plugin/data/captured-raw.log $(BENCH_DIR)/captured.log; \
	fi
	@echo "==> bench: building the corpora"
	python benchmarks/make_corpus.py $(BENCH_DIR)/captured.log $(BENCH_DIR) 250000 100000
	@echo "==> bench: the C reference plugin that normalizes every event"
	cc -O2 -Wall -o $(BENCH_DIR)/normalize_all benchmarks/normalize_all.c -lauparse
	@echo "==> bench: plugin vs line-read floor, bare auparse loop, C plugin, reference path"
	python benchmarks/run_bench.py $(BENCH_DIR)
