# The README's steps on a bare machine (tests/lab/bare-machine.sh): a Debian 12 container
# with none of mk/apt-packages installed clones this checkout's HEAD and runs
# `make test-plugin` (its end-to-end files), which must install what it needs by itself
# (`make deps`).
LAB_TARGETS += test-bare-machine

.PHONY: test-bare-machine
test-bare-machine: deps
	@echo "==> bare machine: clone, make test-plugin in a bare Debian 12 container (minutes: apt and pip fetch everything)"
	@started=$$SECONDS; \
	bash tests/lab/with-dockerd.sh timeout 20m bash tests/lab/bare-machine.sh; \
	echo "==> bare machine: passed in $$((SECONDS - started)) s"
