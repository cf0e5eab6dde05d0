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

Then it keeps the network running until Ctrl-C (or ``--duration``). What it
finds goes to a :class:`DemoReporter` as records (``belep demo`` prints
them).

I/O: processes, HTTP, read-only opens of the nodes' chain files; no console.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx

from belep.app.anchors import anchors_in
from belep.crypto import PrivateKey
from belep.deploy.launcher import LocalNetwork, NodeProcess, run_until_signal
from belep.deploy.presets import load_topology
from belep.deploy.provision import provision
from belep.errors import NetworkError
from belep.keys import generate_private_key
from belep.ledger.datadir import node_domain_dir
from belep.ledger.envelope import Envelope, sign_envelope
from belep.ledger.genesis_file import read_genesis
from belep.ledger.store import BlockStore
from belep.node.chaincheck import verify_domain_chain

__all__ = [
    "TABLE_1",
    "Anchor",
    "AnchorCheck",
    "ChainCheck",
    "CommittedRecord",
    "DemoRecord",
    "DemoReporter",
    "Presence",
    "demo_records",
    "run_network_demo",
]

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
DISTRICT, CITY = "chenggong", "kunming"


@dataclass(frozen=True, slots=True)
class DemoRecord:
    """A signed record the demo registers in a station's domain."""

    what: str
    station: str
    envelope: Envelope


@dataclass(frozen=True, slots=True)
class CommittedRecord:
    record: DemoRecord
    tx_hash: str
    height: int


@dataclass(frozen=True, slots=True)
class Presence:
    """A record on every node holding its domain: each node and whether it has the record
    committed, and whether all of them have it in the same block."""

    what: str
    holders: tuple[tuple[str, bool], ...]
    same_block: bool

    @property
    def ok(self) -> bool:
        return self.same_block and all(good for _, good in self.holders)


@dataclass(frozen=True, slots=True)
class Anchor:
    """``child``'s chain up to ``height`` is anchored in ``parent``'s block ``at``."""

    child: str
    height: int
    parent: str
    at: int


@dataclass(frozen=True, slots=True)
class AnchorCheck:
    ok: bool
    needed: Mapping[str, int]
    """The height each station's records reached (what its anchor must cover)."""
    found: tuple[Anchor, ...]


@dataclass(frozen=True, slots=True)
class ChainCheck:
    node: str
    domain: str
    blocks: int
    problem: str | None
    """``None`` if the chain verifies."""


class DemoReporter(Protocol):
    """What the demo tells its audience, as it happens (``belep demo`` prints it)."""

    def note(self, text: str) -> None: ...

    def starting(self, count: int, directory: Path) -> None: ...

    def started(self, nodes: Sequence[NodeProcess]) -> None: ...

    def uploaded(self, cid: str, size: int) -> None: ...

    def committed(self, records: Sequence[CommittedRecord]) -> None: ...

    def everywhere(self, presence: Sequence[Presence]) -> None: ...

    def pinned(self, cid: str, holders: Sequence[tuple[str, bool]]) -> None: ...

    def anchors(self, check: AnchorCheck) -> None: ...

    def verified(self, checks: Sequence[ChainCheck]) -> None: ...

    def running(self, directory: Path, duration: float | None) -> None: ...

    def stopping(self) -> None: ...

    def finished(self, ok: bool) -> None: ...


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


def demo_records(officer: PrivateKey, evidence_cid: str, now_ms: int) -> list[DemoRecord]:
    """Table 1's dispatches (each in the station of its task number), then the evidence
    file attached to the first."""
    records: list[DemoRecord] = []
    for index, (task, plate, camera, name, location) in enumerate(TABLE_1):
        body = {
            "task": task,
            "plate": plate,
            "camera": camera,
            "officer": name,
            "location": location,
        }
        envelope = sign_envelope(
            officer, "register-dispatch", body, timestamp_ms=now_ms, nonce=index
        )
        station = STATIONS[int(task) % len(STATIONS)]
        records.append(DemoRecord(f"dispatch {task} ({name})", station, envelope))
    first = TABLE_1[0][0]
    attach = sign_envelope(
        officer,
        "attach-evidence",
        {"task": first, "media_type": "application/octet-stream", "device": "bodycam-1"},
        cids=(evidence_cid,),
        timestamp_ms=now_ms,
        nonce=99,
    )
    records.append(DemoRecord(f"evidence of {first}", STATIONS[int(first) % 2], attach))
    return records


def _submit(
    http: httpx.Client, network: LocalNetwork, records: Sequence[DemoRecord]
) -> list[CommittedRecord]:
    committed: list[CommittedRecord] = []
    for record in records:
        node = network.nodes[_voter(network, record.station)]
        response = http.post(
            f"{node.config.http_url}/v1/domains/{record.station}/transactions?wait={WAIT_MS}",
            content=record.envelope.encode(),
            timeout=WAIT_MS / 1000 + 5,
        )
        body = response.json()
        if response.status_code != 200:
            raise NetworkError(f"{record.what} not committed: {body}")
        committed.append(CommittedRecord(record, body["tx_hash"], body["height"]))
    return committed


