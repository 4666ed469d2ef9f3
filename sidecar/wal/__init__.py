"""Write-ahead log: framing, record types, recovery rules. Free of asyncio.

Format and guarantees: docs/wal-format.md.
"""

from sidecar.wal._files import FileLayer, LogHandle, OsFileLayer
from sidecar.wal._framing import (
    FILE_HEADER_SIZE,
    FRAME_HEADER_SIZE,
    Scan,
    check_file_header,
    decode_frame_at,
    encode_frame,
    file_header,
    scan,
)
from sidecar.wal._lock import LogLock
from sidecar.wal._log import (
    CORRUPT_SUFFIX,
    TEMP_SUFFIX,
    Compaction,
    FsyncFailed,
    Recovery,
    WriteAheadLog,
    WriteFailed,
    salvage_hint,
)
from sidecar.wal._records import (
    CHECKPOINT,
    CONSUME,
    DEDUP,
    RELAYED,
    RESERVE,
    SUBMIT,
    Replayed,
    checkpoint_record,
    consume_record,
    dedup_record,
    item_from_submit,
    record_to_dict,
    relayed_record,
    replay,
    reserve_record,
    submit_record,
)

__all__ = [
    "CHECKPOINT",
    "CONSUME",
    "CORRUPT_SUFFIX",
    "DEDUP",
    "FILE_HEADER_SIZE",
    "FRAME_HEADER_SIZE",
    "RELAYED",
    "RESERVE",
    "SUBMIT",
    "TEMP_SUFFIX",
    "Compaction",
    "FileLayer",
    "FsyncFailed",
    "LogHandle",
    "LogLock",
    "OsFileLayer",
    "Recovery",
    "Replayed",
    "Scan",
    "WriteAheadLog",
    "WriteFailed",
    "check_file_header",
    "checkpoint_record",
    "consume_record",
    "decode_frame_at",
    "dedup_record",
    "encode_frame",
    "file_header",
    "item_from_submit",
    "record_to_dict",
    "relayed_record",
    "replay",
    "reserve_record",
    "salvage_hint",
    "scan",
    "submit_record",
]
