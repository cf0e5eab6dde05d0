"""`belep chain`: inspect and verify stored chains.

``--data-dir`` is either one domain directory (``genesis.json`` +
``chain.sqlite3``) or a node's data directory (``domains/<id>/``); see
:mod:`belep.ledger.datadir`. Every command opens stores read-only.

``belep chain verify`` exits 0 when every chain verifies, 1 when a check
fails (naming the first bad height and what is wrong), 2 when there is
nothing to verify or the input is unusable.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from belep.errors import BelepError, NotFound
from belep.ledger.datadir import DomainDir, find_domain_dirs
from belep.ledger.genesis import Genesis
from belep.ledger.genesis_file import read_genesis
from belep.ledger.store import BlockStore
from belep.ledger.verify import Finding, VerifyReport
from belep.node.chaincheck import verify_store

chain_app = typer.Typer(help="Inspect and verify stored chains.", no_args_is_help=True)

DataDir = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        help="A domain directory (genesis.json + chain.sqlite3) or a node data directory.",
        file_okay=False,
    ),
]
DomainOpt = Annotated[
    str | None, typer.Option("--domain", help="Only this domain of a node data directory.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]


def _domains(data_dir: Path, domain: str | None) -> list[DomainDir]:
    try:
        return find_domain_dirs(data_dir, domain)
    except NotFound as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


def _open(directory: DomainDir) -> tuple[Genesis, BlockStore]:
    genesis = read_genesis(directory.genesis_path)
    return genesis, BlockStore.open(directory.chain_path, genesis, readonly=True)


# --------------------------------------------------------------------------
# verify
# --------------------------------------------------------------------------


def _parse_checkpoint(text: str | None) -> tuple[int, bytes] | None:
    if text is None:
        return None
    height, sep, digest = text.partition(":")
    try:
        parsed = (int(height), bytes.fromhex(digest))
    except ValueError:
        parsed = (0, b"")
    if not sep or parsed[0] < 1 or len(parsed[1]) != 32:
        raise typer.BadParameter("expected HEIGHT:HEX-BLOCK-HASH", param_hint="--expect-block")
    return parsed


def _check_checkpoint(store: BlockStore, report: VerifyReport, checkpoint: tuple[int, bytes]) -> Finding | None:  # fmt: skip
    """After a successful verify: the chain holds the block named by an out-of-band checkpoint."""
    height, digest = checkpoint
    if report.tip_height < height:
        return Finding(
            height,
            "checkpoint",
            "the chain is shorter than a known checkpoint (truncated?)",
            f"a block at height {height}",
            f"tip at height {report.tip_height}",
        )
    stored = store.get_header(height).block_hash
    if stored != digest:
        return Finding(height, "checkpoint", "block differs from the known checkpoint", digest.hex(), stored.hex())  # fmt: skip
    return None


def _verify_one(
    directory: DomainDir,
    *,
    expect_genesis: str | None,
    checkpoint: tuple[int, bytes] | None,
    check_sigs: bool,
    execute: bool,
    sqlite_check: bool,
    progress: Progress | None,
) -> dict[str, Any]:
    """Verify one domain directory; the result is the JSON object reported for it."""
    result: dict[str, Any] = {"path": str(directory.root)}
    try:
        genesis = read_genesis(directory.genesis_path)
    except BelepError as exc:
        result.update(ok=False, finding=Finding(0, "genesis", str(exc)).to_json())
        return result
    result["domain"] = genesis.domain
    result["genesis_hash"] = genesis.genesis_hash.hex()
    if expect_genesis is not None and genesis.genesis_hash.hex() != expect_genesis.lower():
        finding = Finding(
            0,
            "genesis",
            "genesis.json is not the expected genesis",
            expect_genesis.lower(),
            genesis.genesis_hash.hex(),
        )
        result.update(ok=False, finding=finding.to_json())
        return result
    try:
        store = BlockStore.open(directory.chain_path, genesis, readonly=True)
    except BelepError as exc:
        result.update(ok=False, finding=Finding(0, "storage", str(exc)).to_json())
        return result
    with store:
        if sqlite_check:
            problems = store.integrity_check()
            if problems:
                finding = Finding(0, "sqlite-integrity", "; ".join(problems[:5]))
                result.update(ok=False, finding=finding.to_json())
                return result
        task = None
        if progress is not None:
            task = progress.add_task(genesis.domain, total=store.tip().height)

        def advance(_height: int) -> None:
            if progress is not None and task is not None:
                progress.advance(task)

        report: VerifyReport = verify_store(
            store, genesis, check_sigs=check_sigs, execute=execute, on_block=advance
        )
        if report.ok and checkpoint is not None:
            missed = _check_checkpoint(store, report, checkpoint)
            if missed is not None:
                report = replace(report, finding=missed)
    result.update(report.to_json())
    result["signatures_checked"] = check_sigs
    result["executed"] = execute
    return result


@chain_app.command("verify")
def verify_command(
    data_dir: DataDir,
    domain: DomainOpt = None,
    expect_genesis: Annotated[
        str | None,
        typer.Option(
            "--expect-genesis",
            help="Hex genesis hash obtained out of band; fail if genesis.json differs.",
        ),
    ] = None,
    expect_block: Annotated[
        str | None,
        typer.Option(
            "--expect-block",
            help="HEIGHT:HASH of a block known out of band (peers, a cosigned checkpoint); "
            "fail if the chain is shorter or differs there.",
        ),
    ] = None,
    no_signatures: Annotated[
        bool, typer.Option("--no-signatures", help="Skip certificate signature checks.")
    ] = False,
    no_execute: Annotated[
        bool,
        typer.Option(
            "--no-execute", help="Do not execute the blocks again (state roots unchecked)."
        ),
    ] = False,
    sqlite_check: Annotated[
        bool, typer.Option("--sqlite-check", help="Also run SQLite's PRAGMA integrity_check.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Walk whole chains: links, Merkle roots, certificates, configuration, state roots.

    Every block is executed again with the BELEP application (--no-execute skips it).
    """
    checkpoint = _parse_checkpoint(expect_block)
    directories = _domains(data_dir, domain)
    console = Console(stderr=True)
    show_progress = not as_json and console.is_terminal
    results: list[dict[str, Any]] = []
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not show_progress,
    )
    with progress:
        for directory in directories:
            results.append(
                _verify_one(
                    directory,
                    expect_genesis=expect_genesis,
                    checkpoint=checkpoint,
                    check_sigs=not no_signatures,
                    execute=not no_execute,
                    sqlite_check=sqlite_check,
                    progress=progress if show_progress else None,
                )
            )
    ok = all(r["ok"] for r in results)
    if as_json:
        typer.echo(json.dumps({"ok": ok, "chains": results}, indent=2))
    else:
        out = Console()
        for r in results:
            _print_verify(out, r)
    raise typer.Exit(0 if ok else 1)


