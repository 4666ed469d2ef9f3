"""``qssh-sidecar``: one entry point, subcommands registered by name.

Each subcommand lives in the module that owns its concern and exposes
``configure(parser)`` and ``run(args) -> int``; the module is imported only when its
subcommand runs, so ``wal verify`` never loads SSH or hardware code.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import sys
from collections.abc import Sequence
from typing import Protocol, cast

from sidecar import logs

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a tool cut off by `head`


class Subcommand(Protocol):
    def configure(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("sidecar.daemon.serve_cli", "run the sidecar daemon"),
    "wal": ("sidecar.wal_cli", "verify, dump or compact a write-ahead log"),
    "keygen": ("transport.keygen_cli", "generate a post-quantum SSH key pair"),
    "doctor": ("transport.doctor_cli", "show which provider serves each algorithm"),
    "hardware": ("hardware.report_cli", "probe quantum hardware and report the tier"),
}


def _load(name: str) -> Subcommand:
    module_name, _ = SUBCOMMANDS[name]
    return cast(Subcommand, importlib.import_module(module_name))


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; a closed stdout (``| head``) ends quietly, as in other tools."""
    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()  # here, not at exit: a closed pipe is caught below
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _version() -> str:
    try:
        return importlib.metadata.version("qssh-sidecar")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _add_log_flags(parser: argparse.ArgumentParser, suffix: str) -> None:
    # each level has its own dest: a subparser's namespace is copied over its parent's
    for word, more in (("verbose", "more"), ("quiet", "less")):
        parser.add_argument(
            f"-{word[0]}",
            f"--{word}",
            dest=f"_{word}_{suffix}" if suffix else word,
            action="count",
            default=0,
            help=f"log {more} (repeat for {more})",
        )


def _add_log_flags_to_actions(parser: argparse.ArgumentParser, depth: int) -> None:
    """``-v``/``-q`` after a subcommand's action too (`wal verify PATH -q`)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                _add_log_flags(sub, str(depth))
                _add_log_flags_to_actions(sub, depth + 1)


def _main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--json" in argv:  # accepted anywhere on the line: given to the subcommand
        argv = [word for word in argv if word != "--json"] + ["--json"]
    parser = argparse.ArgumentParser(prog="qssh-sidecar")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        args = parser.parse_args(argv)  # prints help or the error, exits
        parser.print_help()
        return 2
    command = _load(argv[0])
    cmd_parser = argparse.ArgumentParser(prog=f"qssh-sidecar {argv[0]}")
    cmd_parser.add_argument("--version", action="version", version=f"qssh-sidecar {_version()}")
    _add_log_flags(cmd_parser, "")
    command.configure(cmd_parser)
    _add_log_flags_to_actions(cmd_parser, 1)
    args = cmd_parser.parse_args(argv[1:])
    for name in [n for n in vars(args) if n.startswith(("_verbose_", "_quiet_"))]:
        total = name.split("_")[1]  # after an action (`wal verify PATH -q`): add them up
        setattr(args, total, getattr(args, total) + getattr(args, name))
        delattr(args, name)
    if argv[0] != "serve":  # serve has its own --log-level and --log-format
        # wal shows the progress of long reads as INFO lines; the others only warnings
        default = "INFO" if argv[0] == "wal" else "WARNING"
        logs.configure(logs.level_from_flags(default, args.verbose, args.quiet))
    return command.run(args)


if __name__ == "__main__":
    sys.exit(main())
