"""``qssh-sidecar keygen``: generate a post-quantum SSH key pair, like ssh-keygen.

qssh-sidecar keygen -t ssh-falcon512 -f ~/.qssh/id_falcon512 -C alice@validator
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from transport.keys import (
    DEFAULT_ALGORITHM,
    KeyFileError,
    canonical_algorithm,
    fingerprint,
    generate_key,
    refuse_overwrite,
    write_key_pair,
)
from transport.ssh_algorithms import registered_algorithms


def _default_file(algorithm: str) -> Path:
    return Path.home() / ".qssh" / f"id_{algorithm.removeprefix('ssh-')}"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = "Generate a post-quantum SSH key pair (OpenSSH formats)."
    parser.add_argument(
        "-t",
        dest="algorithm",
        default=DEFAULT_ALGORITHM,
        metavar="ALG",
        help=f"key algorithm (default {DEFAULT_ALGORITHM}); one of: "
        + ", ".join(registered_algorithms()),
    )
    parser.add_argument("-f", dest="file", metavar="FILE", help="private key file (.pub beside)")
    parser.add_argument("-C", dest="comment", default=None, help="comment on the public key")
    parser.add_argument(
        "-N", dest="passphrase", default="", help="passphrase for the private key (default none)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing key files")


def run(args: argparse.Namespace) -> int:
    try:
        algorithm = canonical_algorithm(args.algorithm)
        path = Path(args.file).expanduser() if args.file else _default_file(algorithm)
        if not args.force:
            refuse_overwrite(path)
        print(f"Generating public/private {algorithm} key pair.")
        key = generate_key(algorithm, args.comment)
        private_path, public_path = write_key_pair(
            key, path, passphrase=args.passphrase or None, force=args.force
        )
    except KeyFileError as exc:
        print(f"qssh-sidecar keygen: {exc.message}", file=sys.stderr)
        return 1
    print(f"Your identification has been saved in {private_path}")
    print(f"Your public key has been saved in {public_path}")
    print("The key fingerprint is:")
    comment = f" {args.comment}" if args.comment else ""
    print(f"{fingerprint(key)}{comment}")
    return 0
