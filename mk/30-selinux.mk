# SELinux policy module: built with the policy's development Makefile and linked into a
# copy of the installed reference policy (no SELinux needed on this host, nothing loaded).
TEST_TARGETS += test-selinux

.PHONY: test-selinux
test-selinux: venv
	@echo "==> SELinux policy module: build, link into a copy of the policy store, query"
	pytest -q tests/selinux
