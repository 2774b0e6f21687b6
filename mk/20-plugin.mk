# The alert plugin (files/audisp_mailalert.py and its package files/mailalert/): the Python
# 3.6 floor checked by vermin, then its pytest suites under tests/audisp_plugin (units
# driven by captured audit logs, faults, fuzz).
TEST_TARGETS += test-plugin

.PHONY: test-plugin
# Extra pytest arguments, e.g. a --deselect with its reason printed by the caller.
PLUGIN_PYTEST_ARGS ?=
# The test files or directories to run (the bare machine runs a few: mk/62-bare-machine.mk).
PLUGIN_TESTS ?= tests/audisp_plugin
test-plugin: venv
	@echo "==> plugin: vermin (must run on Python 3.6, RHEL 8)"
	vermin --no-tips --violations -t=3.6- files/audisp_mailalert.py files/mailalert
	@echo "==> plugin: pytest $(PLUGIN_TESTS)"
	pytest -q -rs -p no:cacheprovider $(PLUGIN_PYTEST_ARGS) $(PLUGIN_TESTS)
