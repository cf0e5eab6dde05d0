"""`belep bench content`: content-store speed and memory, side by side in one run.

Generates a file of Kubo's deterministic bytes in a temporary directory and
measures, on that same file, in this order:

* ``sha256``: streaming ``hashlib.sha256`` over the file (1 MiB reads) — the
  reference every ratio is taken against;
* ``cid``: the code path of ``belep cid`` (import without storing);
* ``add``: the code path of ``belep add`` into an empty store (created, with
  its shard directories, before the timing, as a node creates its store once), durable
  (per group of blocks: data synced, renamed into place, renames synced, on
  the writer's helper threads; then the pin), with the file's SHA-256
  computed too, as the chain needs it;
* ``add --no-sync``: the same without fsync (what the page cache allows);
* ``write floor``: the same bytes written as one file per 256 KiB block with
  no hashing at all — what the filesystem alone costs;
* ``get``: exporting the file back from the store, every block re-hashed.

Each figure is the best of ``--repeat`` rounds (every round's wall time is
reported too) with the file in the page cache; every timed write goes to a
fresh directory and nothing is deleted until all rounds are done (so each
round needs about 4 × the file size of free space), as wall-clock time and as CPU
time of the benchmark process (all its threads, user + system: the work done,
not the waiting, which is what stays comparable when other processes compete
for the cores); a round runs every operation once, in turn, so load from
other processes on a shared machine hits all of them alike.
Then peak RSS is measured for ``belep add`` and ``belep get`` of a larger
file (1 GiB by default) in child processes, each reporting the high-water
mark of its own address space (``VmHWM``) when it exits.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from belep.content.blockstore import Blockstore
from belep.content.deterministic import DeterministicStream
from belep.content.exporter import iter_file
from belep.content.importer import CHUNK_SIZE, FileImporter
from belep.content.ingest import add_file

_MIB = 1 << 20


def write_test_file(path: Path, size: int, seed: str = "belep-bench") -> None:
    """``size`` bytes of Kubo's deterministic stream for ``seed`` at ``path``."""
    stream = DeterministicStream(seed, size)
    buffer = bytearray(4 * _MIB)
    with path.open("wb") as handle:
        while count := stream.readinto(buffer):
            handle.write(memoryview(buffer)[:count])


def sha256_file(path: Path) -> bytes:
    """Streaming SHA-256 of a file, 1 MiB at a time (the reference)."""
    hasher = hashlib.sha256()
    buffer = bytearray(_MIB)
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as handle:
        while count := handle.readinto(buffer):
            hasher.update(view[:count])
    return hasher.digest()


def cid_file(path: Path) -> str:
    """What ``belep cid`` computes for one file."""
    importer = FileImporter(None)
    with path.open("rb", buffering=0) as handle:
        importer.write_from(handle)
    return str(importer.finish().cid)


def add_path(path: Path, store_dir: Path, *, sync: bool) -> str:
    """What ``belep add`` does for one file (into the store at ``store_dir``)."""
    with path.open("rb", buffering=0) as handle:
        return str(add_file(handle, Blockstore(store_dir, sync=sync)).cid)


def write_floor(path: Path, target: Path) -> None:
    """Copy ``path`` into one new file per 256 KiB block (no hashing, no fsync)."""
    target.mkdir(parents=True)
    buffer = bytearray(CHUNK_SIZE)
    with path.open("rb", buffering=0) as handle:
        index = 0
        while count := handle.readinto(buffer):
            shard = target / f"{index % 1024:03x}"
            shard.mkdir(exist_ok=True)
            (shard / str(index)).write_bytes(memoryview(buffer)[:count])
            index += 1


def get_file(cid: str, store_dir: Path, out: Path) -> None:
    """What ``belep get`` does (every block re-hashed)."""
    from belep.content.cid import parse_cid

    with out.open("wb") as handle:
        for piece in iter_file(parse_cid(cid), Blockstore(store_dir)):
            handle.write(piece)


