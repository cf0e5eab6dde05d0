"""The network demo (``belep demo``, ``make demo``): the three-level network, live.

Owns :func:`run_network_demo`: generate the demo topology, start every node
as its own process, register the paper's table-1 dispatch records (signed
envelopes) in the two station domains (routed by the task number modulo the
number of stations, as the paper does) plus one evidence file attached by
CID, and show — checking each, so the exit status means something — that

* every record is committed and readable on every node that holds its
  domain (the station's validators and the district's standbys);
* the evidence file is pinned on every holder of its domain;
* the stations' tips are anchored in the district chain, and the district's
  in the city chain;
* every chain on every node verifies (hash links, Merkle roots, certificates).

Then it keeps the network running until Ctrl-C (or ``--duration``).

I/O: processes, HTTP, read-only opens of the nodes' chain files.
"""

from __future__ import annotations

import hashlib
import signal
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from belep.app.anchors import anchors_in
from belep.crypto import PrivateKey
from belep.errors import NetworkError
from belep.ledger.datadir import node_domain_dir
from belep.ledger.envelope import sign_envelope
from belep.ledger.genesis import read_genesis
from belep.ledger.store import BlockStore
from belep.node.chaincheck import verify_domain_chain
from belep.node.launcher import LocalNetwork
from belep.node.presets import load_topology
from belep.node.provision import provision

__all__ = ["TABLE_1", "run_network_demo"]

#: The paper's table 1 (reference data): task number, vehicle plate, body-camera id, officer, location.
TABLE_1 = (
    ("20210310001", "云A****1", "1", "王明", "云南省昆明市呈贡区"),
    ("20210310002", "云A****2", "2", "李江", "云南省昆明市西山区"),
    ("20210310003", "云A****3", "3", "赵雷", "云南省昆明市呈贡区"),
    ("20210310004", "云A****4", "4", "王一泽", "云南省昆明市五华区"),
    ("20210310005", "云A****5", "5", "张浩", "云南省昆明市西山区"),
)
STATIONS = ("wujiaying", "longcheng")
WAIT_MS = 15_000


class _Stop(Exception):
    pass


def _raise_stop(_signum: int, _frame: object) -> None:
    raise _Stop


def _holders(network: LocalNetwork, domain: str) -> list[str]:
    return [n for n, p in network.nodes.items() if domain in p.config.domains]


def _voter(network: LocalNetwork, domain: str) -> str:
    return f"{domain}-1" if f"{domain}-1" in network.nodes else _holders(network, domain)[0]


def _get(http: httpx.Client, network: LocalNetwork, node: str, path: str) -> httpx.Response:
    entry = network.nodes[node]
    return http.get(
        f"{entry.config.http_url}{path}",
        headers={"Authorization": f"Bearer {entry.token}"},
        timeout=WAIT_MS / 1000 + 5,
    )


def _submit_records(
    out: Console, http: httpx.Client, network: LocalNetwork, officer: PrivateKey, evidence_cid: str
) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    now = int(time.time() * 1000)
    for index, (task, plate, camera, name, location) in enumerate(TABLE_1):
        station = STATIONS[int(task) % len(STATIONS)]
        body = {
            "task": task,
            "plate": plate,
            "camera": camera,
            "officer": name,
            "location": location,
        }
        envelope = sign_envelope(officer, "register-dispatch", body, timestamp_ms=now, nonce=index)
        records.append({"what": f"dispatch {task} ({name})", "station": station, "env": envelope})
    attach = sign_envelope(
        officer,
        "attach-evidence",
        {"task": TABLE_1[0][0], "media_type": "application/octet-stream", "device": "bodycam-1"},
        cids=(evidence_cid,),
        timestamp_ms=now,
        nonce=99,
    )
    records.append(
        {
            "what": f"evidence of {TABLE_1[0][0]}",
            "station": STATIONS[int(TABLE_1[0][0]) % 2],
            "env": attach,
        }
    )
    table = Table(title="records committed (the paper's table 1)")
    for column in ("record", "station", "height", "tx hash"):
        table.add_column(column)
    for record in records:
        node = network.nodes[_voter(network, record["station"])]
        response = http.post(
            f"{node.config.http_url}/v1/domains/{record['station']}/transactions?wait={WAIT_MS}",
            content=record["env"].encode(),
            timeout=WAIT_MS / 1000 + 5,
        )
        body = response.json()
        if response.status_code != 200:
            raise NetworkError(f"{record['what']} not committed: {body}")
        record["tx_hash"] = body["tx_hash"]
        record["height"] = body["height"]
        table.add_row(
            record["what"], record["station"], str(body["height"]), body["tx_hash"][:16] + "…"
        )
    out.print(table)
    return records


