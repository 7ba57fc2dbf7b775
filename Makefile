# `make demo` and `make test` set up a fresh Debian 12 machine from scratch (as root).
SHELL := /bin/bash
APT_PACKAGES := lxc btrfs-progs busybox-static uidmap zstd tar python3-venv python3-dev mmdebstrap gnupg \
	iproute2 procps util-linux e2fsprogs nftables iperf3 openssh-server openssh-client rsync lxcfs lzop dmsetup
VENV := .venv
PY := $(VENV)/bin/python3
STAMP := $(VENV)/.installed

.PHONY: install apt criu demo test unit integration lint bench clean

install: apt criu $(STAMP)
	@tools/fetch-promtool $(VENV)/bin
	@tools/setup-subids
	@tools/setup-lxcfs $(PY)
	@tools/install-launchers
	@PYVZ_ROOT=/ $(PY) -m pyvz.rootinit
	@if [ -d /etc/systemd/system ]; then \
		install -m 644 tools/pyvz-boot.service /etc/systemd/system/pyvz-boot.service; \
		if [ -d /run/systemd/system ]; then systemctl daemon-reload && systemctl enable pyvz-boot.service >/dev/null 2>&1 || true; fi; \
	fi

apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "Installing Debian packages:" $$missing; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

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
