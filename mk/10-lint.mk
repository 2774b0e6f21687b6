# Static checks of the whole collection: ruff, ansible-lint, ansible-test sanity and units.
TEST_TARGETS += test-lint test-sanity test-units test-artifact

# ansible-test bootstraps pip in its virtual environments with a script it downloads from a
# host CI cannot reach; it takes a copy from this cache path instead (see the file's docstring).
ANSIBLE_TEST_PIP_VERSION = $(shell $(VENV)/bin/python -c 'from ansible_test._internal.python_requirements import get_venv_packages as p; from types import SimpleNamespace as n; print(p(n(version="3.11"))["pip"])' 2>/dev/null)
ANSIBLE_TEST_GET_PIP = $(HOME)/.ansible/test/cache/get_pip_$(subst .,_,$(ANSIBLE_TEST_PIP_VERSION)).py
ANSIBLE_TEST := ansible-test
ANSIBLE_TEST_OPTS := --python 3.11 --requirements --venv --color no

.PHONY: test-lint test-sanity test-units test-artifact ansible-test-bootstrap
# ansible-lint resolves linux_audit.mail_alert.* names through the collection tree.
test-lint: collection-tree
	@echo "==> ruff"
	ruff check .
	@echo "==> modules and module_utils run on Python 3.6 (RHEL 8's own, with ansible-core 2.16)"
	vermin --no-tips --violations --eval-annotations -t=3.6- plugins
	@echo "==> functions over 60 lines have a reason (files/, plugins/)"
	python tests/tools/check_function_length.py files plugins
	@echo "==> ansible-lint (production profile)"
	ansible-lint --offline

ansible-test-bootstrap: venv
	test -n "$(ANSIBLE_TEST_PIP_VERSION)"
	install -D -m 0644 tests/tools/ansible_test_pip_bootstrap.py $(ANSIBLE_TEST_GET_PIP)

# ansible-test runs inside a copy laid out as ansible_collections/linux_audit/mail_alert.
# The artifact ships no ignore file (no sanity test is skipped for a file it holds); the
# development tree's files (tests/) need the lines of tests/sanity/dev-tree-ignores.txt,
# written into the copy as the ignore file of the ansible-core version that runs.
SANITY_TREE := $(BUILD)/sanity-tree/ansible_collections/linux_audit/mail_alert
test-sanity: collection-tree ansible-test-bootstrap
	@echo "==> ansible-test sanity (first run builds its virtual environments: minutes)"
	rm -rf $(BUILD)/sanity-tree && mkdir -p $(dir $(SANITY_TREE))
	cp -a $(COLLECTION_TREE) $(SANITY_TREE)
	core=$$(python -c 'from ansible.release import __version__ as v; print(".".join(v.split(".")[:2]))'); \
	  grep -v '^#' tests/sanity/dev-tree-ignores.txt > $(SANITY_TREE)/tests/sanity/ignore-$$core.txt
	cd $(SANITY_TREE) && $(ANSIBLE_TEST) sanity $(ANSIBLE_TEST_OPTS)

test-units: collection-tree ansible-test-bootstrap
	@echo "==> ansible-test units"
	cd $(COLLECTION_TREE) && $(ANSIBLE_TEST) units $(ANSIBLE_TEST_OPTS)

# galaxy-importer (what Galaxy and Automation Hub run on an upload) in a venv of its own: it
# brings the ansible-core, ansible-lint and ansible-doc it runs, whatever the dev venv pins.
GALAXY_IMPORTER_VENV := $(BUILD)/galaxy-importer
$(GALAXY_IMPORTER_VENV)/.installed: | deps
	@echo "==> venv: $(GALAXY_IMPORTER_VENV)"
	rm -rf $(@D)
	/usr/bin/python3 -m venv $(@D)
	$(@D)/bin/pip install -q --upgrade pip
	$(@D)/bin/pip install -q "galaxy-importer>=0.4.44,<0.5"
	touch $@

# Built from the collection tree, which holds untracked files too (a stray cache there would
# reach users): the artifact must hold exactly the user's part (tests/tools/check_artifact.py),
# and galaxy-importer with Automation Hub's settings (tests/tools/galaxy-importer.cfg) must
# import it with no warning but the allowed ones (tests/tools/galaxy_import.py).
test-artifact: collection-tree $(GALAXY_IMPORTER_VENV)/.installed
	@echo "==> ansible-galaxy collection build: what the artifact holds"
	rm -rf $(BUILD)/artifact
	cd $(COLLECTION_TREE) && ansible-galaxy collection build --output-path $(BUILD)/artifact >/dev/null
	python tests/tools/check_artifact.py $(BUILD)/artifact/linux_audit-mail_alert-*.tar.gz
	@echo "==> galaxy-importer on the artifact, with Automation Hub's settings"
	PATH=$(GALAXY_IMPORTER_VENV)/bin:$$PATH GALAXY_IMPORTER_CONFIG=$(CURDIR)/tests/tools/galaxy-importer.cfg \
	  $(GALAXY_IMPORTER_VENV)/bin/python tests/tools/galaxy_import.py \
	  $(BUILD)/artifact/linux_audit-mail_alert-*.tar.gz $(BUILD)/galaxy-import