def _presence(
    http: httpx.Client, network: LocalNetwork, records: Sequence[CommittedRecord]
) -> list[Presence]:
    found: list[Presence] = []
    for done in records:
        station = done.record.station
        marks: list[tuple[str, bool]] = []
        hashes = set()
        for node in _holders(network, station):
            response = _get(
                http,
                network,
                node,
                f"/v1/domains/{station}/transactions/{done.tx_hash}?wait={WAIT_MS}",
            )
            good = response.status_code == 200
            if good:
                hashes.add(response.json()["block_hash"])
            marks.append((node, good))
        found.append(Presence(done.record.what, tuple(marks), len(hashes) == 1))
    return found


def _pinned(http: httpx.Client, network: LocalNetwork, cid: str) -> list[tuple[str, bool]]:
    station = STATIONS[int(TABLE_1[0][0]) % 2]
    pinned: list[tuple[str, bool]] = []
    deadline = time.monotonic() + WAIT_MS / 1000
    for node in _holders(network, station):
        while True:
            status = _get(http, network, node, f"/ipfs/{cid}?format=raw").status_code
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        pinned.append((node, status == 200))
    return pinned


def _anchors_now(network: LocalNetwork) -> dict[str, tuple[int, int]]:
    """The highest anchored height of each child, and the parent block holding it."""
    found: dict[str, tuple[int, int]] = {}
    for parent, children in ((DISTRICT, STATIONS), (CITY, (DISTRICT,))):
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
    return found


def _anchors(network: LocalNetwork, records: Sequence[CommittedRecord]) -> AnchorCheck:
    """Wait until each station's record heights are anchored in the district, and the
    district in the city."""
    needed = {s: max(r.height for r in records if r.record.station == s) for s in STATIONS}
    deadline = time.monotonic() + 30
    found: dict[str, tuple[int, int]] = {}
    ok = False
    while time.monotonic() < deadline:
        found = _anchors_now(network)
        ok = all(found.get(s, (0, 0))[0] >= h for s, h in needed.items()) and DISTRICT in found
        if ok:
            break
        time.sleep(0.5)
    anchors = tuple(
        Anchor(child, height, CITY if child == DISTRICT else DISTRICT, at)
        for child, (height, at) in sorted(found.items())
    )
    return AnchorCheck(ok, needed, anchors)


def _verify_all(network: LocalNetwork) -> list[ChainCheck]:
    checks: list[ChainCheck] = []
    for node_id, node in network.nodes.items():
        for domain in node.config.domains:
            directory = node_domain_dir(node.config.data_dir, domain)
            genesis = read_genesis(directory.genesis_path)
            with BlockStore.open(directory.chain_path, genesis, readonly=True) as store:
                check = verify_domain_chain(store, genesis)
            checks.append(
                ChainCheck(node_id, domain, check.blocks, None if check.ok else str(check.problem))
            )
    return checks


def _checks(report: DemoReporter, network: LocalNetwork) -> bool:
    """Upload, register, look everywhere, wait for anchors, verify; True if all passed."""
    with httpx.Client() as http:
        evidence = hashlib.sha256(b"belep-demo-evidence").digest() * 8192  # 256 KiB "video"
        uploader = network.nodes[_voter(network, STATIONS[1])]
        response = http.post(
            f"{uploader.config.http_url}/v1/content",
            content=evidence,
            headers={"Authorization": f"Bearer {uploader.token}"},
        )
        cid = response.json()["cid"]
        report.uploaded(cid, len(evidence))
        records = demo_records(generate_private_key(), cid, int(time.time() * 1000))
        committed = _submit(http, network, records)
        report.committed(committed)
        presence = _presence(http, network, committed)
        report.everywhere(presence)
        pinned = _pinned(http, network, cid)
        report.pinned(cid, pinned)
    anchors = _anchors(network, committed)
    report.anchors(anchors)
    checks = _verify_all(network)
    report.verified(checks)
    return (
        all(p.ok for p in presence)
        and all(good for _, good in pinned)
        and anchors.ok
        and all(c.problem is None for c in checks)
    )


def run_network_demo(
    report: DemoReporter, directory: Path, duration: float | None, base_port: int | None
) -> bool:
    """The whole demo; True if every check passed."""
    topology, text, note = load_topology(None, "demo", base_port)
    if note:
        report.note(note)
    provision(topology, directory, topology_text=text)
    network = LocalNetwork.open(directory)
    ok = False
    with run_until_signal(network, report.stopping):
        report.starting(len(network.nodes), directory)
        network.start()
        network.wait_ready(120)
        network.write_network_file()
        report.started(list(network.nodes.values()))
        ok = _checks(report, network)
        report.running(directory, duration)
        deadline = None if duration is None else time.monotonic() + duration
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.5)
    report.finished(ok)
    return ok
