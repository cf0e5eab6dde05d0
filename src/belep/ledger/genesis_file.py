"""The genesis file of a domain directory: ``genesis.json``, read and written.

Owns :func:`read_genesis` (strict parse, :meth:`Genesis.from_json`) and
:func:`write_genesis` (atomic, durable, never overwriting). The genesis itself
and its canonical hash are :mod:`belep.ledger.genesis` (pure).

An I/O edge of the ledger, like :mod:`belep.ledger.store`.
"""

from __future__ import annotations

import os
from pathlib import Path

from belep.errors import ConfigError, StorageError
from belep.ledger.genesis import Genesis

__all__ = ["read_genesis", "write_genesis"]


def read_genesis(path: Path) -> Genesis:
    """Read and validate a genesis file; :class:`ConfigError` or :class:`StorageError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise StorageError(f"cannot read genesis file: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError("genesis file is not UTF-8", where=str(path)) from exc
    return Genesis.from_json(text)


def write_genesis(path: Path, genesis: Genesis) -> None:
    """Write ``genesis`` to ``path`` atomically and durably; refuses to overwrite."""
    if path.exists():
        raise ConfigError("refusing to overwrite an existing genesis file", where=str(path))
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as out:
            out.write(genesis.to_json().encode("utf-8"))
            out.flush()
            os.fsync(out.fileno())
        os.link(tmp, path)  # fails if path appeared meanwhile: never overwrites
        os.unlink(tmp)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except FileExistsError as exc:
        raise ConfigError(
            "refusing to overwrite an existing genesis file", where=str(path)
        ) from exc
    except OSError as exc:
        raise StorageError(f"cannot write genesis file: {exc.strerror}") from exc
    finally:
        if tmp.exists():
            tmp.unlink()