def _print_verify(out: Console, r: dict[str, Any]) -> None:
    name = r.get("domain", r["path"])
    if r["ok"]:
        sigs = f", {r['signatures']} signatures" if r["signatures_checked"] else " (signatures NOT checked)"  # fmt: skip
        out.print(
            f"[green]OK[/] {name}: {r['blocks']} blocks, {r['transactions']} transactions{sigs}; "
            f"tip {r['tip_height']} {r['tip_hash'][:16]}…; genesis {r['genesis_hash'][:16]}…"
        )
        return
    f = r["finding"]
    out.print(f"[red bold]FAILED[/] {name}: height {f['height']}: {f['check']}: {f['message']}")
    if f.get("expected") is not None or f.get("found") is not None:
        out.print(f"  expected {f.get('expected')}\n  found    {f.get('found')}")
    if "blocks" in r:
        out.print(f"  blocks 1..{r['blocks']} verified before the failure")


# --------------------------------------------------------------------------
# info and show
# --------------------------------------------------------------------------


@chain_app.command("info")
def info_command(data_dir: DataDir, domain: DomainOpt = None, as_json: JsonOpt = False) -> None:
    """Genesis, committee and tip of each chain (no verification)."""
    infos: list[dict[str, Any]] = []
    for directory in _domains(data_dir, domain):
        genesis, store = _open(directory)
        with store:
            tip = store.tip()
            infos.append(
                {
                    "path": str(directory.root),
                    "domain": genesis.domain,
                    "parent": genesis.parent,
                    "genesis_hash": genesis.genesis_hash.hex(),
                    "suite": genesis.suite,
                    "protocol": genesis.protocol,
                    "quorum": genesis.quorum,
                    "voters": [m.to_wire() for m in genesis.voters],
                    "observers": [m.to_wire() for m in genesis.observers],
                    "tip_height": tip.height,
                    "tip_hash": tip.block_hash.hex(),
                    "transactions": store.count_stored_transactions(),
                    "database_bytes": directory.chain_path.stat().st_size,
                }
            )
    if as_json:
        typer.echo(json.dumps(infos, indent=2, ensure_ascii=False))
        return
    out = Console()
    for info in infos:
        table = Table(title=f"domain {info['domain']}", show_header=False)
        for key in ("path", "parent", "genesis_hash", "suite", "protocol", "quorum"):
            table.add_row(key, str(info[key]))
        table.add_row("voters", ", ".join(v["id"] for v in info["voters"]))
        table.add_row("observers", ", ".join(v["id"] for v in info["observers"]) or "-")
        table.add_row("tip", f"{info['tip_height']}  {info['tip_hash']}")
        table.add_row("transactions", str(info["transactions"]))
        out.print(table)


