"""`belep cid`, `belep add`, `belep get`, `belep car export|import`, and add_file."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from belep.cli import app
from belep.content.blockstore import Blockstore
from belep.content.deterministic import deterministic_bytes
from belep.content.exporter import iter_dag
from belep.content.ingest import add_file

runner = CliRunner()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_cid_prints_like_sha256sum(tmp_path: Path) -> None:
    hello = _write(tmp_path / "hello.txt", b"hello world\n")
    empty = _write(tmp_path / "empty", b"")
    result = runner.invoke(app, ["cid", str(hello), str(empty)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o  {hello}",
        f"QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH  {empty}",
    ]
    v1 = runner.invoke(app, ["cid", "--cid-version", "1", str(empty)])
    assert v1.stdout == f"bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku  {empty}\n"
    stdin = runner.invoke(app, ["cid", "-"], input=b"Hello Worlds!\n")
    assert stdin.stdout == "QmVr26fY1tKyspEJBniVhqxQeEjhF78XerGiqWAwraVLQH  -\n"


def test_cid_reports_unreadable_files_and_goes_on(tmp_path: Path) -> None:
    hello = _write(tmp_path / "hello.txt", b"hello world\n")
    result = runner.invoke(app, ["cid", str(tmp_path / "missing"), str(hello)])
    assert result.exit_code == 1
    assert "missing" in result.stderr
    assert result.stdout.startswith("QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o")
    bad_version = runner.invoke(app, ["cid", "--cid-version", "2", str(hello)])
    assert bad_version.exit_code == 2


def test_add_get_and_car_round_trip(tmp_path: Path) -> None:
    data = deterministic_bytes("cli", 600_000)
    source = _write(tmp_path / "video.mp4", data)
    store = tmp_path / "store"
    added = runner.invoke(app, ["add", str(source), "--store", str(store), "--json"])
    assert added.exit_code == 0, added.output
    record = json.loads(added.stdout)
    assert record["size"] == len(data)
    assert record["sha256"] == hashlib.sha256(data).hexdigest()
    cid = record["cid"]
    assert runner.invoke(app, ["cid", str(source)]).stdout.split()[0] == cid

    out = tmp_path / "copy.mp4"
    got = runner.invoke(app, ["get", cid, "-o", str(out), "--store", str(store)])
    assert got.exit_code == 0, got.output
    assert out.read_bytes() == data

    car = tmp_path / "video.car"
    exported = runner.invoke(app, ["car", "export", cid, "-o", str(car), "--store", str(store)])
    assert exported.exit_code == 0, exported.output
    other = tmp_path / "other"
    imported = runner.invoke(app, ["car", "import", str(car), "--store", str(other)])
    assert imported.exit_code == 0, imported.output
    assert imported.stdout.startswith(f"pinned {cid} (4 blocks, 4 new)")
    again = tmp_path / "again.mp4"
    assert runner.invoke(app, ["get", cid, "-o", str(again), "--store", str(other)]).exit_code == 0
    assert again.read_bytes() == data


def test_get_of_a_corrupted_store_fails_naming_the_block_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    data = deterministic_bytes("cli-corrupt", 600_000)
    store_dir = tmp_path / "store"
    with io.BytesIO(data) as handle:
        result = add_file(handle, Blockstore(store_dir))
    store = Blockstore(store_dir)
    victim_cid = [cid for cid, _ in iter_dag(result.cid, store)][2]
    victim = store.block_path(victim_cid)
    damaged = bytearray(victim.read_bytes())
    damaged[100] ^= 0x40
    victim.write_bytes(bytes(damaged))
    out = tmp_path / "out.bin"
    got = runner.invoke(app, ["get", str(result.cid), "-o", str(out), "--store", str(store_dir)])
    assert got.exit_code == 1
    assert "corrupt" in got.stderr
    assert str(victim_cid) in got.stderr
    assert not out.exists()
    assert not (tmp_path / "out.bin.part").exists()


def test_bad_inputs_exit_1(tmp_path: Path) -> None:
    store = tmp_path / "store"
    assert (
        runner.invoke(
            app, ["get", "Qmnope", "-o", str(tmp_path / "x"), "--store", str(store)]
        ).exit_code
        == 1
    )
    absent = runner.invoke(
        app,
        [
            "get",
            "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o",
            "-o",
            str(tmp_path / "x"),
            "--store",
            str(store),
        ],
    )
    assert absent.exit_code == 1
    assert "not found" in absent.stderr
    truncated = _write(tmp_path / "bad.car", b"\x38\xa2")
    car = runner.invoke(app, ["car", "import", str(truncated), "--store", str(store)])
    assert car.exit_code == 1
    assert "truncated" in car.stderr


def test_add_file_reports_sha256_and_pins_only_on_success(tmp_path: Path) -> None:
    store = Blockstore(tmp_path / "store")
    data = deterministic_bytes("ingest", 1_000_000)
    result = add_file(io.BytesIO(data), store, cid_version=1)
    assert result.sha256 == hashlib.sha256(data).digest()
    assert result.size == len(data)
    assert store.pins() == [result.cid]

    class Broken(io.RawIOBase):
        def __init__(self) -> None:
            self.calls = 0

        def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
            self.calls += 1
            if self.calls > 3:
                raise OSError("device removed")
            memoryview(buffer)[:1000] = bytes(1000)
            return 1000

    with pytest.raises(OSError, match="device removed"):
        add_file(Broken(), store)
    assert store.pins() == [result.cid]


def test_bench_content_runs_end_to_end(tmp_path: Path) -> None:
    from belep.commands.bench_content import run

    report = run(size_mib=1, rss_size_mib=1, repeat=1, base=tmp_path)
    assert set(report.seconds) == {"sha256", "cid", "add", "add --no-sync", "write floor", "get"}
    assert report.ratio("sha256") == 1.0
    assert all(len(times) == 1 for times in report.round_seconds.values())
    assert report.seconds == {name: times[0] for name, times in report.round_seconds.items()}
    assert set(report.rss) == {"belep add", "belep get", "belep cid", "belep --version"}
    assert all(peak > 10_000_000 for _, peak in report.rss.values())
    assert json.dumps(report.to_json())
    assert list(tmp_path.iterdir()) == []  # the temporary directory is removed


def test_bench_content_deletes_nothing_between_timed_rounds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deleting thousands of files right before a timed add made it measure the file
    system's clean-up (ext4 without a journal scans recently freed inodes)."""
    from belep.commands import bench_content

    timing = False
    deleted_while_timing: list[str] = []
    real_rmtree = bench_content.shutil.rmtree
    real_interleaved = bench_content._interleaved

    def rmtree(path: object, *args: object, **kwargs: object) -> None:
        if timing:
            deleted_while_timing.append(str(path))
        real_rmtree(path, *args, **kwargs)  # type: ignore[arg-type]

    def interleaved(*args: object, **kwargs: object) -> object:
        nonlocal timing
        timing = True
        try:
            return real_interleaved(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            timing = False

    monkeypatch.setattr(bench_content.shutil, "rmtree", rmtree)
    monkeypatch.setattr(bench_content, "_interleaved", interleaved)
    report = bench_content.run(size_mib=1, rss_size_mib=1, repeat=2, base=tmp_path)
    assert all(len(times) == 2 for times in report.round_seconds.values())
    assert deleted_while_timing == []
    assert list(tmp_path.iterdir()) == []
