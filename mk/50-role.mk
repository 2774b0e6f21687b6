# The role on this host: converge, a real alert through dma into /var/mail/root,
# idempotence, check mode, refused input, a refused rules load, state absent.
TEST_TARGETS += test-role

.PHONY: test-role
test-role: collection-tree
	@echo "==> role: pytest tests/role (real auditd, dma; 7 min alone, 13 beside the lab lane)"
	pytest -q -p no:cacheprovider -rs tests/role
