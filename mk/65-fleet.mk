# The fleet proof (docs/lab.md, "Fleet"): playbooks/deploy.yml itself across FLEET_SIZE
# systemd containers from the lab's Debian 12 rootfs, with serial batches, a second run,
# --tags rules, state absent and a batch that fails (tests/fleet/).
LAB_TARGETS += test-fleet

FLEET_SIZE ?= 15
# 15 containers in CI: batches of 3, so that the failing batch has a good host beside its two
# bad ones and every claim of docs/lab.md holds as with 20 (FLEET_SIZE=20 for more); 20
# containers took 632-744 s here while other work loaded the 2 cores (docs/lab.md,
# "Fleet"); the bound keeps a hung run from eating CI's budget.
FLEET_TIMEOUT ?= 15m

.PHONY: test-fleet
# dockerd is started when none runs (with-dockerd.sh). pytest removes the containers at the
# end; the teardown after it covers a run cut by the timeout. -x: the tests build on each other.
test-fleet: collection-tree
	@echo "==> fleet: deploy.yml across $(FLEET_SIZE) systemd containers (about 7 minutes)"
	@started=$$SECONDS; \
	FLEET_SIZE=$(FLEET_SIZE) bash $(CURDIR)/tests/lab/with-dockerd.sh bash -c \
	  'rc=0; timeout $(FLEET_TIMEOUT) pytest -q -x -s -p no:cacheprovider tests/fleet || rc=$$?; \
	   python tests/fleet/fleet.py teardown; exit $$rc'; \
	echo "==> fleet: passed in $$((SECONDS - started)) s"
