"""`belep demo ledger`: a short, self-checking walkthrough of the ledger (`belep demo` runs the network).

Until the node exists, the demo shows the ledger's promise end to end: four
validators with fresh keys, a genesis, a chain of certified blocks carrying
the dispatch records of the paper's table 1 (with evidence attachments and
witness votes), a full verification, an inclusion proof for one record, then
an insider's one-byte edit made directly in the SQLite file — and
verification naming the block and the reason.

The transaction payloads are the demo's own (canonical CBOR maps with a
``type`` field); the evidence application defines the real ones. A smarter
insider then also rewrites the stored transaction hash, and verification
catches the Merkle root. The exit status is 0 only if the intact chain
verifies **and** both edits are detected at the right height.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from belep.app.machine import BelepApplication
from belep.crypto import sha256
from belep.encoding import Value, decode, encode
from belep.keys import generate_private_key, write_private_key
from belep.ledger.block import NodeId
from belep.ledger.builder import ChainBuilder, make_genesis
from belep.ledger.datadir import DomainDir
from belep.ledger.genesis_file import read_genesis, write_genesis
from belep.ledger.merkle import hash_leaf
from belep.ledger.store import BlockStore
from belep.ledger.verify import VerifyReport, verify_chain

#: The paper's table 1 (reference data, not real people): task number, vehicle plate,
#: body-camera id, officer, location.
TABLE_1 = (
    ("20210310001", "云A****1", "1", "王明", "云南省昆明市呈贡区"),
    ("20210310002", "云A****2", "2", "李江", "云南省昆明市西山区"),
    ("20210310003", "云A****3", "3", "赵雷", "云南省昆明市呈贡区"),
    ("20210310004", "云A****4", "4", "王一泽", "云南省昆明市五华区"),
    ("20210310005", "云A****5", "5", "张浩", "云南省昆明市西山区"),
)
DOMAIN = "kunming-chenggong-station"
VALIDATORS = ("chenggong-1", "chenggong-2", "chenggong-3", "chenggong-4")
TAMPERED_TASK = "20210310003"


def sample_transactions(blocks: int, start_ms: int) -> list[list[bytes]]:
    """Evidence-like payloads for ``blocks`` blocks.

    The first five blocks register the table-1 dispatches, each with the body
    camera's capture declaration and two witness votes; later blocks attach
    the evidence files and log custody events.
    """
    per_block: list[list[bytes]] = []
    for b in range(blocks):
        task, plate, camera, officer, location = TABLE_1[b % len(TABLE_1)]
        at = start_ms + b * 60_000
        clip = sha256(f"body-cam {camera} clip {task}".encode())
        txs: list[dict[str, Value]]
        if b < len(TABLE_1):
            dispatch: dict[str, Value] = {
                "type": "RegisterDispatch",
                "task": task,
                "plate": plate,
                "camera": camera,
                "officer": officer,
                "location": location,
                "time_ms": at,
            }
            capture: dict[str, Value] = {
                "type": "DeclareCapture",
                "device": f"camera-{camera}",
                "sha256": clip,
                "captured_ms": at + 30_000,
            }
            txs = [dispatch, capture]
            txs += [
                {"type": "WitnessVote", "task": task, "witness": f"witness-{w}", "approve": True}
                for w in (1, 2)
            ]
        else:
            attach: dict[str, Value] = {
                "type": "AttachEvidence",
                "task": task,
                "sha256": clip,
                "size": 48_000_000 + b * 1_000,
                "media": "video/mp4",
                "device": f"camera-{camera}",
            }
            custody: dict[str, Value] = {
                "type": "CustodyEvent",
                "task": task,
                "action": ("view", "download", "share-with-prosecutor")[b % 3],
                "by": f"custodian-{b % 2 + 1}",
                "time_ms": at,
            }
            txs = [attach, custody]
        per_block.append([encode(tx) for tx in txs])
    return per_block


def _tamper_plate(chain_path: Path) -> tuple[int, int]:
    """Edit one byte of the stored dispatch of TAMPERED_TASK behind the system's back."""
    conn = sqlite3.connect(chain_path)
    try:
        for height, idx, payload in conn.execute("SELECT height, idx, payload FROM txs"):
            record = decode(payload)
            if isinstance(record, dict) and record.get("task") == TAMPERED_TASK and record.get("type") == "RegisterDispatch":  # fmt: skip
                at = payload.index("云A****3".encode()) + len("云A****".encode())
                forged = payload[:at] + b"8" + payload[at + 1 :]  # plate ...3 -> ...8
                conn.execute(
                    "UPDATE txs SET payload = ? WHERE height = ? AND idx = ?",
                    (forged, height, idx),
                )
                conn.commit()
                return int(height), int(idx)
    finally:
        conn.close()
    raise RuntimeError("the dispatch to tamper with was not found")


