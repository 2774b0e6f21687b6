# The test lab (docs/lab.md): molecule scenarios on qemu VMs and docker containers built
# from locally debootstrapped Debian and Ubuntu images, and the README's `make demo`.
LAB_TARGETS += test-lab

LAB := $(CURDIR)/tests/lab
# Images are cached outside the clone, so a fresh clone on the same machine reuses them;
# a missing or stale cache (the key hashes the builder and package lists) rebuilds.
export LAB_CACHE ?= /var/cache/audit-mail-alert-lab
# The images the VM scenarios boot (platforms in extensions/molecule/default and
# extensions/molecule/ubuntu).
LAB_DISTS ?= bookworm trixie sid jammy noble
# Bound each scenario, so that a hung VM cannot eat the CI budget (times: docs/lab.md).
LAB_TIMEOUT ?= 45m
# Molecule prints a line per task but no times: stamp each line with the wall clock.
LAB_STAMP := while IFS= read -r line; do printf '[%(%H:%M:%S)T] %s\n' -1 "$$line"; done
export NO_COLOR := 1

.PHONY: test-lab lab-images test-lab-default test-lab-ubuntu test-lab-docker \
	test-lab-localhost demo

test-lab: test-lab-docker test-lab-default test-lab-ubuntu

# The long step (debootstrap) prints its own progress, each line naming its image. The
# builds run side by side (they wait on the network more than on the cores); any failure
# fails the target after all have ended.
lab-images: deps
	@pids=(); for dist in $(LAB_DISTS); do \
	  bash $(LAB)/build-image.sh $$dist >/dev/null & pids+=($$!); \
	done; \
	failed=0; for pid in "$${pids[@]}"; do wait $$pid || failed=1; done; exit $$failed

# $(call vm-scenario,NAME): molecule test destroys the VMs after a failed step
# (--destroy=always); the explicit destroy covers a run cut by the timeout.
define vm-scenario
	@started=$$SECONDS; \
	timeout $(LAB_TIMEOUT) molecule test -s $(1) 2>&1 | $(LAB_STAMP) \
	  || { molecule destroy -s $(1) >/dev/null 2>&1; exit 1; }; \
	echo "==> molecule $(1): passed in $$((SECONDS - started)) s"
endef

test-lab-default: collection-tree lab-images
	@echo "==> molecule default: Debian 12 (SELinux enforcing), 13 and sid VMs"
	$(call vm-scenario,default)

test-lab-ubuntu: collection-tree lab-images
	@echo "==> molecule ubuntu: Ubuntu 22.04 and 24.04 VMs"
	$(call vm-scenario,ubuntu)

# dockerd is started for the scenario when none runs, and stopped afterwards. The scenario
# needs the role's switch for targets without a usable auditd (docs/lab.md).
test-lab-docker: collection-tree
	@echo "==> molecule docker: the role in a systemd container (kernel-level checks skipped)"
	@started=$$SECONDS; \
	bash $(LAB)/with-dockerd.sh timeout $(LAB_TIMEOUT) molecule test -s docker 2>&1 | $(LAB_STAMP); \
	echo "==> molecule docker: passed in $$((SECONDS - started)) s"

# This machine as the target: the quick loop while developing. Not in `make test`, where
# tests/role drives this machine's auditd already.
test-lab-localhost: collection-tree
	@echo "==> molecule localhost: this machine, holding the host auditd lock"
	flock /run/lock/audit-mail-alert-host.lock molecule test -s localhost

demo: collection-tree
	@bash $(LAB)/demo.sh