def _check_everywhere(
    out: Console, http: httpx.Client, network: LocalNetwork, records: list[dict[str, Any]], cid: str
) -> bool:
    ok = True
    table = Table(title="each record on every node holding its domain")
    table.add_column("record")
    table.add_column("nodes (✓ = committed there, same block)")
    for record in records:
        marks = []
        hashes = set()
        for node in _holders(network, record["station"]):
            response = _get(
                http,
                network,
                node,
                f"/v1/domains/{record['station']}/transactions/{record['tx_hash']}?wait={WAIT_MS}",
            )
            good = response.status_code == 200
            if good:
                hashes.add(response.json()["block_hash"])
            ok &= good
            marks.append(f"{node} {'✓' if good else '✗'}")
        ok &= len(hashes) == 1
        table.add_row(record["what"], "  ".join(marks))
    out.print(table)
    station = STATIONS[int(TABLE_1[0][0]) % 2]
    pinned = []
    deadline = time.monotonic() + WAIT_MS / 1000
    for node in _holders(network, station):
        while True:
            status = _get(http, network, node, f"/ipfs/{cid}?format=raw").status_code
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        ok &= status == 200
        pinned.append(f"{node} {'✓' if status == 200 else '✗'}")
    out.print(f"evidence file {cid} pinned on: " + "  ".join(pinned))
    return ok


def _anchors(out: Console, network: LocalNetwork, records: list[dict[str, Any]]) -> bool:
    """Wait until each station's record heights are anchored in the district, and the district in the city."""
    needed = {s: max(r["height"] for r in records if r["station"] == s) for s in STATIONS}
    district, city = "chenggong", "kunming"
    deadline = time.monotonic() + 30
    found: dict[str, tuple[int, int]] = {}
    while time.monotonic() < deadline:
        found = {}
        for parent, children in ((district, STATIONS), (city, (district,))):
            node = network.nodes[_voter(network, parent)]
            directory = node_domain_dir(node.config.data_dir, parent)
            genesis = read_genesis(directory.genesis_path)
            with BlockStore.open(directory.chain_path, genesis, readonly=True) as store:
                for block, _ in store.iter_committed(1, None):
                    for anchor in anchors_in(block):
                        if (
                            anchor.domain in children
                            and anchor.height > found.get(anchor.domain, (0, 0))[0]
                        ):
                            found[anchor.domain] = (anchor.height, block.height)
        if all(found.get(s, (0, 0))[0] >= h for s, h in needed.items()) and district in found:
            for child, (height, at) in sorted(found.items()):
                parent = city if child == district else district
                out.print(f"anchor: {child} height {height} is committed in {parent} block {at}")
            return True
        time.sleep(0.5)
    out.print(f"[red]anchors missing[/red]: needed {needed}, found {found}")
    return False


def _verify_all(out: Console, network: LocalNetwork) -> bool:
    ok = True
    lines = []
    for node_id, node in network.nodes.items():
        for domain in node.config.domains:
            directory = node_domain_dir(node.config.data_dir, domain)
            genesis = read_genesis(directory.genesis_path)
            with BlockStore.open(directory.chain_path, genesis, readonly=True) as store:
                check = verify_domain_chain(store, genesis)
            ok &= check.ok
            lines.append(
                f"{node_id}/{domain}:{check.blocks}{'' if check.ok else f' FAILED {check.problem}'}"
            )
    out.print(
        ("[green]every chain verifies[/green]: " if ok else "[red]verification failed[/red]: ")
        + ", ".join(lines),
        soft_wrap=True,
    )
    return ok


def run_network_demo(
    out: Console, directory: Path, duration: float | None, base_port: int | None
) -> bool:
    """The whole demo; True if every check passed."""
    topology, text, note = load_topology(None, "demo", base_port)
    if note:
        out.print(f"[yellow]note:[/yellow] {note}")
    provision(topology, directory, topology_text=text)
    network = LocalNetwork.open(directory)
    previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    ok = False
    try:
        out.print(
            f"starting {len(network.nodes)} nodes (city 3, district 3, two stations × 4) in {directory} …"
        )
        network.start()
        network.wait_ready(120)
        network.write_network_file()
        for node in network.nodes.values():
            out.print(
                f"  {node.node_id:<14} {node.config.http_url}  domains {', '.join(node.config.domains)}",
                soft_wrap=True,
            )
        with httpx.Client() as http:
            evidence = (
                hashlib.sha256(b"belep-demo-evidence").digest() * 8192
            )  # 256 KiB sample "video"
            uploader = network.nodes[_voter(network, STATIONS[1])]
            response = http.post(
                f"{uploader.config.http_url}/v1/content",
                content=evidence,
                headers={"Authorization": f"Bearer {uploader.token}"},
            )
            cid = response.json()["cid"]
            out.print(f"uploaded a sample evidence file: {cid} ({len(evidence)} bytes)")
            officer = PrivateKey.generate()
            records = _submit_records(out, http, network, officer, cid)
            ok = _check_everywhere(out, http, network, records, cid)
        ok = _anchors(out, network, records) and ok
        ok = _verify_all(out, network) and ok
        out.print(
            f"network running: [bold]belep status --dir {directory}[/bold] shows it;"
            + (f" stopping in {duration:.0f} s." if duration else " Ctrl-C stops it.")
        )
        deadline = None if duration is None else time.monotonic() + duration
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.5)
    except _Stop:
        out.print("stopping …")
    finally:
        for s in previous:
            signal.signal(s, signal.SIG_IGN)
        network.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
    out.print("[green]demo checks passed[/green]" if ok else "[red]demo checks failed[/red]")
    return ok
