# `make demo` and `make test` set up a fresh Debian 12 machine from scratch (as root).
SHELL := /bin/bash
APT_PACKAGES := lxc btrfs-progs busybox-static uidmap zstd tar python3-venv python3-dev mmdebstrap gnupg \
	iproute2 procps util-linux e2fsprogs nftables iperf3 openssh-server openssh-client rsync lxcfs lzop dmsetup \
	xfsprogs nodejs chromium etcd-server etcd-client resource-agents systemd-container
# etcd-server/etcd-client: the cluster's etcd (docs/cluster.md), 3.4 in bookworm and 3.5 in trixie. A suite
# without them gets everything else (vzcluster then says etcd is not installed). Their own etcd.service is
# masked before a first install where systemd runs, so no system etcd starts: pyvz runs its own member
# (pyvz-etcd.service) once `vzcluster init` or `join` asks for it.
# systemd-container: systemd-nspawn, the peer of `vzctl run` on a Debian template in `make bench`.
OPTIONAL_PACKAGES := etcd-server etcd-client systemd-container
VENV := .venv
PY := $(VENV)/bin/python3
STAMP := $(VENV)/.installed
# xterm.js for the web console, as package-lock.json pins it (npm ci writes this file last).
NODE_STAMP := node_modules/.package-lock.json

.PHONY: install apt criu demo test unit integration lint bench clean

install: apt criu $(STAMP) $(NODE_STAMP)
	@tools/fetch-promtool $(VENV)/bin
	@tools/setup-subids
	@tools/install-launchers
	@tools/setup-lxcfs $(PY)  # after the launchers: its drop-in runs pyvz-lxcfs-heal
	@PYVZ_ROOT=/ $(PY) -m pyvz.rootinit
	@getent group pyvz >/dev/null || groupadd --system pyvz
	@PYVZ_ROOT=/ /usr/local/sbin/pyvzd fingerprint >/dev/null
	@if [ -d /etc/systemd/system ]; then \
		install -m 644 tools/pyvz-boot.service /etc/systemd/system/pyvz-boot.service; \
		install -m 644 tools/pyvzd.service /etc/systemd/system/pyvzd.service; \
		install -m 644 tools/pyvz-replicate.service /etc/systemd/system/pyvz-replicate.service; \
		install -m 644 tools/pyvz-replicate.timer /etc/systemd/system/pyvz-replicate.timer; \
		install -m 644 tools/pyvz-etcd.service /etc/systemd/system/pyvz-etcd.service; \
		install -m 644 tools/pyvz-cluster-agent.service /etc/systemd/system/pyvz-cluster-agent.service; \
		# pyvz-etcd and pyvz-cluster-agent stay disabled: vzcluster init/join enables them. \
		if [ -d /run/systemd/system ]; then systemctl daemon-reload && systemctl enable pyvz-boot.service pyvzd.service pyvz-replicate.timer >/dev/null 2>&1 || true; fi; \
	fi

apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		missing=$$(echo $$missing); apt-get update -q || exit 1; \
		for p in $(OPTIONAL_PACKAGES); do \
			case " $$missing " in *" $$p "*) \
				if ! apt-cache show $$p >/dev/null 2>&1; then \
					echo "This Debian suite has no $$p: skipped"; missing=$$(echo " $$missing " | sed "s/ $$p / /"); \
				fi;; \
			esac; \
		done; \
		case " $$missing " in *" etcd-server "*) \
			if [ -d /run/systemd/system ]; then systemctl mask etcd.service >/dev/null 2>&1 || true; fi;; \
		esac; \
		echo "Installing Debian packages:" $$missing; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

# npm is Debian's package unless the installed nodejs brings its own (NodeSource's does, and
# conflicts with Debian's npm), so it is not in APT_PACKAGES.
$(NODE_STAMP): package.json package-lock.json | apt
	@command -v npm >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends npm
	npm ci --omit=dev --no-audit --no-fund
	@touch $@

# CRIU >= 4.2 (Debian 12's 3.17 and 13's 4.1 fail on current kernels): nothing to do when it is there,
# else Debian's package if the host's suite has one, else built from a newer suite's source.
criu: apt
	@tools/build-criu

$(STAMP): pyproject.toml
	@test -x $(PY) || /usr/bin/python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

demo: install
	@tools/demo

lint: install
	$(VENV)/bin/ruff check pyvz tests bench
	$(VENV)/bin/ruff format --check pyvz tests bench
	$(VENV)/bin/mypy

# Tests run in parallel (pytest-xdist): most integration tests wait on CT boots, stops and
# sleeps rather than on the CPU, so more workers than the 2 cores pay; worksteal keeps every
# worker busy to the end. The tests marked `alone` (they restart the host's LXCFS, or measure
# a rate) then run by themselves: inside the parallel run, each would first wait for every
# other worker's test to end (the lock in tests/parallel.py keeps them alone either way).
# `make test TEST_WORKERS=0` runs everything in one process.
TEST_WORKERS ?= 3
define run_tests
	status=0; \
	$(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist worksteal -m "not alone" --durations=25 $(1) || status=$$?; \
	$(VENV)/bin/pytest -q -m alone --durations=5 $(1) || [ $$? -eq 5 ] || status=1; \
	exit $$status
endef

unit: install
	$(VENV)/bin/pytest -q -n 2 tests/unit

integration: install
	$(call run_tests,tests/integration)

test: install lint
	$(call run_tests,tests)

bench: install
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
