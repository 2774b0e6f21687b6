# The README's two commands: `make demo` and `make test`; both install what they need
# (Debian packages: `make deps`; Python packages: the venv).
# Each area of the collection adds its test target in mk/NN-area.mk: TEST_TARGETS += ... for
# the checks on this machine, LAB_TARGETS += ... for those that boot VMs and containers.
# `make test` runs the two lists as two lanes side by side, each in file order (see `test`).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV := $(CURDIR)/.venv
BUILD := $(CURDIR)/build
# The collection tree that ansible-test and ansible-galaxy need:
# .../ansible_collections/<namespace>/<name>
COLLECTION_TREE := $(BUILD)/ansible_collections/linux_audit/mail_alert
export PATH := $(VENV)/bin:$(PATH)
export ANSIBLE_COLLECTIONS_PATH := $(BUILD)
export ANSIBLE_HOME := $(BUILD)/ansible-home

TEST_TARGETS :=
LAB_TARGETS :=

.PHONY: all deps venv collection-tree test demo clean
all: test

# The Debian packages of mk/apt-packages that this machine lacks, installed with apt (one
# `apt-get update`, only when something is missing). Every target that needs one depends
# on it: through the venv, or directly.
deps:
	@bash mk/deps.sh

# System python3: it carries python3-audit (auparse), which is not on PyPI.
venv: $(VENV)/.installed
$(VENV)/.installed: requirements-dev.txt | deps
	@echo "==> venv: $(VENV)"
	/usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements-dev.txt
	touch $@

# A copy of the files git knows (tracked, or new and not ignored) in the layout ansible needs.
collection-tree: venv
	@echo "==> collection tree: $(COLLECTION_TREE)"
	rm -rf $(COLLECTION_TREE) && mkdir -p $(COLLECTION_TREE)
	git ls-files -z --cached --others --exclude-standard \
	  | while IFS= read -r -d '' f; do [ -e "$$f" ] && printf '%s\0' "$$f"; done \
	  | tar --null -T - -cf - | tar -C $(COLLECTION_TREE) -xf -
	# ansible-test lists a collection's files with git; the tree sits in our ignored build/,
	# so it gets a repository of its own (files staged, no commit needed).
	cd $(COLLECTION_TREE) && git init -q && git add -A

include $(sort $(wildcard mk/*.mk))

# Two lanes side by side, because run one after the other they outgrew CI's 90 minutes on
# 5 Dec: this machine's checks (lint to the controllers: mostly waiting for this host's
# auditd and mail, about one core) and the lab's (TCG VMs, containers: CPU-bound). Each lane
# is a make of its own, with -k from the command line, its lines prefixed with [host] or
# [lab]; the steps both need (deps, venv, the collection tree) run once, before them. Only
# the lab lane uses docker (with-dockerd.sh starts and stops its daemon) and neither lane
# the other's state: the host lane holds this host's auditd, the lab its VMs.
LANE = $(MAKE) --no-print-directory -o deps -o venv -o $(VENV)/.installed -o collection-tree
test: venv collection-tree
	@echo "==> make test: two lanes side by side; host: $(TEST_TARGETS); lab: $(LAB_TARGETS)"
	@started=$$SECONDS; \
	{ $(LANE) $(TEST_TARGETS) 2>&1 | sed -u 's/^/[host] /'; } & host=$$!; \
	{ $(LANE) $(LAB_TARGETS) 2>&1 | sed -u 's/^/[lab]  /'; } & lab=$$!; \
	failed=; \
	wait $$host || failed="$$failed host"; echo "==> make test: the host lane ended after $$((SECONDS - started)) s"; \
	wait $$lab || failed="$$failed lab"; echo "==> make test: the lab lane ended after $$((SECONDS - started)) s"; \
	if [ -n "$$failed" ]; then echo "==> make test: failed in the lane(s):$$failed" >&2; exit 1; fi; \
	echo "==> make test: all passed in $$((SECONDS - started)) s ($(TEST_TARGETS) $(LAB_TARGETS))"

clean:
	rm -rf $(BUILD)
