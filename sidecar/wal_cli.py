"""``qssh-sidecar wal verify|dump|compact PATH``: inspect and maintain a log offline.

Exit codes: 0 clean; 1 torn tail (an unfinished write at a crash; the next open cuts
it); 2 corruption, unreadable file or not a log; 3 the log is in use.
"""

from __future__ import annotations

import argparse
import logging
import os
import stat
import sys
import time

import orjson

from sidecar import logs
from sidecar.errors import LogCorrupt, Unavailable
from sidecar.wal import (
    TEMP_SUFFIX,
    LogLock,
    Replayed,
    WriteAheadLog,
    check_file_header,
    checkpoint_record,
    consume_record,
    dedup_record,
    live_record,
    record_to_dict,
    relayed_record,
    replay,
    salvage_hint,
    scan,
    submit_record,
    watermark_record,
)

EXIT_CLEAN, EXIT_TORN, EXIT_CORRUPT, EXIT_BUSY = 0, 1, 2, 3
log = logging.getLogger("sidecar.wal_cli")


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="wal_command", metavar="ACTION", required=True)
    verify = sub.add_parser("verify", help="check every frame; report torn tail or corruption")
    verify.add_argument("path")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    dump = sub.add_parser("dump", help="print every record as NDJSON")
    dump.add_argument("path")
    compact = sub.add_parser("compact", help="rewrite the log keeping only live messages")
    compact.add_argument("path")
    compact.add_argument(
        "--salvage",
        action="store_true",
        help="if the log is corrupt, set it aside and keep every valid record",
    )


def run(args: argparse.Namespace) -> int:
    action = {"verify": _verify, "dump": _dump, "compact": _compact}[args.wal_command]
    return action(args)


def _log_file(path: str) -> str | None:
    """The file ``path`` names, symlinks resolved (the lock, the reading and a
    compaction's rename are all done on it), or None, the reason printed, if that is
    not a readable regular file."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except FileNotFoundError:
        print(f"{path}: no such log", file=sys.stderr)
        return None
    except OSError as exc:
        print(f"{path}: cannot read: {exc.strerror or exc}", file=sys.stderr)
        return None
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        print(f"{path}: {kind}; give the path of a log file", file=sys.stderr)
        return None
    try:
        with open(real, "rb"):
            pass
    except OSError as exc:
        print(f"{path}: cannot read: {exc.strerror or exc}", file=sys.stderr)
        return None
    return real


def _read_log(path: str) -> bytes | None:
    """The log file's bytes, or None (the reason printed) if unreadable or not a log."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        print(f"{path}: cannot read: {exc.strerror or exc}", file=sys.stderr)
        return None
    problem = check_file_header(data)
    if problem is not None:
        print(f"{path}: {problem}", file=sys.stderr)
        return None
    return data


def _verify(args: argparse.Namespace) -> int:
    real = _log_file(args.path)
    if real is None:
        return EXIT_CORRUPT
    holder = LogLock(real).holder()
    if holder is not None:
        print(
            f"{args.path}: in use by {holder}: a running sidecar is writing it; "
            "stop it first, or read it with `wal dump`",
            file=sys.stderr,
        )
        return EXIT_BUSY
    data = _read_log(real)
    if data is None:
        return EXIT_CORRUPT
    progress = logs.ProgressReport(f"verifying {os.path.basename(args.path)}", log)
    try:
        result = scan(data, progress=progress)
    finally:
        progress.close()
    report: dict[str, object] = {
        "path": args.path,
        "bytes": len(data),
        "frames": result.frames,
        "records": len(result.records),
        "valid_bytes": result.valid_end,
        "status": "clean",
    }
    try:
        replayed = replay(result.records, path=args.path)
    except LogCorrupt as exc:
        print(exc.message, file=sys.stderr)
        return EXIT_CORRUPT
    report["live_messages"] = len(replayed.live)
    report["next_id"] = replayed.next_id
    if os.path.exists(real + TEMP_SUFFIX):
        report["leftover_compaction_file"] = real + TEMP_SUFFIX
    code = EXIT_CLEAN
    if result.corrupt:
        report["status"] = "corrupt"
        report["bad_offset"] = result.bad_offset
        report["next_valid_offset"] = result.next_valid_offset
        message = (
            f"{args.path}: CORRUPT: bad frame at byte offset {result.bad_offset}, valid frames "
            f"follow (next at {result.next_valid_offset}). The sidecar will refuse to open "
            f"it; {salvage_hint(f'wal compact --salvage {args.path}')}"
        )
        code = EXIT_CORRUPT
    elif result.torn_tail:
        report["status"] = "torn_tail"
        report["torn_bytes"] = len(data) - result.valid_end
        message = (
            f"{args.path}: torn tail: {len(data) - result.valid_end} bytes at offset "
            f"{result.valid_end} are an unfinished write (a crash mid-write); the next open "
            "truncates them. Nothing acknowledged is in them"
        )
        code = EXIT_TORN
    else:
        message = (
            f"{args.path}: clean: {result.frames} frames, {len(result.records)} records, "
            f"{len(replayed.live)} live messages, next id {replayed.next_id}"
        )
        if result.preallocated:
            report["preallocated_bytes"] = result.preallocated
            message += (
                f"; {result.preallocated} bytes of zeros after the last frame, written ahead "
                "by a sidecar that did not close the log (the next open cuts them)"
            )
    if args.json:
        sys.stdout.write(orjson.dumps(report).decode() + "\n")
    print(message, file=sys.stdout if code == EXIT_CLEAN and not args.json else sys.stderr)
    return code


