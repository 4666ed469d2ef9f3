"""``qssh-sidecar keygen``: generate a post-quantum SSH key pair, like ssh-keygen.

qssh-sidecar keygen -t ssh-falcon512 -f ~/.qssh/id_falcon512 -C alice@validator
qssh-sidecar keygen -t ssh-falcon1024 --qrng /dev/ttyACM0   # QRNG-mixed seed (tier 3)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hardware.errors import HardwareError
from hardware.health import HealthTest
from hardware.monitor import HealthCheckedSource
from hardware.sources import CharDeviceSource, EntropySource, SerialSource
from transport.entropy import EntropyMixer
from transport.keys import (
    DEFAULT_ALGORITHM,
    KeyFileError,
    canonical_algorithm,
    fingerprint,
    generate_key,
    qrng_mixed_algorithms,
    refuse_overwrite,
    write_key_pair,
)
from transport.ssh_algorithms import registered_algorithms
from transport.ssh_config import qssh_home


def _default_file(algorithm: str) -> Path:
    """Where ``qssh-queue`` looks for it (``$QSSH_HOME`` or ``~/.qssh``; ``id_mldsa65``)."""
    return qssh_home() / f"id_{algorithm.removeprefix('ssh-').replace('-', '')}"


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
    parser.add_argument(
        "-f",
        dest="file",
        metavar="FILE",
        help="private key file (.pub beside; default: $QSSH_HOME or ~/.qssh, id_ALG as "
        "qssh-queue looks for it, e.g. id_mldsa65)",
    )
    parser.add_argument("-C", dest="comment", default=None, help="comment on the public key")
    parser.add_argument(
        "-N", dest="passphrase", default="", help="passphrase for the private key (default none)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing key files")
    parser.add_argument(
        "--qrng",
        metavar="DEVICE",
        help="mix health-tested output of this QRNG (serial port or character device) "
        "with OS randomness (HKDF) into the key's seed (every algorithm but SLH-DSA)",
    )


def qrng_mixer(path: str) -> tuple[EntropyMixer, HealthCheckedSource]:
    """A mixer on ``path`` whose startup sample (SP 800-90B, 1024 samples) passed."""
    source: EntropySource = (
        SerialSource(path)
        if Path(path).name.startswith(("tty", "pts")) or "/pts/" in path
        else CharDeviceSource(path)
    )
    checked = HealthCheckedSource(source, HealthTest(), timeout=5.0)
    try:
        checked.read(checked.test.params.startup_samples)  # startup test; bytes discarded
    except HardwareError as exc:
        checked.close()
        raise KeyFileError(f"QRNG {path} is not usable: {exc}") from None
    return EntropyMixer(checked.read, source=path), checked


def run(args: argparse.Namespace) -> int:
    try:
        algorithm = canonical_algorithm(args.algorithm)
        if args.comment is not None and ("\n" in args.comment or "\r" in args.comment):
            raise KeyFileError("-C: the comment must be one line")
        path = Path(args.file).expanduser() if args.file else _default_file(algorithm)
        if not args.force:
            refuse_overwrite(path)
        print(f"Generating public/private {algorithm} key pair.")
        if args.qrng:
            if algorithm not in qrng_mixed_algorithms():
                raise KeyFileError(
                    f"{algorithm} key generation cannot take QRNG input (only liboqs "
                    f"implements it, with its own randomness); use one of "
                    f"{', '.join(qrng_mixed_algorithms())}"
                )
            mixer, checked = qrng_mixer(args.qrng)
            try:
                key = generate_key(algorithm, args.comment, entropy=mixer)
            finally:
                checked.close()
            if mixer.mixed != 1:
                raise KeyFileError(f"QRNG {args.qrng} failed while generating; no key written")
            print(f"Seed mixed from OS randomness and health-tested QRNG {args.qrng}.")
        else:
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
