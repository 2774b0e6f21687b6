# The modules audit_alert_verify, audit_mail_alert_info and audit_mail_alert_maintenance.
# Their unit tests run in test-units (mk/10-lint.mk); here: the docs render, and
# audit_alert_verify against the real chain on this host (auditd, the plugin from files/,
# dma, /var/mail/root), with each hop broken for real. Needs root; the tests hold the host
# auditd lock themselves.
TEST_TARGETS += test-modules

.PHONY: test-modules
test-modules: collection-tree
	@echo "==> ansible-doc renders the modules"
	ansible-doc linux_audit.mail_alert.audit_alert_verify >/dev/null
	ansible-doc linux_audit.mail_alert.audit_mail_alert_info >/dev/null
	ansible-doc linux_audit.mail_alert.audit_mail_alert_maintenance >/dev/null
	@echo "==> modules against the real chain: tests/modules (8 min in CI beside the lab lane)"
	pytest -q -rs -p no:cacheprovider tests/modules
