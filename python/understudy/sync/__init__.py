"""Connection synchronisation: the Linux IPVS sync protocol (v0 and v1).

`decode` and `encode` are byte-exact with a Linux 6.1 kernel; `ConnTable`
holds what a backup knows of the primary's connections. All of it runs in the
Rust engine; batch calls release the GIL.
"""

from understudy._core import (
    BackupRelay,
    Conn,
    ConnTable,
    Message,
    PrimaryRelay,
    SyncError,
    SyncReceiver,
    SyncSender,
    decode,
    decode_many,
    encode,
    encode_message,
    error_reasons,
    skip_reasons,
)

from understudy.sync.seed import SeedReport, seed_table

#: Default UDP port and IPv4 group of the kernel sync daemons.
DEFAULT_PORT = 8848
DEFAULT_GROUP = "224.0.0.81"

__all__ = [
    "DEFAULT_GROUP",
    "DEFAULT_PORT",
    "BackupRelay",
    "Conn",
    "ConnTable",
    "Message",
    "PrimaryRelay",
    "SeedReport",
    "SyncError",
    "SyncReceiver",
    "SyncSender",
    "decode",
    "decode_many",
    "encode",
    "encode_message",
    "error_reasons",
    "seed_table",
    "skip_reasons",
]