def _interleaved(
    repeat: int, actions: dict[str, Callable[[int], object]]
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall-clock and CPU time (user + system, all threads of this process) of
    each action in each of ``repeat`` rounds; each round runs every action
    once, in turn, so a burst of load from elsewhere hits them alike. An
    action gets its round number, so that it can write to a place of its own:
    nothing is deleted between timed actions (on ext4 without a journal, the
    inode allocator scans past recently freed inodes, and deleting the
    previous round's ~5,000 files made the next round's file creation up to
    10x slower: the benchmark would measure its own clean-up). Each action
    starts after an untimed ``sync``: the durable add makes its blocks durable
    with ``syncfs``, which would otherwise also flush the hundreds of MiB the
    un-synced actions before it left dirty (and writers are throttled once
    dirty pages pile up), so later rounds measured the earlier ones."""
    wall: dict[str, list[float]] = {name: [] for name in actions}
    cpu: dict[str, list[float]] = {name: [] for name in actions}
    for index in range(repeat):
        for name, action in actions.items():
            os.sync()  # untimed: no action pays for flushing another one's dirty pages
            started, started_cpu = time.perf_counter(), time.process_time()
            action(index)
            wall[name].append(time.perf_counter() - started)
            cpu[name].append(time.process_time() - started_cpu)
    return wall, cpu


# Runs the CLI in a child that reports its own peak RSS (VmHWM of its own
# address space) on exit. ru_maxrss from wait4 cannot be used: Linux carries
# the parent's high-water mark across fork and exec, so every child would
# report at least the benchmark process's own size.
_CLI_WITH_PEAK = """
import atexit, os
def _report():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                os.write(2, ("belep-peak-rss-kb " + line.split()[1] + "\\n").encode())
atexit.register(_report)
from belep.cli import main
main()
"""


def _child_peak_rss(args: list[str]) -> tuple[float, int]:
    """Run ``belep ARGS`` in a child; return (seconds, its peak RSS in bytes)."""
    started = time.perf_counter()
    # Our own CLI with arguments built here, not user input.
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-c", _CLI_WITH_PEAK, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"belep {args} exited with {done.returncode}: {done.stderr!r}")
    for line in done.stderr.decode(errors="replace").splitlines():
        if line.startswith("belep-peak-rss-kb "):
            return elapsed, int(line.split()[1]) * 1024
    raise RuntimeError("the child did not report its peak RSS (needs Linux /proc)")


def _machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{model}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.system()}"
    )


@dataclass(frozen=True, slots=True)
class ContentBenchReport:
    """The figures of one run (seconds are the best of the repeats)."""

    command: str
    date: str
    machine: str
    size_mib: int
    seconds: dict[str, float]
    cpu_seconds: dict[str, float]
    """CPU time of this process (all threads): the work itself, not the waiting,
    so it is steadier than wall-clock time on a machine shared with others."""
    round_seconds: dict[str, list[float]]
    """Wall-clock seconds of every round, in order (the spread shows how much
    the machine and the file system's state moved during the run)."""
    rss_size_mib: int
    rss: dict[str, tuple[float, int]]
    """Per command: (seconds, peak RSS in bytes)."""

    def ratio(self, name: str) -> float:
        """Time of ``name`` over the streaming SHA-256 reference."""
        return self.seconds[name] / self.seconds["sha256"]

    def cpu_ratio(self, name: str) -> float:
        """CPU time of ``name`` over the reference's CPU time."""
        return self.cpu_seconds[name] / self.cpu_seconds["sha256"]

    def mb_per_s(self, name: str) -> float:
        """Throughput of ``name`` in MB/s."""
        return self.size_mib * _MIB / self.seconds[name] / 1e6

    def to_json(self) -> dict[str, object]:
        """A JSON-able form with the derived ratios."""
        return {
            "command": self.command,
            "date": self.date,
            "machine": self.machine,
            "size_mib": self.size_mib,
            "seconds": self.seconds,
            "ratio_to_sha256": {name: self.ratio(name) for name in self.seconds},
            "cpu_seconds": self.cpu_seconds,
            "round_seconds": self.round_seconds,
            "cpu_ratio_to_sha256": {name: self.cpu_ratio(name) for name in self.seconds},
            "mb_per_s": {name: self.mb_per_s(name) for name in self.seconds},
            "rss_size_mib": self.rss_size_mib,
            "rss": {
                name: {"seconds": secs, "peak_rss_mb": peak / 1e6}
                for name, (secs, peak) in self.rss.items()
            },
        }


def run(size_mib: int, rss_size_mib: int, repeat: int, base: Path) -> ContentBenchReport:
    """All measurements, in one temporary directory under ``base``."""
    work = Path(tempfile.mkdtemp(prefix="belep-bench-content-", dir=base))
    try:
        data = work / "sample.bin"
        write_test_file(data, size_mib * _MIB)
        sha256_file(data)  # warm the page cache
        out = work / "out.bin"
        rounds = work / "rounds"  # every timed write goes to a fresh place here
        rounds.mkdir()
        cid = cid_file(data)
        kept = work / "kept"
        add_path(data, kept, sync=True)
        for index in range(repeat):  # empty stores, created as a node creates its own once
            Blockstore(rounds / f"store-{index}", sync=True)
            Blockstore(rounds / f"nosync-{index}", sync=False)
        round_seconds, round_cpu = _interleaved(
            repeat,
            {
                "sha256": lambda _i: sha256_file(data),
                "cid": lambda _i: cid_file(data),
                "add": lambda i: add_path(data, rounds / f"store-{i}", sync=True),
                "add --no-sync": lambda i: add_path(data, rounds / f"nosync-{i}", sync=False),
                "write floor": lambda i: write_floor(data, rounds / f"floor-{i}"),
                "get": lambda i: get_file(cid, kept, rounds / f"out-{i}.bin"),
            },
        )
        seconds = {name: min(times) for name, times in round_seconds.items()}
        cpu_seconds = {name: min(times) for name, times in round_cpu.items()}
        get_file(cid, kept, out)
        if sha256_file(out) != sha256_file(data):
            raise RuntimeError("exported file differs from the original")
        shutil.rmtree(rounds)
        shutil.rmtree(kept)
        out.unlink()
        data.unlink()
        store = work / "store"

        big = work / "big.bin"
        write_test_file(big, rss_size_mib * _MIB, seed="belep-bench-rss")
        rss = {
            "belep add": _child_peak_rss(["add", str(big), "--store", str(store)]),
            "belep get": _child_peak_rss(
                ["get", cid_file(big), "-o", str(out), "--store", str(store)]
            ),
            "belep cid": _child_peak_rss(["cid", str(big)]),
            "belep --version": _child_peak_rss(["--version"]),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ContentBenchReport(
        command=f"belep bench content --size-mib {size_mib} --rss-size-mib {rss_size_mib} "
        f"--repeat {repeat} --dir {base}",
        date=datetime.now(UTC).strftime("%Y-%m-%d"),
        machine=_machine(),
        size_mib=size_mib,
        seconds=seconds,
        cpu_seconds=cpu_seconds,
        round_seconds=round_seconds,
        rss_size_mib=rss_size_mib,
        rss=rss,
    )


def _print_report(report: ContentBenchReport) -> None:
    typer.echo(f"# {report.command}")
    typer.echo(f"# {report.date} on {report.machine}")
    typer.echo(f"\n{report.size_mib} MiB file, best of runs:\n")
    typer.echo(
        "| operation | wall s | MB/s | × sha256 (wall) | CPU s | × sha256 (CPU) | rounds (wall s) |"
    )
    typer.echo("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for name, value in report.seconds.items():
        rounds = " ".join(f"{seconds:.2f}" for seconds in report.round_seconds[name])
        typer.echo(
            f"| {name} | {value:.3f} | {report.mb_per_s(name):.0f} | {report.ratio(name):.2f} "
            f"| {report.cpu_seconds[name]:.3f} | {report.cpu_ratio(name):.2f} | {rounds} |"
        )
    typer.echo(f"\n{report.rss_size_mib} MiB file, child processes:\n")
    typer.echo("| command | seconds | peak RSS (MB) |")
    typer.echo("| --- | ---: | ---: |")
    for name, (secs, peak) in report.rss.items():
        typer.echo(f"| {name} | {secs:.2f} | {peak / 1e6:.1f} |")


_DEFAULT_DIR = Path(tempfile.gettempdir())


def content_bench(
    size_mib: Annotated[int, typer.Option(min=1, help="Size of the timed file.")] = 256,
    rss_size_mib: Annotated[int, typer.Option(min=1, help="Size of the RSS file.")] = 1024,
    repeat: Annotated[int, typer.Option(min=1, help="Rounds (best time kept).")] = 5,
    directory: Annotated[
        Path, typer.Option("--dir", help="Where the temporary files go.", file_okay=False)
    ] = _DEFAULT_DIR,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead.")] = False,
) -> None:
    """Time cid/add/get against streaming SHA-256 on one file; peak RSS of add/get."""
    report = run(size_mib, rss_size_mib, repeat, directory)
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        _print_report(report)


def register(bench_app: typer.Typer) -> None:
    """Add this area's benchmark commands to `belep bench`."""
    bench_app.command("content")(content_bench)
