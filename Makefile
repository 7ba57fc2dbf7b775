# `make demo` and `make test` set up a fresh Debian 12 machine from scratch (as root).
SHELL := /bin/bash
APT_PACKAGES := lxc btrfs-progs busybox-static uidmap zstd tar python3-venv python3-dev mmdebstrap gnupg \
	iproute2 procps util-linux e2fsprogs nftables iperf3 openssh-server openssh-client rsync lxcfs lzop dmsetup \
	xfsprogs nodejs chromium
VENV := .venv
PY := $(VENV)/bin/python3
STAMP := $(VENV)/.installed
# xterm.js for the web console, as package-lock.json pins it (npm ci writes this file last).
NODE_STAMP := node_modules/.package-lock.json

.PHONY: install apt criu demo test unit integration lint bench clean

install: apt criu $(STAMP) $(NODE_STAMP)
	@tools/setup-subids
	@tools/install-launchers
	@tools/setup-lxcfs $(PY)  # after the launchers: its drop-in runs pyvz-lxcfs-heal
	@PYVZ_ROOT=/ $(PY) -m pyvz.rootinit
	@getent group pyvz >/dev/null || groupadd --system pyvz
	@PYVZ_ROOT=/ /usr/local/sbin/pyvzd fingerprint >/dev/null
	@if [ -d /etc/systemd/system ]; then \
		install -m 644 tools/pyvz-boot.service /etc/systemd/system/pyvz-boot.service; \
		install -m 644 tools/pyvzd.service /etc/systemd/system/pyvzd.service; \
		if [ -d /run/systemd/system ]; then systemctl daemon-reload && systemctl enable pyvz-boot.service pyvzd.service >/dev/null 2>&1 || true; fi; \
	fi

apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "Installing Debian packages:" $$missing; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
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

unit: install
	$(VENV)/bin/pytest -q tests/unit

integration: install
	$(VENV)/bin/pytest -q tests/integration

test: install lint
	$(VENV)/bin/pytest -q --durations=12 tests

bench: install
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
