"""`belep bench` subcommands for the net area: `belep bench transport`."""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime

import typer


def register(bench_app: typer.Typer) -> None:
    """Add this area's benchmark commands to `belep bench`."""

    @bench_app.command("transport")
    def transport(
        sizes: str = typer.Option(
            "1024,65536", "--sizes", help="Comma-separated payload sizes in bytes."
        ),
        seconds: float = typer.Option(2.0, "--seconds", min=0.2, help="Sending time per run."),
        repeat: int = typer.Option(3, "--repeat", min=1, help="Interleaved runs; best is kept."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    ) -> None:
        """Authenticated-frame throughput on loopback next to a raw-TCP reference."""
        from belep.net.benchmark import run_transport_benchmark

        try:
            size_list = tuple(int(s) for s in sizes.split(",") if s.strip())
        except ValueError:
            raise typer.BadParameter("sizes must be integers", param_hint="--sizes") from None
        if not size_list or min(size_list) < 1 or max(size_list) > 8 * 1024 * 1024:
            raise typer.BadParameter("sizes must be 1..8388608 bytes", param_hint="--sizes")
        results = run_transport_benchmark(size_list, seconds, repeat)
        raw = {r.payload_bytes: r for r in results if r.mode == "raw-tcp"}
        rows = [
            {
                "mode": r.mode,
                "payload_bytes": r.payload_bytes,
                "messages": r.messages,
                "seconds": round(r.seconds, 3),
                "messages_per_second": round(r.messages_per_second),
                "mib_per_second": round(r.mib_per_second, 1),
                "ratio_to_raw_tcp": round(
                    r.messages_per_second / raw[r.payload_bytes].messages_per_second, 3
                )
                if raw[r.payload_bytes].messages_per_second
                else None,
            }
            for r in results
        ]
        meta = {
            "date": datetime.now(UTC).strftime("%Y-%m-%d"),
            "machine": _machine(),
            "python": platform.python_version(),
            "seconds_per_run": seconds,
            "repeat": repeat,
        }
        if as_json:
            typer.echo(json.dumps({**meta, "results": rows}, indent=2))
            return
        typer.echo(f"{meta['date']}  {meta['machine']}  Python {meta['python']}  best of {repeat}")
        typer.echo(f"{'mode':<10} {'payload':>8} {'msg/s':>10} {'MiB/s':>8} {'vs raw':>7}")
        for row in rows:
            typer.echo(
                f"{row['mode']:<10} {row['payload_bytes']:>8} {row['messages_per_second']:>10} "
                f"{row['mib_per_second']:>8} {row['ratio_to_raw_tcp']!s:>7}"
            )


def _machine() -> str:
    """CPU model and count, e.g. ``AMD EPYC (2 CPUs, x86_64)``."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model} ({os.cpu_count()} CPUs, {platform.machine()})"
