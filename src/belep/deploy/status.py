"""Collecting the status of every node of a local network (``belep status``).

Owns :func:`collect_status`: for each node of a generated network, ask
``GET /v1/status`` with that node's operator token and flatten the answer
into one row per (node, domain). A node that does not answer gives one row
saying so. I/O: HTTP only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import httpx

from belep.deploy.launcher import LocalNetwork

__all__ = ["StatusRow", "collect_status"]


@dataclass(frozen=True, slots=True)
class StatusRow:
    node: str
    unit: str
    domain: str
    role: str
    protocol: str
    height: int | None
    view: int | None
    leader: str | None
    peers_connected: int | None
    peers: int | None
    lag: int | None
    tip_hash: str | None
    up: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def collect_status(network: LocalNetwork, timeout_s: float = 3.0) -> list[StatusRow]:
    rows: list[StatusRow] = []
    with httpx.Client(timeout=timeout_s) as client:
        for node_id, node in network.nodes.items():
            try:
                response = client.get(
                    f"{node.config.http_url}/v1/status",
                    headers={"Authorization": f"Bearer {node.token}"},
                )
                body = response.json() if response.status_code == 200 else None
            except (httpx.HTTPError, ValueError):
                body = None
            if body is None:
                rows.append(
                    StatusRow(
                        node_id,
                        node.config.unit,
                        "-",
                        "-",
                        "-",
                        None,
                        None,
                        None,
                        None,
                        None,
                        None,
                        None,
                        False,
                    )
                )
                continue
            for d in body["domains"]:
                rows.append(
                    StatusRow(
                        node=node_id,
                        unit=node.config.unit,
                        domain=d["domain"],
                        role=d["role"],
                        protocol=d["protocol"],
                        height=d["height"],
                        view=d["view"],
                        leader=d["leader"],
                        peers_connected=d["peers_connected"],
                        peers=d["peers"],
                        lag=d["lag"],
                        tip_hash=d["tip_hash"],
                        up=True,
                    )
                )
    return rows