def _dump(args: argparse.Namespace) -> int:
    real = _log_file(args.path)
    data = None if real is None else _read_log(real)
    if data is None:
        return EXIT_CORRUPT
    result = scan(data)
    out = sys.stdout.buffer
    try:
        for record in result.records:
            out.write(orjson.dumps(record_to_dict(record)) + b"\n")
        out.flush()
    except BrokenPipeError:  # e.g. piped into `head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_CLEAN
    if result.corrupt:
        print(
            f"{args.path}: stopped at corrupt frame at offset {result.bad_offset}",
            file=sys.stderr,
        )
        return EXIT_CORRUPT
    if result.torn_tail:
        print(f"{args.path}: torn tail at offset {result.valid_end}", file=sys.stderr)
        return EXIT_TORN
    return EXIT_CLEAN


def _compacted(replayed: Replayed) -> list[bytes]:
    """The records of an offline compaction: what online compaction keeps (see
    docs/wal-format.md), without the configuration the running queue has. So every
    dedup key, watermark and broadcast message is kept with its relayed marks (the
    queue drops, at open, the keys past its window and what no configured peer lacks)."""
    live = replayed.live
    keys = {mid: key for key, (mid, _at) in replayed.dedup.items() if mid in live}
    records = [checkpoint_record(replayed.next_id, time.time())]
    records += [watermark_record(p, w) for p, w in replayed.watermarks.items()]
    records += [
        dedup_record(principal, dedup_id, mid, at)
        for (principal, dedup_id), (mid, at) in replayed.dedup.items()
        if keys.get(mid) != (principal, dedup_id)
    ]
    for mid, item in replayed.broadcast.items():
        if mid not in live:  # consumed here; a peer may still lack it
            records += [submit_record(item), consume_record(mid)]
        records += [relayed_record(peer, mid) for peer in sorted(replayed.relayed.get(mid, ()))]
    # a live message keeps the dedup key its submit record carried
    records += [live_record(value, keys.get(mid)) for mid, value in live.items()]
    return records


def _compact(args: argparse.Namespace) -> int:
    real = _log_file(args.path)
    if real is None:
        return EXIT_CORRUPT
    links = os.stat(real).st_nlink
    if links > 1:
        # the rename would replace this name only, and a sidecar writing the file
        # under another name holds no lock that this one shows
        print(
            f"{args.path}: the file has {links} hard links; compact it under the name the "
            "sidecar uses, with the other links removed",
            file=sys.stderr,
        )
        return EXIT_CORRUPT
    lock = LogLock(real)
    try:
        lock.acquire()
    except Unavailable as exc:
        print(exc.message, file=sys.stderr)
        return EXIT_BUSY
    except OSError as exc:
        print(f"{lock.path}: cannot lock: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_CORRUPT
    try:
        return _compact_locked(args, real)
    except OSError as exc:
        print(f"{args.path}: compaction failed: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_CORRUPT
    finally:
        lock.release(remove=True)  # as verify, leave no lock file behind


def _compact_locked(args: argparse.Namespace, real: str) -> int:
    before = os.path.getsize(real)
    report = logs.ProgressReport(f"reading {os.path.basename(real)}", log)
    try:
        wal, rec = WriteAheadLog.open(real, salvage=args.salvage, progress=report)
    except LogCorrupt as exc:
        command = "" if args.salvage else f": `qssh-sidecar wal compact --salvage {args.path}`"
        print(exc.message + command, file=sys.stderr)
        return EXIT_CORRUPT
    finally:
        report.close()
    assert rec.replayed is not None
    started = time.perf_counter()
    wal.rewrite(_compacted(rec.replayed))
    wal.close()
    print(
        f"{args.path}: compacted {before} -> {wal.size} bytes, "
        f"{len(rec.replayed.live)} live messages kept, next id {rec.replayed.next_id} "
        f"({time.perf_counter() - started:.3f}s)"
    )
    if rec.salvaged_to:
        print(f"damaged original kept as {rec.salvaged_to}")
    return EXIT_CLEAN
