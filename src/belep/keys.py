"""Key material on a real machine: fresh keys and key files.

Owns what :mod:`belep.crypto` (pure) leaves out: :func:`generate_private_key`
draws a fresh seed from the operating system's CSPRNG
(:func:`secrets.token_bytes`); :func:`write_private_key` and
:func:`read_private_key` keep a key in a PKCS#8 PEM file (the suite's
encoding, optionally encrypted under a passphrase).

Key files are created with mode 0600 from the start (never widened
afterwards), durably (file and directory fsynced), never overwriting; loading
one that is readable or writable by group or others is refused.

An I/O edge: the pure packages never import it (``tests/test_import_contract.py``).
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from belep.crypto import DEFAULT_SUITE, PrivateKey, get_suite
from belep.errors import KeyFileError

__all__ = ["generate_private_key", "read_private_key", "write_private_key"]


def generate_private_key(suite: str = DEFAULT_SUITE) -> PrivateKey:
    """A fresh key pair from the operating system's CSPRNG."""
    return PrivateKey(suite, secrets.token_bytes(get_suite(suite).seed_size))


def write_private_key(path: Path, key: PrivateKey, passphrase: bytes | None = None) -> None:
    """Write ``key`` to a new file at ``path`` with mode 0600, durably.

    Refuses to overwrite an existing file. The file is created with 0600 from
    the start (no window where it is world-readable), fsynced, and its
    directory fsynced.
    """
    pem = get_suite(key.suite).secret_to_pem(key.secret, passphrase)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise KeyFileError("refusing to overwrite an existing key file", where=str(path)) from None
    try:
        os.fchmod(fd, 0o600)  # umask cannot widen it, but make the mode explicit
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_private_key(
    path: Path, passphrase: bytes | None = None, suite: str = DEFAULT_SUITE
) -> PrivateKey:
    """Read a key file written by :func:`write_private_key`.

    Raises :class:`KeyFileError` if the file is readable or writable by group
    or others, is not a key of ``suite``, or the passphrase is wrong.
    """
    try:
        info = path.stat()
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise KeyFileError(
                "key file permissions are too open",
                expected="0600",
                found=oct(mode),
                where=str(path),
            )
        pem = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file: {exc.strerror}", where=str(path)) from exc
    return PrivateKey(suite, get_suite(suite).secret_from_pem(pem, passphrase))
