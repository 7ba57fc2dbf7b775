"""The embedded `busybox` template, built offline from Debian's busybox-static.

It boots busybox init with syslogd and a getty on the console, so the demo and the tests
need no network and no mirror.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import tempfile
from pathlib import Path

from pyvz.errors import ExitCode, VzError
from pyvz.paths import Paths
from pyvz.run import run
from pyvz.templates.cache import EMBEDDED

BUSYBOX = Path("/bin/busybox")
_PT_INTERP = 3

INITTAB = """\
# busybox init: pyvz's embedded template
::sysinit:/etc/init.d/rcS
console::respawn:/sbin/getty -L 0 console vt100
tty1::respawn:/sbin/getty 38400 tty1
::shutdown:/etc/init.d/rcK
"""

RC_S = """\
#!/bin/sh
# Boot: fresh /run and /tmp, hostname, syslog, then the CT's own scripts.
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
[ -s /etc/hostname ] && hostname -F /etc/hostname
syslogd -O /var/log/messages
for script in /etc/init.d/S*; do [ -x "$script" ] && "$script" start; done
touch /run/boot-complete
"""

RC_K = """\
#!/bin/sh
# Shutdown: stop the CT's scripts in reverse order, then syslog.
for script in $(ls -r /etc/init.d/S* 2>/dev/null); do [ -x "$script" ] && "$script" stop; done
killall syslogd 2>/dev/null
rm -f /run/boot-complete
"""

PROFILE = """\
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PS1='\\u@\\h:\\w\\$ '
"""


def _is_static(binary: Path) -> bool:
    """True if the ELF file has no program interpreter (so it runs without a libc)."""
    with open(binary, "rb") as handle:
        header = handle.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2:
            return False
        (phoff,) = struct.unpack_from("<Q", header, 32)
        phentsize, phnum = struct.unpack_from("<HH", header, 54)
        handle.seek(phoff)
        table = handle.read(phentsize * phnum)
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != _PT_INTERP for i in range(phnum))


def _version(binary: Path) -> str:
    first = run([str(binary), "--help"], check=False).stdout.splitlines()[:1]
    match = re.search(r"v(\d+(?:\.\d+)*)", first[0] if first else "")
    return match.group(1) if match else "unknown"


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.write_text(text)
    os.chmod(path, mode)


def populate(tree: Path, binary: Path = BUSYBOX) -> None:
    """Lay out a bootable busybox root in `tree`."""
    for directory, mode in (
        ("bin", 0o755),
        ("sbin", 0o755),
        ("usr/bin", 0o755),
        ("usr/sbin", 0o755),
        ("etc/init.d", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("dev", 0o755),
        ("run", 0o755),
        ("tmp", 0o1777),
        ("root", 0o700),
        ("home", 0o755),
        ("var/log", 0o755),
        ("var/run", 0o755),
        ("mnt", 0o755),
    ):
        (tree / directory).mkdir(parents=True, exist_ok=True)
        os.chmod(tree / directory, mode)
    shutil.copy2(binary, tree / "bin/busybox")
    applets = run([str(binary), "--list"]).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (tree / "bin" / applet).symlink_to("busybox")
    for applet in ("init", "getty", "halt", "poweroff", "reboot"):
        (tree / "sbin" / applet).symlink_to("../bin/busybox")
    etc = tree / "etc"
    _write(etc / "inittab", INITTAB)
    _write(etc / "init.d/rcS", RC_S, 0o755)
    _write(etc / "init.d/rcK", RC_K, 0o755)
    _write(etc / "profile", PROFILE)
    _write(
        etc / "passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    )
    _write(etc / "group", "root:x:0:\nshadow:x:42:\nnogroup:x:65534:\n")
    # root's password is locked: `vzctl enter` needs none; set one with --userpasswd for login.
    _write(etc / "shadow", "root:!:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n", 0o640)
    os.chown(etc / "shadow", 0, 42)
    _write(etc / "hostname", "localhost\n")
    _write(
        etc / "hosts", "127.0.0.1 localhost.localdomain localhost\n::1 localhost ip6-localhost ip6-loopback\n"
    )
    _write(etc / "shells", "/bin/sh\n/bin/ash\n")
    _write(etc / "resolv.conf", "")
    version = _version(binary)
    _write(
        etc / "os-release",
        f'NAME="BusyBox"\nID=busybox\nVERSION_ID="{version}"\n'
        f'PRETTY_NAME="BusyBox {version} (pyvz embedded template)"\n',
    )


def build(paths: Paths, binary: Path = BUSYBOX) -> Path:
    """Build NAME.tar.zst in the cache; atomic, so a crash never leaves half an archive."""
    if not binary.exists():
        raise VzError(ExitCode.OSTEMPLATE_NOT_FOUND, f"{binary} not found: install busybox-static")
    if not _is_static(binary):
        raise VzError(
            ExitCode.BAD_TEMPLATE,
            f"{binary} is dynamically linked; install busybox-static (it replaces busybox)",
        )
    paths.template_cache.mkdir(parents=True, exist_ok=True)
    archive = paths.template_cache / f"{EMBEDDED}.tar.zst"
    partial = archive.with_name(f".{archive.name}.partial-{os.getpid()}")
    with tempfile.TemporaryDirectory(dir=paths.template_cache, prefix=".build-") as staging:
        tree = Path(staging) / "root"
        tree.mkdir()
        populate(tree, binary)
        try:
            run(
                ["tar", "--numeric-owner", "--zstd", "-cf", str(partial), "-C", str(tree), "."],
                error_code=ExitCode.BAD_TEMPLATE,
            )
            os.replace(partial, archive)
        finally:
            partial.unlink(missing_ok=True)
    return archive
