"""The one error type, with vzctl's exit-code table.

Library code raises VzError; only cli/ turns it into a message and an exit status.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """vzctl's exit codes (include/vzerror.h), so scripts written for OpenVZ keep working."""

    OK = 0
    SETUBC_ERROR = 1
    SYSTEM_ERROR = 3
    RESOURCE_ERROR = 6
    ENVCREATE_ERROR = 7
    COMMAND_EXECUTION_ERROR = 8
    LOCKED = 9
    NO_GLOBAL_CONFIG = 10
    NO_SCRIPT = 11
    NO_ACCESS = 12
    SET_CAP = 13
    NO_CT_CONFIG = 14
    EXEC_TIMEOUT = 15
    CHKPNT_ERROR = 16
    RESTORE_ERROR = 17
    INVALID_PARAMETER_SYNTAX = 20
    INVALID_PARAMETER_VALUE = 21
    VE_ROOT_NOTSET = 22
    VE_PRIVATE_NOTSET = 23
    OSTEMPLATE_NOTSET = 29
    NOT_RUNNING = 31
    RUNNING = 32
    STOP_ERROR = 33
    NOT_MOUNTED = 40
    MOUNTED = 41
    NO_PRIVATE = 43
    PRIVATE_EXISTS = 44
    NO_DISK_SPACE = 46
    BAD_TEMPLATE = 47
    CANT_CREATE_PRIVATE = 48
    CANT_CREATE_MOUNTPOINT = 49
    CANT_MOUNT = 50
    CANT_UMOUNT = 51
    CANT_DELETE_PRIVATE = 52
    DQ_ON = 60  # vzctl quotaon failed
    DQ_INIT = 61  # vzctl quotainit failed
    DISKQUOTA_SET = 62
    DISKSPACE_NOT_SET = 63
    DISKINODES_NOT_SET = 64
    DQ_OFF = 66  # vzctl quotaoff failed
    BAD_HOSTNAME = 70
    INVALID_IP = 71  # a malformed address, prefix, MAC or bridge
    SET_IP_ERROR = 72  # the host refused a network change
    CHANGE_PASSWORD = 74
    IP_INUSE = 78
    ACTIONSCRIPT_ERROR = 79
    CP_CONFIG = 82
    INVALID_CONFIG = 85
    SET_DEVICES = 86
    OSTEMPLATE_NOT_FOUND = 91
    PLOOP_UNSUP = 99  # a ploop image uses a feature pyvz cannot read (encryption, volumes...)
    NETDEV_ERROR = 104
    START_DISABLED = 105
    APPLY_CONFIG_ERROR = 109
    SET_NAME_ERROR = 131
    WAIT_FAILED = 133
    CONFIG_SAVE_ERROR = 139
    # ploop images (vzctl 4.x: VZCTL_E_*_IMAGE): a damaged image is one that cannot be mounted.
    MOUNT_IMAGE = 152
    UMOUNT_IMAGE = 153
    CONVERT_IMAGE = 155
    # The snapshot commands' own failures (vzctl 4.x: VZCTL_E_*_SNAPSHOT).
    CREATE_SNAPSHOT = 156
    MERGE_SNAPSHOT = 157
    DELETE_SNAPSHOT = 158
    SWITCH_SNAPSHOT = 159
    MOUNT_SNAPSHOT = 160
    UMOUNT_SNAPSHOT = 161
    COMPACT_IMAGE = 166
    LIST_SNAPSHOT = 167


class MigrateExit(IntEnum):
    """vzmigrate's own exit codes (its man page), for what vzctl's table has no code for;
    vzmigrate maps vzctl codes onto these in one place (cli/vzmigrate.py)."""

    USAGE = 1
    VE_STOPPED = 2
    CONNECT = 4
    COPY = 6
    VE_START = 7
    VE_STOP = 8
    EXISTS = 9
    NOTEXIST = 10
    IP_INUSE = 12
    QUOTA = 13
    OVZ_NOT_RUNNING = 14
    APPLY_CONFIG = 15
    UNSUP_CPT_VER = 17
    UNSUP_CPU = 18
    CANT_READ_REMOTE_CONFIG = 19
    LOCKED = 20


class QuotaExit(IntEnum):
    """vzquota's own exit codes (its include/common.h), which scripts and vzctl test for."""

    SYSTEM = 1
    USAGE = 2
    VZCALL = 3
    QUOTAFILE = 4
    RUN = 5  # quota is running
    NOTRUN = 6  # quota is not running (or, here, the layout has none)
    LOCK = 7
    UG_NOTRUN = 9  # stat -t: the CT's quota runs, per-user/group quota does not
    QUOTADIRTY = 10
    NOQUOTAFILE = 11
    NOMOUNTPOINT = 13


class ClusterExit(IntEnum):
    """The cluster's own failures (vzcluster, and any command that needs etcd), numbered past
    vzctl's table so that no script reading a vzctl code mistakes one for another."""

    UNAVAILABLE = 170  # no etcd endpoint answered (down, unreachable, TLS refused)
    NO_QUORUM = 171  # a member answers, but the cluster has no leader: nothing can be decided
    TAKEN = 172  # a reservation (CTID, name, address, leadership) is held by someone else
    NOT_CONFIGURED = 173  # this host is in no cluster (vzcluster init/join first)
    ALREADY_MEMBER = 174  # this host is in a cluster already
    CONNECT = 175  # the host to join through cannot be reached or refused us
    PKI = 176  # a certificate could not be made, read or checked
    MEMBER = 177  # the local etcd member would not start, or etcd refused a membership change


class VzError(Exception):
    """Every failure pyvz reports: a vzctl exit code and a one-line message saying what to do.

    `stdout`: vzctl says this failure as a notice, on stdout ("Container is currently running.
    Stop it first."), and scripts read it there."""

    def __init__(
        self, code: ExitCode | MigrateExit | QuotaExit | ClusterExit, message: str, stdout: bool = False
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.stdout = stdout

    def __str__(self) -> str:
        return self.message