def _fix_stored_hash(chain_path: Path, height: int, index: int) -> None:
    """The smarter insider: also recompute the stored hash of the edited transaction."""
    conn = sqlite3.connect(chain_path)
    try:
        (payload,) = conn.execute(
            "SELECT payload FROM txs WHERE height = ? AND idx = ?", (height, index)
        ).fetchone()
        conn.execute(
            "UPDATE txs SET tx_hash = ? WHERE height = ? AND idx = ?",
            (sha256(payload), height, index),
        )
        conn.commit()
    finally:
        conn.close()


def run_demo(directory: Path, blocks: int, out: Console) -> bool:
    """Run the walkthrough in ``directory``; True if everything behaved as promised."""
    domain_dir = DomainDir(directory / "domains" / DOMAIN)
    domain_dir.root.mkdir(parents=True)
    keys_dir = directory / "keys"
    keys_dir.mkdir()
    started = time.perf_counter()

    out.rule("[bold]1. Four validators and a genesis")
    keys = {NodeId(name): generate_private_key() for name in VALIDATORS}
    for name, key in keys.items():
        write_private_key(keys_dir / f"{name}.pem", key)
    genesis = make_genesis(DOMAIN, keys, protocol="pbft", created_ms=int(time.time() * 1000))
    write_genesis(domain_dir.genesis_path, genesis)
    out.print(f"domain [bold]{DOMAIN}[/], PBFT, quorum {genesis.quorum} of {len(keys)}")
    for member in genesis.voters:
        out.print(f"  {member.node_id:<12} {member.key.fingerprint()}  (key file 0600)")
    out.print(f"genesis hash [cyan]{genesis.genesis_hash.hex()}[/]")

    out.rule(f"[bold]2. {blocks} certified blocks of table-1 dispatches and evidence")
    builder = ChainBuilder(genesis, keys, application=BelepApplication())
    start_ms = genesis.created_ms
    with BlockStore.open(domain_dir.chain_path, genesis) as store:
        for i, payloads in enumerate(sample_transactions(blocks, start_ms)):
            block, qc = builder.next_block(payloads, timestamp_ms=start_ms + i * 60_000)
            store.append(block, qc, committee=genesis.committee())
        table = Table("task", "plate", "officer", "location", "height", title="dispatches on chain")
        dispatch_hashes: dict[str, bytes] = {}
        for block, _qc in store.iter_committed(1):
            for tx in block.transactions:
                record = decode(tx.payload)
                if isinstance(record, dict) and record.get("type") == "RegisterDispatch":
                    task = str(record["task"])
                    dispatch_hashes[task] = tx.tx_hash
                    table.add_row(task, str(record["plate"]), str(record["officer"]), str(record["location"]), str(block.height))  # fmt: skip
        out.print(table)
        tip = store.tip()
        out.print(f"tip: height {tip.height}, hash {tip.block_hash.hex()[:32]}…")

        out.rule("[bold]3. Verify the whole chain")
        report = _verify(domain_dir, out)
        if not report.ok:
            out.print("[red]the intact chain did not verify: demo FAILED[/]")
            return False

        out.rule("[bold]4. An inclusion proof anyone can check offline")
        inclusion = store.get_inclusion_proof(dispatch_hashes[TAMPERED_TASK])
    inclusion.proof.verify(hash_leaf(inclusion.record.tx.payload), inclusion.header.tx_root)
    out.print(
        f"dispatch {TAMPERED_TASK}: leaf {inclusion.proof.leaf_index} of "
        f"{inclusion.proof.tree_size} in block {inclusion.record.height}, "
        f"{len(inclusion.proof.path)} proof hashes -> root {inclusion.header.tx_root.hex()[:16]}… [green]valid[/]"
    )

    out.rule("[bold]5. An insider edits one byte in the SQLite file")
    height, index = _tamper_plate(domain_dir.chain_path)
    out.print(
        f"plate of dispatch {TAMPERED_TASK} changed from 云A****3 to 云A****8 "
        f"(block {height}, transaction {index}), directly with sqlite3"
    )

    out.rule("[bold]6. Verify again")
    first = _verify(domain_dir, out).finding
    out.rule("[bold]7. A smarter insider also rewrites the stored transaction hash")
    _fix_stored_hash(domain_dir.chain_path, height, index)
    second = _verify(domain_dir, out).finding
    detected = [f for f in (first, second) if f is not None and f.height == height]
    elapsed = time.perf_counter() - started
    if len(detected) == 2:
        out.print(
            f"[green bold]both edits detected[/] at height {height} "
            f"({detected[0].check}, then {detected[1].check}): the chain's hashes, Merkle roots "
            f"and quorum signatures leave no byte to change unnoticed — demo OK in {elapsed:.1f} s"
        )
        return True
    out.print("[red bold]tampering NOT detected: demo FAILED[/]")
    return False


