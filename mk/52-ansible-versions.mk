# The supported controllers: ansible-core 2.16 (meta/runtime.yml, the role's
# min_ansible_version) through the newest release on PyPI, each minor version in a venv of
# its own under $(BUILD) (pip, from PyPI). On the artifact as test-artifact built it:
# ansible-test sanity of the oldest and of the newest, each as it ships (with its ignore
# file); then, installed by the oldest's ansible-galaxy, the role on this host from each
# (tests/role/test_controllers.py: converge, the alert in root's mailbox, a re-run that
# changes nothing, removal; no deprecation warning), and from the oldest once more with
# the target's modules run by Python 3.6, as on RHEL 8. tests/role (test-role) proves the
# role in depth with the dev venv's ansible-core; this proves that each controller runs it.
TEST_TARGETS += test-ansible-versions

ANSIBLE_VERSIONS := 2.16 2.17 2.18 2.19 2.20 2.21
ANSIBLE_OLDEST := $(firstword $(ANSIBLE_VERSIONS))
ANSIBLE_NEWEST := $(lastword $(ANSIBLE_VERSIONS))
# Each version's controller Python: the system python3 (3.11) where ansible-core supports
# it; 2.20 and later need 3.12 or later (pyenv's, beside the system one on this machine
# kind). ansible-test's sanity runs with the same Python.
PYENV_VERSIONS ?= $(HOME)/.pyenv/versions
find-python = $(or $(firstword $(wildcard $(PYENV_VERSIONS)/$(1).*/bin/python$(1))),$(shell command -v python$(1)),/no-python$(1)-found)
CONTROLLER_PYTHON_2.20 := 3.12
CONTROLLER_PYTHON_2.21 := 3.13
controller-python-version = $(or $(CONTROLLER_PYTHON_$(1)),3.11)
controller-python = $(if $(CONTROLLER_PYTHON_$(1)),$(call find-python,$(CONTROLLER_PYTHON_$(1))),/usr/bin/python3)
# The Python 3.6 that runs the target's modules, as RHEL 8's platform-python would.
TARGET_PYTHON_3.6 := $(call find-python,3.6)
ansible-venv = $(BUILD)/ansible-$(1)
# $(call core-version,VENV): the ansible-core release installed in VENV, e.g. 2.16.19.
core-version = $(1)/bin/python -c 'import ansible.release; print(ansible.release.__version__)'

ARTIFACT_TREE := $(BUILD)/artifact-tree/ansible_collections/linux_audit/mail_alert
INSTALLED := $(BUILD)/installed
CONTROLLERS_REPORT := $(BUILD)/ansible-versions.txt

.PHONY: test-ansible-versions ansible-versions-started ansible-venvs
# The target's time counts from here, so that it includes the venvs it builds.
ansible-versions-started:
	@mkdir -p $(BUILD) && date +%s > $(BUILD)/ansible-versions.started

ansible-venvs: $(foreach v,$(ANSIBLE_VERSIONS),$(call ansible-venv,$(v))/.installed)

$(BUILD)/ansible-%/.installed: | deps
	@echo "==> venv: ansible-core $*.* on $(call controller-python,$*)"
	rm -rf $(@D)
	$(call controller-python,$*) -m venv $(@D)
	$(@D)/bin/pip install -q --upgrade pip
	$(@D)/bin/pip install -q "ansible-core==$*.*"
	touch $@

# $(call artifact-sanity,VERSION): that release's ansible-test on the artifact's files, in
# virtual environments of its own (--venv) for the controller's Python. Its pip bootstrap
# comes from the offline stand-in (tests/tools/ansible_test_pip_bootstrap.py, mk/10-lint.mk).
define artifact-sanity
	@echo "==> ansible-test sanity $(1) (Python $(call controller-python-version,$(1))) on the artifact"
	@started=$$SECONDS; \
	venv=$(call ansible-venv,$(1)); pyver=$(call controller-python-version,$(1)); \
	pip_version=$$($$venv/bin/python -c "from ansible_test._internal.python_requirements import get_venv_packages as p; from types import SimpleNamespace as n; print(p(n(version='$$pyver'))['pip'])"); \
	install -D -m 0644 tests/tools/ansible_test_pip_bootstrap.py $(HOME)/.ansible/test/cache/get_pip_$${pip_version//./_}.py; \
	cd $(ARTIFACT_TREE) && PATH=$$venv/bin:$(dir $(call controller-python,$(1))):$$PATH \
	  $$venv/bin/ansible-test sanity --python $$pyver --requirements --venv --color no; \
	echo "==> ansible-test sanity $$($(call core-version,$$venv)) (Python $$pyver): passed in $$((SECONDS - started)) s"
endef

test-ansible-versions: test-artifact ansible-versions-started ansible-venvs
	@echo "==> ansible versions $(ANSIBLE_VERSIONS): the artifact, unpacked for ansible-test, installed by ansible-galaxy $(ANSIBLE_OLDEST)"
	rm -rf $(BUILD)/artifact-tree $(INSTALLED) $(CONTROLLERS_REPORT) && mkdir -p $(ARTIFACT_TREE)
	tar -C $(ARTIFACT_TREE) -xzf $(BUILD)/artifact/linux_audit-mail_alert-*.tar.gz
	# ansible-test lists the files with git; its own output (tests/output/) is not the artifact's.
	cd $(ARTIFACT_TREE) && git init -q && echo /tests/output/ >> .git/info/exclude && git add -A
	# Only this path: the collection tree under $(BUILD) has the same version and would count
	# as installed already.
	ANSIBLE_COLLECTIONS_PATH=$(INSTALLED) \
	  $(call ansible-venv,$(ANSIBLE_OLDEST))/bin/ansible-galaxy collection install --offline \
	  -p $(INSTALLED) $(BUILD)/artifact/linux_audit-mail_alert-*.tar.gz
	$(call artifact-sanity,$(ANSIBLE_OLDEST))
	$(call artifact-sanity,$(ANSIBLE_NEWEST))
	@echo "==> ansible versions: the role on this host from each controller (about 20 s each)"
	AMR_CONTROLLERS="$(foreach v,$(ANSIBLE_VERSIONS),$(v)=$(call ansible-venv,$(v))/bin) $(ANSIBLE_OLDEST)-python3.6=$(call ansible-venv,$(ANSIBLE_OLDEST))/bin=$(TARGET_PYTHON_3.6)" \
	AMR_CONTROLLERS_REPORT=$(CONTROLLERS_REPORT) ANSIBLE_COLLECTIONS_PATH=$(INSTALLED) \
	  pytest -q -rs -p no:cacheprovider tests/role/test_controllers.py
	@cat $(CONTROLLERS_REPORT)
	@echo "==> ansible versions: the role ran from ansible-core $$(for v in $(ANSIBLE_VERSIONS); do \
	  printf '%s ' $$($(call core-version,$(BUILD)/ansible-$$v)); done)(and $(ANSIBLE_OLDEST) with a Python 3.6 target)"
	@echo "==> ansible versions: passed in $$(( $$(date +%s) - $$(cat $(BUILD)/ansible-versions.started) )) s"
