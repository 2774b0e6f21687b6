# The README's two commands: `make demo` and `make test`; both install what they need
# (Debian packages: `make deps`; Python packages: the venv).
# Each area of the collection adds its test target in mk/NN-area.mk (TEST_TARGETS += ...),
# so `make test` runs them in that order: fast checks first, VMs last.

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

test: venv $(TEST_TARGETS)
	@echo "==> make test: all passed ($(TEST_TARGETS))"

clean:
	rm -rf $(BUILD)
