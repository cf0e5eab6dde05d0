"""Where a domain's ledger lives on disk.

A *domain directory* holds ``genesis.json`` (the domain's genesis, see
:mod:`belep.ledger.genesis`) and ``chain.sqlite3`` (its block store, see
:mod:`belep.ledger.store`, with SQLite's ``-wal``/``-shm`` companions). A
node's data directory holds one domain directory per domain it replicates,
under ``domains/<domain id>/``; a domain directory may also be used on its
own (a copy handed to an auditor).

Invariant: a directory is a domain directory if and only if it contains
``genesis.json``.

This module only looks at paths; it opens no file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from belep.errors import NotFound

GENESIS_FILE = "genesis.json"
CHAIN_DB = "chain.sqlite3"
DOMAINS_DIR = "domains"


@dataclass(frozen=True, slots=True)
class DomainDir:
    """The files of one domain's ledger."""

    root: Path

    @property
    def genesis_path(self) -> Path:
        return self.root / GENESIS_FILE

    @property
    def chain_path(self) -> Path:
        return self.root / CHAIN_DB


def node_domain_dir(data_dir: Path, domain: str) -> DomainDir:
    """The directory of ``domain`` inside a node's data directory."""
    return DomainDir(data_dir / DOMAINS_DIR / domain)


def find_domain_dirs(data_dir: Path, domain: str | None = None) -> list[DomainDir]:
    """Domain directories under ``data_dir``: itself, or each ``domains/<id>/``.

    With ``domain`` given, only ``domains/<domain>/`` of a node's data
    directory (a stand-alone domain directory is returned as is: its genesis
    names its domain). Raises :class:`NotFound` when there is none.
    """
    if (data_dir / GENESIS_FILE).is_file():
        return [DomainDir(data_dir)]
    base = data_dir / DOMAINS_DIR
    found: list[DomainDir] = []
    if base.is_dir():
        found = [DomainDir(p) for p in sorted(base.iterdir()) if (p / GENESIS_FILE).is_file()]
    if domain is not None:
        found = [d for d in found if d.root.name == domain]
    if not found:
        what = f"domain {domain!r}" if domain else "any domain"
        raise NotFound(f"{GENESIS_FILE} of {what} under {data_dir}")
    return found