@chain_app.command("show")
def show_command(
    data_dir: DataDir,
    height: Annotated[int, typer.Argument(help="Block height (1 = first block).")],
    domain: DomainOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One block: header, transactions and commit certificate (re-checked on read)."""
    directories = _domains(data_dir, domain)
    if len(directories) > 1:
        typer.echo("error: several domains here; choose one with --domain", err=True)
        raise typer.Exit(2)
    _genesis, store = _open(directories[0])
    with store:
        try:
            block, qc = store.get_committed(height)
        except BelepError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc
    h = block.header
    shown: dict[str, Any] = {
        "height": h.height,
        "block_hash": h.block_hash.hex(),
        "domain": h.domain,
        "epoch": h.epoch,
        "view": h.view,
        "prev_hash": h.prev_hash.hex(),
        "tx_root": h.tx_root.hex(),
        "state_root": h.state_root.hex(),
        "timestamp_ms": h.timestamp_ms,
        "proposer": h.proposer,
        "transactions": [
            {"index": i, "tx_hash": tx.tx_hash.hex(), "size": len(tx.payload)}
            for i, tx in enumerate(block.transactions)
        ],
        "certificate": {
            "kind": qc.statement.kind,
            "epoch": qc.statement.epoch,
            "view": qc.statement.view,
            "signers": list(qc.signers),
        },
    }
    if as_json:
        typer.echo(json.dumps(shown, indent=2, ensure_ascii=False))
        return
    out = Console()
    table = Table(title=f"block {h.height} of {h.domain}", show_header=False)
    for key in ("block_hash", "prev_hash", "tx_root", "epoch", "view", "timestamp_ms", "proposer"):
        table.add_row(key, str(shown[key]))
    table.add_row("certificate", f"{qc.statement.kind} by {', '.join(qc.signers)}")
    out.print(table)
    txs = Table("index", "tx hash", "bytes", title=f"{len(block.transactions)} transactions")
    for i, tx in enumerate(block.transactions):
        txs.add_row(str(i), tx.tx_hash.hex(), str(len(tx.payload)))
    out.print(txs)


@chain_app.command("proof")
def proof_command(
    data_dir: DataDir,
    tx_hash: Annotated[str, typer.Argument(help="Transaction hash (hex SHA-256 of its payload).")],
    domain: DomainOpt = None,
) -> None:
    """A transaction's Merkle inclusion proof against its block header, as JSON."""
    try:
        wanted = bytes.fromhex(tx_hash)
    except ValueError as exc:
        raise typer.BadParameter("not a hex hash") from exc
    for directory in _domains(data_dir, domain):
        _genesis, store = _open(directory)
        with store:
            try:
                inclusion = store.get_inclusion_proof(wanted)
            except NotFound:
                continue
        inclusion.verify()
        header = inclusion.header
        typer.echo(
            json.dumps(
                {
                    "domain": header.domain,
                    "height": header.height,
                    "block_hash": header.block_hash.hex(),
                    "tx_root": header.tx_root.hex(),
                    "tx_hash": wanted.hex(),
                    "leaf_index": inclusion.proof.leaf_index,
                    "tree_size": inclusion.proof.tree_size,
                    "path": [node.hex() for node in inclusion.proof.path],
                },
                indent=2,
            )
        )
        return
    typer.echo(f"error: transaction {tx_hash} not found", err=True)
    raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``belep chain`` to the root application."""
    app.add_typer(chain_app, name="chain")
