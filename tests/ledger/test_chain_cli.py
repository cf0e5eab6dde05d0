"""`belep chain ...` and `belep demo`: exit codes, text and JSON reports."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from belep.app.machine import BelepApplication
from belep.cli import app
from belep.crypto import PrivateKey
from belep.ledger.block import NodeId
from belep.ledger.builder import ChainBuilder, committee_keys, make_genesis
from belep.ledger.datadir import DomainDir, node_domain_dir
from belep.ledger.genesis import Genesis
from belep.ledger.genesis_file import write_genesis
from belep.ledger.merkle import hash_leaf, verify_inclusion
from belep.ledger.store import BlockStore

from .conftest import sample_payloads

runner = CliRunner()


def make_domain(directory: DomainDir, genesis: Genesis, keys: dict[NodeId, PrivateKey], blocks: int = 5) -> None:  # fmt: skip
    directory.root.mkdir(parents=True, exist_ok=True)
    write_genesis(directory.genesis_path, genesis)
    builder = ChainBuilder(genesis, keys, application=BelepApplication())
    with BlockStore.open(directory.chain_path, genesis) as store:
        for h in range(1, blocks + 1):
            store.append(*builder.next_block(sample_payloads(h, 3), timestamp_ms=h))


def flip_payload(directory: DomainDir, height: int) -> None:
    conn = sqlite3.connect(directory.chain_path)
    (payload,) = conn.execute("SELECT payload FROM txs WHERE height = ? AND idx = 1", (height,)).fetchone()  # fmt: skip
    conn.execute(
        "UPDATE txs SET payload = ? WHERE height = ? AND idx = 1",
        (bytes([payload[0] ^ 1]) + payload[1:], height),
    )
    conn.commit()
    conn.close()


def test_verify_intact_chain(tmp_path: Path, genesis: Genesis, keys: dict[NodeId, PrivateKey]) -> None:  # fmt: skip
    make_domain(DomainDir(tmp_path), genesis, keys)
    result = runner.invoke(app, ["chain", "verify", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "OK" in result.output
    assert "5 blocks, 15 transactions, 15 signatures" in result.output
    result = runner.invoke(app, ["chain", "verify", "--data-dir", str(tmp_path), "--json", "--sqlite-check"])  # fmt: skip
    assert result.exit_code == 0
    report = json.loads(result.output)
    assert report["ok"] is True
    assert report["chains"][0]["tip_height"] == 5
    assert report["chains"][0]["genesis_hash"] == genesis.genesis_hash.hex()


def test_verify_names_height_and_reason(tmp_path: Path, genesis: Genesis, keys: dict[NodeId, PrivateKey]) -> None:  # fmt: skip
    directory = DomainDir(tmp_path)
    make_domain(directory, genesis, keys)
    flip_payload(directory, 4)
    result = runner.invoke(app, ["chain", "verify", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "FAILED" in result.output
    assert "height 4: tx-hash" in result.output
    result = runner.invoke(app, ["chain", "verify", "--data-dir", str(tmp_path), "--json"])
    assert result.exit_code == 1
    finding = json.loads(result.output)["chains"][0]["finding"]
    assert (finding["height"], finding["check"]) == (4, "tx-hash")
    assert finding["expected"] != finding["found"]


def test_expected_genesis_is_enforced(tmp_path: Path, genesis: Genesis, keys: dict[NodeId, PrivateKey]) -> None:  # fmt: skip
    make_domain(DomainDir(tmp_path), genesis, keys)
    good = ["chain", "verify", "--data-dir", str(tmp_path), "--expect-genesis"]
    assert runner.invoke(app, [*good, genesis.genesis_hash.hex()]).exit_code == 0
    result = runner.invoke(app, [*good, "00" * 32])
    assert result.exit_code == 1
    assert "genesis" in result.output


def test_node_data_dir_with_several_domains(tmp_path: Path, genesis: Genesis, keys: dict[NodeId, PrivateKey]) -> None:  # fmt: skip
    county_keys = committee_keys("c", 4)
    county = make_genesis("county-1", county_keys)
    make_domain(node_domain_dir(tmp_path, "station-1"), genesis, keys)
    make_domain(node_domain_dir(tmp_path, "county-1"), county, county_keys, blocks=3)
    result = runner.invoke(app, ["chain", "verify", "--data-dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert {c["domain"] for c in json.loads(result.output)["chains"]} == {"station-1", "county-1"}
    flip_payload(node_domain_dir(tmp_path, "county-1"), 2)
    result = runner.invoke(app, ["chain", "verify", "--data-dir", str(tmp_path), "--json"])
    assert result.exit_code == 1
    chains = {c["domain"]: c for c in json.loads(result.output)["chains"]}
    assert chains["station-1"]["ok"] is True
    assert chains["county-1"]["finding"]["height"] == 2
    only = ["chain", "verify", "--data-dir", str(tmp_path), "--domain", "station-1"]
    assert runner.invoke(app, only).exit_code == 0


def test_nothing_to_verify(tmp_path: Path) -> None:
    result = runner.invoke(app, ["chain", "verify", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2


def test_info_show_and_proof(tmp_path: Path, genesis: Genesis, keys: dict[NodeId, PrivateKey]) -> None:  # fmt: skip
    make_domain(DomainDir(tmp_path), genesis, keys)
    info = runner.invoke(app, ["chain", "info", "--data-dir", str(tmp_path), "--json"])
    assert info.exit_code == 0, info.output
    (summary,) = json.loads(info.output)
    assert (summary["domain"], summary["tip_height"], summary["quorum"]) == ("station-1", 5, 3)
    assert runner.invoke(app, ["chain", "info", "--data-dir", str(tmp_path)]).exit_code == 0
    shown = runner.invoke(app, ["chain", "show", "--data-dir", str(tmp_path), "2", "--json"])
    assert shown.exit_code == 0, shown.output
    block = json.loads(shown.output)
    assert block["height"] == 2
    assert len(block["certificate"]["signers"]) == 3
    assert runner.invoke(app, ["chain", "show", "--data-dir", str(tmp_path), "2"]).exit_code == 0
    assert runner.invoke(app, ["chain", "show", "--data-dir", str(tmp_path), "9"]).exit_code == 1
    tx_hash = block["transactions"][1]["tx_hash"]
    proof = runner.invoke(app, ["chain", "proof", "--data-dir", str(tmp_path), tx_hash])
    assert proof.exit_code == 0, proof.output
    p = json.loads(proof.output)
    verify_inclusion(
        p["leaf_index"],
        p["tree_size"],
        hash_leaf(sample_payloads(2, 3)[1]),
        [bytes.fromhex(x) for x in p["path"]],
        bytes.fromhex(p["tx_root"]),
    )
    missing = runner.invoke(app, ["chain", "proof", "--data-dir", str(tmp_path), "00" * 32])
    assert missing.exit_code == 1


@pytest.mark.slow
def test_demo_detects_the_tampering(tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo", "ledger", "--dir", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    assert "both edits detected at height 3" in result.output
    # The files it leaves behind tell the same story through `belep chain verify`.
    verify = runner.invoke(app, ["chain", "verify", "--data-dir", str(tmp_path / "demo"), "--json"])
    assert verify.exit_code == 1
    finding = json.loads(verify.output)["chains"][0]["finding"]
    assert (finding["height"], finding["check"]) == (3, "tx-root")


def test_known_checkpoint_catches_truncation(tmp_path: Path, genesis: Genesis, keys: dict[NodeId, PrivateKey]) -> None:  # fmt: skip
    directory = DomainDir(tmp_path)
    make_domain(directory, genesis, keys)
    with BlockStore.open(directory.chain_path, genesis, readonly=True) as store:
        block4 = store.get_header(4).block_hash.hex()
    base = ["chain", "verify", "--data-dir", str(tmp_path), "--json", "--expect-block"]
    assert runner.invoke(app, [*base, f"4:{block4}"]).exit_code == 0
    wrong = runner.invoke(app, [*base, f"4:{'00' * 32}"])
    assert wrong.exit_code == 1
    assert json.loads(wrong.output)["chains"][0]["finding"]["check"] == "checkpoint"
    conn = sqlite3.connect(directory.chain_path)  # an insider deletes the newest blocks
    conn.execute("DELETE FROM txs WHERE height >= 4")
    conn.execute("DELETE FROM blocks WHERE height >= 4")
    conn.commit()
    conn.close()
    assert runner.invoke(app, ["chain", "verify", "--data-dir", str(tmp_path)]).exit_code == 0
    truncated = runner.invoke(app, [*base, f"4:{block4}"])
    assert truncated.exit_code == 1
    finding = json.loads(truncated.output)["chains"][0]["finding"]
    assert (finding["height"], finding["check"]) == (4, "checkpoint")
    assert runner.invoke(app, [*base, "4:nothex"]).exit_code == 2


def test_bench_ledger_small_run(tmp_path: Path) -> None:
    work = tmp_path / "bench"
    result = runner.invoke(app, ["bench", "ledger", "--blocks", "4", "--txs", "7", "--json", "--dir", str(work)])  # fmt: skip
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert figures["verified"] is True
    assert (figures["blocks"], figures["txs_per_block"], figures["signers"]) == (4, 7, 3)
    assert 280 <= figures["payload_bytes"] <= 320
    assert {"append_tx_per_s", "raw_tx_per_s", "verify_tx_per_s", "machine"} <= set(figures)
    raw = sqlite3.connect(work / "raw.sqlite3")
    assert raw.execute("SELECT count(*) FROM txs").fetchone()[0] == 28
    raw.close()
