"""``qssh-sidecar serve``: run one sidecar until SIGTERM/SIGINT.

Exit codes (docs/operations.md): 0 after a clean shutdown, 1 for a failure while
starting, running or shutting down, 2 for a configuration problem (one line on stderr,
nothing listened), 3 for a full disk at start, 4 when a shutdown could not write the
async messages it held (one line gives how many were lost).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sidecar import logs
from transport import event_loop

from . import config as config_mod
from .config import ConfigError

EXIT_CONFIG = 2
EXIT_FAILURE = 1


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run the sidecar: durable priority queue over post-quantum SSH, node JSON-RPC "
        "endpoint and Prometheus metrics. Without --config it runs on embedded defaults "
        "(instance alice, ./data/alice, 127.0.0.1:22222) and sets up a local operator key."
    )
    parser.add_argument("--config", type=Path, help="TOML config file (docs/operations.md)")
    parser.add_argument("--instance", help="validator name (default: alice)")
    parser.add_argument(
        "--data-dir", type=Path, help="state directory (default: ./data/<instance>)"
    )
    parser.add_argument("--listen", metavar="ADDR:PORT", help="SSH listen address")
    parser.add_argument("--port", type=int, help="SSH listen port (keeps the address)")
    parser.add_argument(
        "--host-key",
        type=Path,
        help="host private key file; must exist (without this flag: <data-dir>/host_key, "
        "generated on first start)",
    )
    parser.add_argument("--authorized-keys", type=Path, help="authorized_keys with roles=")
    parser.add_argument(
        "--metrics", metavar="ADDR:PORT", help="Prometheus exporter (loopback only; '' = off)"
    )
    parser.add_argument(
        "--node-http",
        metavar="ADDR:PORT",
        nargs="?",
        const=config_mod.DEFAULT_NODE_HTTP,
        help="node JSON-RPC over HTTP and WebSocket, loopback only "
        f"(alone: {config_mod.DEFAULT_NODE_HTTP}; '' = off)",
    )
    admission = parser.add_argument_group(
        "connection admission (as OpenSSH's sshd_config; docs/operations.md)"
    )
    admission.add_argument(
        "--max-startups",
        metavar="START:RATE:FULL",
        help="MaxStartups: random early drop of unauthenticated connections (default 10:30:100)",
    )
    admission.add_argument(
        "--per-source-max-startups",
        type=int,
        metavar="N",
        help="PerSourceMaxStartups: unauthenticated connections per address (default 10)",
    )
    admission.add_argument(
        "--login-grace-time",
        type=float,
        metavar="SECONDS",
        help="LoginGraceTime: time to authenticate (default 10)",
    )
    admission.add_argument(
        "--per-source-penalties",
        metavar="SPEC",
        help="PerSourcePenalties, e.g. 'authfail:5 noauth:1 grace-exceeded:10 min:15 "
        "max:600', or 'no'",
    )
    parser.add_argument(
        "--salvage",
        action="store_true",
        help="start even if the log is corrupt mid-file: keep the bad file aside, "
        "keep every valid record",
    )
    parser.add_argument(
        "--event-loop",
        choices=event_loop.NAMES,
        help="uvloop (default) or asyncio, the standard library's loop (config: event_loop)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=logs.LEVELS,
        help="DEBUG, INFO, WARNING or ERROR (default INFO; -v / -q move it one step)",
    )
    parser.add_argument(
        "--log-format",
        default="text",
        choices=logs.FORMATS,
        help="text (default) or json: one JSON object per line, for journald and Loki",
    )


def load_config(args: argparse.Namespace) -> config_mod.DaemonConfig:
    cfg = config_mod.load(args.config)
    return config_mod.override(
        cfg,
        instance=args.instance,
        data_dir=args.data_dir,
        listen=args.listen,
        port=args.port,
        host_key=args.host_key,
        authorized_keys=args.authorized_keys,
        metrics=args.metrics,
        node_http=args.node_http,
        admission=admission_flags(args),
        event_loop_name=args.event_loop,
    )


def admission_flags(args: argparse.Namespace) -> dict[str, object]:
    """The admission flags given, as ``[admission]`` keys."""
    given = {
        "max_startups": args.max_startups,
        "per_source_max_startups": args.per_source_max_startups,
        "login_grace_time": args.login_grace_time,
        "per_source_penalties": args.per_source_penalties,
    }
    return {k: v for k, v in given.items() if v is not None}


def run(args: argparse.Namespace) -> int:
    level = logs.level_from_flags(args.log_level, args.verbose, args.quiet)
    # status lines (INFO and below) on stdout, warnings and errors on stderr
    logs.configure(level, args.log_format, split=True)
    try:
        cfg = load_config(args)
        event_loop.factory(cfg.event_loop)  # uvloop importable, before anything starts
    except (ConfigError, ValueError) as e:
        print(f"qssh-sidecar: {e}", file=sys.stderr)
        return EXIT_CONFIG
    from .app import Sidecar  # noqa: PLC0415 - keeps `--help` and config errors fast

    return event_loop.run(Sidecar(cfg, salvage=args.salvage).main(), cfg.event_loop)
