"""vzdump --mailto: the job's report, mailed through the host's sendmail as vzdump did.

The program is SENDMAIL in vz.conf (default /usr/sbin/sendmail, which every MTA installs);
a host without one gets one line saying the mail was not sent, and the backups stand.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from email.message import EmailMessage
from pathlib import Path
from typing import NamedTuple

from pyvz.errors import VzError
from pyvz.log import log
from pyvz.run import run

DEFAULT_SENDMAIL = "/usr/sbin/sendmail"


class Outcome(NamedTuple):
    ctid: int
    ok: bool
    seconds: float
    archive: Path | None  # what was written, when it was
    error: str = ""
    logfile: Path | None = None


def report(outcomes: Sequence[Outcome], hostname: str) -> tuple[str, str]:
    """The subject and the text body: a table of CTs, then each CT's log."""
    failed = [o for o in outcomes if not o.ok]
    subject = f"vzdump backup status ({hostname}): {'backup failed' if failed else 'backup successful'}"
    lines = [f"{'CTID':<8} {'STATUS':<8} {'TIME':>8}  ARCHIVE / ERROR"]
    for item in outcomes:
        what = str(item.archive) if item.ok and item.archive else item.error
        lines.append(f"{item.ctid:<8} {'ok' if item.ok else 'FAILED':<8} {item.seconds:>7.1f}s  {what}")
    for item in outcomes:
        if item.logfile is not None and item.logfile.is_file():
            lines += ["", f"Detailed log of CT {item.ctid} ({item.logfile.name}):", ""]
            lines += item.logfile.read_text(errors="replace").splitlines()
    return subject, "".join(line[:900] + "\n" for line in lines)  # mail lines end by 998 bytes


def send(sendmail: str, to: Sequence[str], outcomes: Sequence[Outcome]) -> bool:
    """Mail the report; False (after one line saying why) when it could not be sent."""
    hostname = socket.gethostname()
    subject, body = report(outcomes, hostname)
    if not (os.path.isfile(sendmail) and os.access(sendmail, os.X_OK)):
        log.warning(f"mail to {', '.join(to)} not sent: {sendmail} does not exist (no mail transfer agent)")
        return False
    message = EmailMessage()
    message["From"] = f"root@{hostname}"
    message["To"] = ", ".join(to)
    message["Subject"] = subject
    message.set_content(body, cte="8bit")  # readable as it is; logs have no 998-byte lines
    try:
        # -i: a line holding a single dot does not end the message
        run([sendmail, "-i", "--", *to], input=message.as_string(), timeout=60)
    except VzError as err:
        log.warning(f"mail to {', '.join(to)} not sent: {err.message}")
        return False
    log.info(f"Report mailed to {', '.join(to)}")
    return True
