"""``qssh-queue``: the ssh-style command-line client of the queue service (SPEC §5.4).

    qssh-queue [-p PORT] [-i IDENTITY] [-o Option=value] [-F CONFIG] [--json]
               [user@]host COMMAND [ARGS]

Exit codes: 0 success; 1 the server answered with an error; 2 usage or configuration
error; 3 could not connect, authenticate or verify the host key; 4 nothing to pop or
lease; 5 a bulk submit had failures (see the summary); 130 interrupted (Ctrl-C); 141
stdout closed early (piped into `head`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.metadata
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncssh
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hardware.kme import KMEClient
from sidecar import logs
from sidecar.errors import ErrorCode, SidecarError
from transport import event_loop
from transport.client import AuthRefused, ConnectFailed, QueueClient
from transport.host_pinning import HostKeyError
from transport.protocol import DEFAULT_PORT
from transport.qkd import QKDSettings
from transport.ssh_config import QKD_KEYWORDS, HostConfig, SshConfigError, resolve

EXIT_OK = 0
EXIT_REMOTE_ERROR = 1
EXIT_USAGE = 2
EXIT_CONNECT = 3
EXIT_EMPTY = 4
EXIT_PARTIAL = 5
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a tool cut off by `head`

COMMANDS = (
    "submit",
    "pop",
    "lease",
    "ack",
    "release",
    "tail",
    "depth",
    "stats",
    "tier",
    "peers",
    "ping",
)


class UsageError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="qssh-queue",
        description="Talk to a qssh-sidecar queue over post-quantum SSH.",
        epilog="exit codes: 0 ok, 1 server error, 2 usage, 3 connect/auth/host key, "
        "4 queue empty, 5 bulk submit had failures, 130 interrupted, 141 output closed",
    )
    p.add_argument(
        "-p", "--port", type=int, help=f"server port (default from config, {DEFAULT_PORT})"
    )
    p.add_argument("-i", "--identity", help="private key file (like ssh -i)")
    p.add_argument("-o", "--option", action="append", default=[], metavar="Option=value")
    p.add_argument("-F", "--config", type=Path, help="config file (default ~/.qssh/config)")
    p.add_argument(
        "--json", action="store_true", help="machine-readable output (anywhere on the line)"
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    p.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more to stderr (-vv: debug)"
    )
    p.add_argument(
        "-q", "--quiet", action="store_true", help="print results only: no notes, no progress"
    )
    p.add_argument(
        "--event-loop",
        choices=event_loop.NAMES,
        default=event_loop.DEFAULT,
        help="uvloop (default) or asyncio, the standard library's loop",
    )
    p.add_argument("destination", metavar="[user@]host")
    p.add_argument("command", choices=COMMANDS)
    p.add_argument("args", nargs=argparse.REMAINDER)
    return p


def command_parser(command: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"qssh-queue HOST {command}")
    if command == "submit":
        p.add_argument(
            "message",
            nargs="?",
            help="KIND, or a JSON object, or '-' for NDJSON on stdin (one message per line)",
        )
        p.add_argument("fields", nargs="*", help="field=value (value parsed as JSON if it can be)")
        mode = p.add_mutually_exclusive_group()
        mode.add_argument("--sync", dest="mode", action="store_const", const="sync")
        mode.add_argument("--async", dest="mode", action="store_const", const="async")
        p.add_argument(
            "--dedup-id",
            help="1-128 characters: a retry with the same id stores nothing (one message only)",
        )
        p.add_argument(
            "--broadcast", action="store_true", help="relay the message to the server's peers"
        )
        p.add_argument("--batch", type=_at_least(1), default=256, help="messages per bulk request")
        p.add_argument("--no-progress", action="store_true")
    elif command == "lease":
        p.add_argument("--timeout", type=float, default=30.0, help="lease seconds")
        p.add_argument("--wait", type=float, default=0.0, help="wait up to S for a message")
        _kinds_option(p)
    elif command in ("ack", "release"):
        p.add_argument("lease_id")
    elif command == "tail":
        p.add_argument("--credit", type=_at_least(1), default=16, help="deliveries in flight")
        p.add_argument("--lease-timeout", type=float, default=30.0)
        p.add_argument(
            "--no-ack",
            action="store_true",
            help="release each delivery instead of acking it (it is delivered again)",
        )
        p.add_argument(
            "-n", "--count", type=_at_least(0), default=0, help="stop after N (0 = forever)"
        )
        _kinds_option(p)
    return p


def _at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``low`` (a usage error, exit 2, otherwise)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def _kinds_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--kinds",
        type=_kind_list,
        default=None,
        metavar="KIND[,KIND...]",
        help="only messages of these kinds (the others stay for other consumers)",
    )


def _kind_list(text: str) -> list[str]:
    kinds = [k.strip() for k in text.split(",")]
    if not all(kinds):
        raise argparse.ArgumentTypeError(f"an empty kind name in {text!r}")
    return kinds


def _field_value(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def message_from_args(message: str, fields: Sequence[str]) -> dict[str, Any]:
    if message.lstrip().startswith("{"):
        if fields:
            raise UsageError("give either a JSON message or KIND field=value ..., not both")
        try:
            obj = orjson.loads(message)
        except orjson.JSONDecodeError as exc:
            raise UsageError(f"message is not valid JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise UsageError("message must be a JSON object")
        return obj
    out: dict[str, Any] = {"kind": message}
    for item in fields:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"field {item!r} must look like name=value")
        out[key] = _field_value(value)
    return out


NO_TTY_WIDTH = 10_000  # piped output: tables as wide as their content, never wrapped


def _width(stream: Any) -> int | None:
    """None (the terminal's width) on a tty; otherwise wide enough never to wrap."""
    return None if stream.isatty() else NO_TTY_WIDTH


class Output:
    def __init__(self, as_json: bool, *, quiet: bool = False) -> None:
        self.as_json = as_json
        self.quiet = quiet
        self.console = Console(highlight=False, width=_width(sys.stdout))
        self.err = Console(stderr=True, highlight=False, width=_width(sys.stderr))

    def data(self, value: Any, title: str = "") -> None:
        if self.as_json:
            sys.stdout.buffer.write(orjson.dumps(value) + b"\n")
            sys.stdout.flush()
            return
        if isinstance(value, dict):
            table = Table(title=title or None, show_header=False)
            table.add_column("field", style="bold")
            table.add_column("value")
            for key, val in _flatten(value):
                table.add_row(key, val)
            self.console.print(table)
        else:
            self.console.print(value)

    def note(self, text: str) -> None:
        """A remark for people on stderr (not with --json or -q)."""
        if not self.as_json and not self.quiet:
            self.err.print(text, markup=False)

    def error(self, exc: BaseException) -> None:
        if isinstance(exc, SidecarError):
            payload = exc.to_wire()
        else:
            payload = {"code": ErrorCode.INTERNAL.value, "message": str(exc)}
        if self.as_json:
            sys.stderr.buffer.write(orjson.dumps({"error": payload}) + b"\n")
        else:
            self.err.print(f"qssh-queue: {payload['code']}: {payload['message']}", markup=False)


def _flatten(value: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for key, val in value.items():
        name = f"{prefix}{key}"
        if isinstance(val, dict) and val:
            rows.extend(_flatten(val, name + "."))
        elif isinstance(val, str):
            rows.append((name, val))
        else:
            rows.append((name, orjson.dumps(val).decode()))
    return rows


async def _bulk_submit(
    client: QueueClient, sub: argparse.Namespace, out: Output, *, broadcast: bool
) -> int:
    mode, batch, progress = sub.mode or "default", sub.batch, not sub.no_progress
    lines = [line for line in sys.stdin.buffer.read().splitlines() if line.strip()]
    ok = failed = 0
    errors: dict[str, int] = {}
    first_ids: list[Any] = []
    show = progress and not out.as_json and not out.quiet and out.err.is_terminal
    columns = (TextColumn("submitting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=out.err, disable=not show) as bar:
        task = bar.add_task("submit", total=len(lines))
        pending: list[Any] = []
        for number, line in enumerate(lines, 1):
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                failed += 1
                errors[f"line {number}: not JSON"] = errors.get(f"line {number}: not JSON", 0) + 1
                bar.advance(task)
                continue
            pending.append(obj)
        chunks = [pending[i : i + max(1, batch)] for i in range(0, len(pending), max(1, batch))]

        async def send(chunk: list[Any]) -> None:
            nonlocal ok, failed
            results = await client.submit_batch(chunk, mode, broadcast=broadcast)
            for result in results:
                if "error" in result:
                    failed += 1
                    code = result["error"]["code"]
                    errors[code] = errors.get(code, 0) + 1
                else:
                    ok += 1
                    if len(first_ids) < 1:
                        first_ids.append(result["message_id"])
            bar.advance(task, len(chunk))

        window = 8
        for i in range(0, len(chunks), window):
            await asyncio.gather(*(send(c) for c in chunks[i : i + window]))
    summary = {"submitted": ok, "failed": failed, "errors": errors, "mode": mode}
    out.data(summary, "bulk submit")
    return EXIT_OK if failed == 0 else EXIT_PARTIAL


async def _tail(client: QueueClient, args: argparse.Namespace, out: Output) -> int:
    sub = await client.subscribe(
        credit=args.credit, lease_timeout=args.lease_timeout, kinds=args.kinds
    )
    seen = 0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError):
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    interrupted = False
    try:
        while not args.count or seen < args.count:
            if stop.is_set():
                interrupted = True
                break
            getter = asyncio.ensure_future(sub.next())
            stopper = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                interrupted = True
                break
            stopper.cancel()
            delivery = getter.result()
            lease_id = delivery["lease_id"]
            if out.as_json:
                out.data(delivery)
            else:
                msg = delivery["message"]
                out.console.print(
                    f"#{delivery.get('message_id')} p{delivery.get('priority', '?')} "
                    f"{msg.get('kind')} {orjson.dumps(msg).decode()}",
                    markup=False,
                )
                sys.stdout.flush()
            if args.no_ack:
                await client.release(lease_id)
            else:
                await client.ack(lease_id)
            await sub.grant(1)
            seen += 1
    finally:
        with contextlib.suppress(NotImplementedError):
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGTERM)
    # Unacked deliveries (credit in flight) are released by the server when the
    # channel closes; stop first so nothing new is pushed meanwhile.
    await sub.stop()
    return EXIT_INTERRUPTED if interrupted else EXIT_OK


async def run_command(args: argparse.Namespace, sub: argparse.Namespace, out: Output) -> int:
    cfg = resolve(
        args.destination,
        port=args.port,
        identity=args.identity,
        options=args.option,
        config_file=args.config,
    )
    cfg = readable_identities(cfg, out)
    options, kme_close = qkd_options(cfg)
    try:
        return await _run_connected(args, sub, out, cfg, options)
    finally:
        if kme_close is not None:
            await kme_close()


async def _run_connected(
    args: argparse.Namespace,
    sub: argparse.Namespace,
    out: Output,
    cfg: HostConfig,
    options: dict[str, Any],
) -> int:
    async with QueueClient.from_config(cfg, **options) as client:
        command = args.command
        if command == "submit":
            mode = sub.mode or "default"
            if sub.message in (None, "-"):
                if sub.dedup_id is not None:
                    raise UsageError("--dedup-id names one message; not with NDJSON on stdin")
                return await _bulk_submit(client, sub, out, broadcast=sub.broadcast)
            result = await client.submit(
                message_from_args(sub.message, sub.fields),
                mode,
                dedup_id=sub.dedup_id,
                broadcast=sub.broadcast,
            )
            out.data(result, "submitted")
            return EXIT_OK
        if command == "pop":
            item = await client.pop()
            if item is None:
                out.data(None) if out.as_json else out.note("queue is empty")
                return EXIT_EMPTY
            out.data(item, "message")
            return EXIT_OK
        if command == "lease":
            # detached: this process exits now, the ack comes from a later one
            lease = await client.lease(
                timeout=sub.timeout, wait=sub.wait, detach=True, kinds=sub.kinds
            )
            if lease is None:
                empty = "queue is empty" if sub.kinds is None else "no message of those kinds"
                out.data(None) if out.as_json else out.note(empty)
                return EXIT_EMPTY
            out.data(lease, "leased")
            return EXIT_OK
        if command in ("ack", "release"):
            lease_id: Any = int(sub.lease_id) if sub.lease_id.isdigit() else sub.lease_id
            if command == "ack":
                await client.ack(lease_id)
            else:
                await client.release(lease_id)
            out.data({command + ("ed" if command == "ack" else "d"): lease_id})
            return EXIT_OK
        if command == "tail":
            return await _tail(client, sub, out)
        if command == "depth":
            out.data(await client.depth_detail(), "depth")
            return EXIT_OK
        if command == "stats":
            out.data(await client.stats(), "stats")
            return EXIT_OK
        if command == "peers":
            peers = (await client.call("peers"))["peers"]
            out.data(peers, "peers") if out.as_json else print_peers(out, peers)
            return EXIT_OK
        if command == "tier":
            view = await client.tier()
            if client.qkd_failure is not None:
                view["session"]["qkd_client_failure"] = client.qkd_failure
            out.data(view, "tier") if out.as_json else print_tier(out, view)
            return EXIT_OK
        out.data(await client.ping(), "ping")
        return EXIT_OK


def readable_identities(cfg: HostConfig, out: Output) -> HostConfig:
    """Drop identity files that cannot be read, with OpenSSH's warning for each."""
    usable = []
    for path in cfg.identity_files:
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            out.err.print(
                f"Warning: Identity file {path} not accessible: {exc.strerror}.", markup=False
            )
            continue
        try:
            asyncssh.read_private_key(str(path))
        except (asyncssh.KeyImportError, ValueError) as exc:
            # OpenSSH's line for a file that is not a private key (a .pub given by mistake)
            encrypted = "passphrase" in str(exc).lower()
            why = "passphrase-protected keys are not supported" if encrypted else "invalid format"
            out.err.print(f'Load key "{path}": {why}', markup=False)
            continue
        usable.append(path)
    return dataclasses.replace(cfg, identity_files=tuple(usable))


def qkd_options(cfg: HostConfig) -> tuple[dict[str, Any], Callable[[], Awaitable[None]] | None]:
    """``qkd=`` / ``require_qkd=`` for :meth:`QueueClient.connect` from the QKD* options,
    and how to close the KME client afterwards."""
    given = {k: cfg.extra[k] for k in QKD_KEYWORDS if k in cfg.extra}
    if not given:
        return {}, None
    missing = [k for k in QKD_KEYWORDS if k not in given]
    if missing:
        raise UsageError(
            f"tier-4 sealing needs all of {', '.join(QKD_KEYWORDS)}; missing {missing}"
        )
    try:
        kme = KMEClient(
            given["QKDKME"],
            cert=str(Path(given["QKDCertificate"]).expanduser()),
            key=str(Path(given["QKDKey"]).expanduser()),
            ca=str(Path(given["QKDCA"]).expanduser()),
        )
    except ValueError as exc:  # not an https:// URL
        raise UsageError(f"QKDKME: {exc}") from None
    settings = QKDSettings(kme=kme, sae_id=given["QKDSAEID"], peer_sae_id=given["QKDPeerSAEID"])
    required = cfg.extra.get("QKDRequired", "no").lower() in ("yes", "true")
    return {"qkd": settings, "require_qkd": required}, kme.aclose


PEER_COLUMNS = (
    "peer",
    "connected",
    "session_tier",
    "backlog",
    "backlog_bytes",
    "oldest_age",
    "relayed_total",
    "last_error",
)


def print_peers(out: Output, peers: list[dict[str, Any]]) -> None:
    """One row per relay link; held messages listed under the table with their reason."""
    table = Table(title="peers", show_header=True)
    for column in PEER_COLUMNS:
        table.add_column(column.replace("_", " "))
    for view in peers:
        age = view.get("oldest_age")
        cells = {**view, "oldest_age": "-" if age is None else f"{age:.1f}s"}
        table.add_row(*("-" if cells.get(c) is None else str(cells.get(c)) for c in PEER_COLUMNS))
    out.console.print(table)
    for view in peers:
        for held in view.get("held", []):
            out.console.print(
                f"{view['peer']}: message {held['message_id']} held: {held['reason']}"
            )


def print_tier(out: Output, view: dict[str, Any]) -> None:
    """Effective, node and session tier, each with why it is not higher."""
    table = Table(title="tier", show_header=True)
    for column in ("", "tier", "why"):
        table.add_column(column)
    session = view.get("session", {})
    for label, part in (("effective", view), ("node", view.get("node", {})), ("session", session)):
        why = "; ".join(part.get("reasons", [])) or "-"
        table.add_row(label, f"{part.get('tier')} {part.get('name', '')}", why)
    out.console.print(table)
    facts = {
        k: session[k]
        for k in ("cipher", "host_key", "user_key", "sealed", "epoch", "rekeys", "qkd_failure")
        if session.get(k) is not None
    }
    if "qkd_client_failure" in session:
        facts["qkd_client_failure"] = session["qkd_client_failure"]
    out.console.print(", ".join(f"{k}={v}" for k, v in facts.items()), markup=False)


def _version() -> str:
    try:
        return importlib.metadata.version("qssh-sidecar")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a closed stdout (``| head``) ends quietly, as in other tools."""
    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()  # here, not at exit: a closed pipe is caught below
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in words  # accepted anywhere, also after the command
    args = parser.parse_args([w for w in words if w != "--json"])
    args.json = as_json
    logs.configure(logs.level_from_flags("WARNING", args.verbose, 0))
    out = Output(args.json, quiet=args.quiet)
    try:
        sub = command_parser(args.command).parse_args(args.args)
        if args.command == "submit" and sub.message not in (None, "-"):
            message_from_args(sub.message, sub.fields)  # usage errors before connecting
        try:
            event_loop.factory(args.event_loop)
        except ValueError as exc:  # uvloop not importable
            raise UsageError(str(exc)) from None
        return event_loop.run(run_command(args, sub, out), args.event_loop)
    except (UsageError, SshConfigError) as exc:
        out.err.print(f"qssh-queue: {exc}", markup=False)
        return EXIT_USAGE
    except (HostKeyError, ConnectFailed, AuthRefused) as exc:
        out.error(exc)
        return EXIT_CONNECT
    except SidecarError as exc:
        out.error(exc)
        return EXIT_REMOTE_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