def _verify(domain_dir: DomainDir, out: Console) -> VerifyReport:
    genesis = read_genesis(domain_dir.genesis_path)
    with BlockStore.open(domain_dir.chain_path, genesis, readonly=True) as store:
        report = verify_chain(store, genesis)
    if report.ok:
        out.print(
            f"[green]OK[/]: {report.blocks} blocks, {report.transactions} transactions, "
            f"{report.signatures} signatures checked; hash links and Merkle roots intact"
        )
    elif report.finding is not None:
        f = report.finding
        out.print(f"[red]FAILED[/] at height {f.height}: {f.check}: {f.message}")
        if f.expected or f.found:
            out.print(f"  expected {f.expected}\n  found    {f.found}")
    return report


def register(app: typer.Typer) -> None:
    """Add ``belep demo`` (the live network) and ``belep demo ledger`` to the root application."""
    demo_app = typer.Typer(
        help="Demos: the live three-level network (default) and the offline ledger walkthrough.",
        no_args_is_help=False,
    )

    @demo_app.callback(invoke_without_command=True)
    def demo_network(
        ctx: typer.Context,
        directory: Annotated[
            Path | None,
            typer.Option(
                "--dir", help="Generate the network here and keep it (default: a temp dir)."
            ),
        ] = None,
        duration: Annotated[
            float | None,
            typer.Option(
                "--duration", help="Stop after this many seconds (default: run until Ctrl-C)."
            ),
        ] = None,
        base_port: Annotated[int | None, typer.Option("--base-port", help="First port.")] = None,
    ) -> None:
        """Start the demo network, commit the paper's table 1, show it everywhere, verify; run until Ctrl-C."""
        if ctx.invoked_subcommand is not None:
            return
        from belep.commands.network_demo import NetworkDemoConsole
        from belep.deploy.demo import run_network_demo
        from belep.errors import BelepError

        out = Console()
        keep = directory is not None
        work = directory if directory is not None else Path(tempfile.mkdtemp(prefix="belep-net-"))
        try:
            ok = run_network_demo(NetworkDemoConsole(out), work, duration, base_port)
        except BelepError as exc:
            out.print(f"[red]error:[/red] {exc}")
            ok = False
        finally:
            if keep:
                out.print(f"network kept in {work}; restart it with: belep up --dir {work}")
            else:
                _remove(out, work)
        raise typer.Exit(0 if ok else 1)

    @demo_app.command("ledger")
    def demo_ledger(
        directory: Annotated[
            Path | None,
            typer.Option("--dir", help="Work here and keep the files (default: a temp dir)."),
        ] = None,
        blocks: Annotated[int, typer.Option("--blocks", min=6, max=10_000)] = 20,
    ) -> None:
        """Ledger walkthrough: build, verify, tamper with one byte, detect it."""
        out = Console()
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            if any(directory.iterdir()):
                out.print(f"[red]{directory} is not empty[/]")
                raise typer.Exit(2)
            ok = run_demo(directory, blocks, out)
            out.print(f"files kept in {directory}; try: belep chain verify --data-dir {directory}")
        else:
            work = Path(tempfile.mkdtemp(prefix="belep-demo-"))
            try:
                ok = run_demo(work, blocks, out)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        raise typer.Exit(0 if ok else 1)

    app.add_typer(demo_app, name="demo")


def _remove(out: Console, work: Path) -> None:
    """Delete the temporary network, saying so: 14 nodes' stores are ~15,000 files, which a
    file system busy with recent deletions can take tens of seconds to remove."""
    started = time.monotonic()
    with out.status(f"removing the temporary network in {work} (keep it with --dir) …"):
        shutil.rmtree(work, ignore_errors=True)
    out.print(f"removed the temporary network in {time.monotonic() - started:.1f} s")
