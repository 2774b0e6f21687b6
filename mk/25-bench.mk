# Benchmarks of the alert plugin: scripts that print figures, not tests (not in TEST_TARGETS).
# `make bench` captures real events from this host's auditd (root; it holds the host auditd
# lock while its rules are loaded), or falls back to the committed capture, builds a
# 250,000-event corpus and a 100,000-event flood under build/bench/, and runs both the
# plugin and a bare auparse feed loop over them. Figures: docs/benchmarks.md.
BENCH_DIR := $(BUILD)/bench

.PHONY: bench
bench: venv
	@echo "==> bench: capturing real audit events from this host"
	mkdir -p $(BENCH_DIR)
	if ! benchmarks/capture_events.sh $(BENCH_DIR)/captured.log; then \
	  echo "bench: capture failed; using the committed tests/plugin/data/captured-raw.log"; \
	  cp tests/plugin/data/captured-raw.log $(BENCH_DIR)/captured.log; \
	fi
	@echo "==> bench: building the corpora"
	python benchmarks/make_corpus.py $(BENCH_DIR)/captured.log $(BENCH_DIR) 250000 100000
	@echo "==> bench: the C reference that normalizes every event (needs libauparse-dev)"
	if [ -f /usr/include/auparse.h ]; then \
	  cc -O2 -Wall -o $(BENCH_DIR)/normalize_all benchmarks/normalize_all.c -lauparse; \
	else echo "bench: no auparse.h (libauparse-dev): the C reference is not run"; \
	  rm -f $(BENCH_DIR)/normalize_all; fi
	@echo "==> bench: plugin vs bare auparse feed loop"
	python benchmarks/run_bench.py $(BENCH_DIR)
