"""Choosing a topology: a TOML file or a named preset.

Owns :func:`load_topology`, shared by ``belep init`` and ``belep up``. The
``demo`` preset runs its station domains on HPBFT when the consensus
registry provides it, and on PBFT otherwise (the returned note says so).

Reads the topology file if one is given; nothing else.
"""

from __future__ import annotations

from pathlib import Path

from belep.deploy.topology import DEFAULT_BASE_PORT, Topology, demo_topology_text, parse_topology
from belep.errors import ConfigError, StorageError
from belep.node.protocols import registered_protocols

__all__ = ["PRESETS", "demo_station_protocol", "load_topology"]

PRESETS = ("demo",)


def demo_station_protocol() -> tuple[str, str]:
    """The station protocol of the demo preset, and a note when it is a fallback."""
    if "hpbft" in registered_protocols():
        return "hpbft", ""
    return "pbft", "HPBFT is not registered in this build: the demo's station domains run PBFT"


def load_topology(
    path: Path | None, preset: str | None, base_port: int | None = None
) -> tuple[Topology, str, str]:
    """The topology, its TOML text, and a note for the operator (may be empty)."""
    if (path is None) == (preset is None):
        raise ConfigError("give exactly one of --topology FILE and --preset NAME")
    if path is not None:
        if base_port is not None:
            raise ConfigError("--base-port applies to presets only; set base_port in the file")
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise StorageError(f"cannot read topology file {path}: {exc.strerror}") from exc
        return parse_topology(text), text, ""
    if preset not in PRESETS:
        raise ConfigError("unknown preset", expected=list(PRESETS), found=preset)
    protocol, note = demo_station_protocol()
    text = demo_topology_text(protocol, DEFAULT_BASE_PORT if base_port is None else base_port)
    return parse_topology(text), text, note
