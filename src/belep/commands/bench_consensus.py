"""`belep bench` subcommands for the network experiments: `consensus` and `sweep`.

``belep bench consensus`` measures one load point on a fresh local network;
``belep bench sweep`` draws the paper's figures 7 and 8 for several
protocols and the PySyncObj reference in one run. Methods:
:mod:`belep.bench.consensus`, :mod:`belep.bench.sweep`; results go in
``docs/BENCHMARKS.md`` (## Network).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from belep.errors import BelepError

PROTOCOL_HELP = "pbft, hpbft, raft (BELEP), or pysyncobj (the reference Raft library)."


def _fail(exc: BelepError) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(2)


def _row(r: dict[str, Any]) -> str:
    load = f"rate {r['offered_tps']:g}" if r["offered_tps"] is not None else f"window {r['window']}"
    cpu = sum(r["cpu_percent"].values())
    return (
        f"{r['system']:<9} {r['protocol']:<5} {r['nodes']}+{r['standbys']}  {load:<12} "
        f"committed {r['committed_tps']:>8.1f} tx/s  p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms  "
        f"nodes CPU {cpu:.0f}%  client {r['cpu_client_percent']:.0f}%  "
        f"timeouts {r['timeouts']}  errors {r['errors']}"
    )


def _hpbft_shape(text: str) -> tuple[int, int]:
    seats, _, standbys = text.partition("+")
    try:
        return int(seats), int(standbys or 0)
    except ValueError:
        raise typer.BadParameter("give SEATS+STANDBYS, e.g. 4+3", param_hint="--hpbft") from None


BatchSize = Annotated[
    int | None,
    typer.Option(
        "--batch-size", min=1, help="Tuning: most transactions per block (node default 500)."
    ),
]
BatchWait = Annotated[
    int | None,
    typer.Option(
        "--batch-wait-ms", min=0, help="Tuning: longest wait to fill a block (default 5)."
    ),
]
Pipeline = Annotated[
    int | None,
    typer.Option(
        "--pipeline", min=1, help="Tuning: blocks in flight (the window knob, default 8)."
    ),
]


RequestTimeout = Annotated[
    int | None,
    typer.Option(
        "--request-timeout-ms", min=10, help="Tuning: wait before suspecting the leader (1000)."
    ),
]


def _tuning(
    batch_size: int | None,
    batch_wait_ms: int | None,
    pipeline: int | None,
    request_timeout_ms: int | None,
) -> dict[str, int]:
    knobs = {
        "max_batch_size": batch_size,
        "max_batch_wait_ms": batch_wait_ms,
        "window": pipeline,
        "request_timeout_ms": request_timeout_ms,
    }
    return {k: v for k, v in knobs.items() if v is not None}


def register(bench_app: typer.Typer) -> None:
    """Add this area's benchmark commands to `belep bench`."""

    @bench_app.command("consensus")
    def consensus(
        protocol: Annotated[str, typer.Option("--protocol", help=PROTOCOL_HELP)] = "hpbft",
        nodes: Annotated[int, typer.Option("--nodes", min=1, help="Voters (HPBFT: seats).")] = 4,
        standbys: Annotated[
            int, typer.Option("--standbys", min=0, help="Upper-level standbys (observers).")
        ] = 0,
        duration: Annotated[float, typer.Option("--duration", min=0.5, help="Measured s.")] = 10.0,
        warmup: Annotated[float, typer.Option("--warmup", min=0.0, help="Unmeasured s.")] = 3.0,
        rate: Annotated[
            float | None, typer.Option("--rate", help="Open loop: offered tx/s.")
        ] = None,
        window: Annotated[
            int | None, typer.Option("--window", help="Closed loop: tx outstanding.")
        ] = None,
        submit_to: Annotated[
            str, typer.Option("--submit-to", help="all (voters, leader first) or leader.")
        ] = "all",
        keep_dir: Annotated[
            Path | None, typer.Option("--dir", help="Generate the network here and keep it.")
        ] = None,
        seed: Annotated[int, typer.Option("--seed", help="Record and key seed.")] = 1,
        records: Annotated[
            int | None,
            typer.Option(
                "--records", min=1, help="Presigned records (default: enough for 8,000 tx/s)."
            ),
        ] = None,
        batch_size: BatchSize = None,
        batch_wait_ms: BatchWait = None,
        pipeline: Pipeline = None,
        request_timeout_ms: RequestTimeout = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    ) -> None:
        """One load point on a fresh local network of separate node processes (127.0.0.1)."""
        from belep.bench.consensus import (
            BenchNetwork,
            BenchTerminated,
            LoadSpec,
            measure_point,
            stop_on_sigterm,
        )
        from belep.bench.pysyncobj_bench import PySyncObjCluster
        from belep.bench.stats import ConsensusResult
        from belep.bench.workload import RecordStream, presign_cached

        if submit_to not in ("all", "leader"):
            raise typer.BadParameter("all or leader", param_hint="--submit-to")

        def run_point() -> ConsensusResult:
            spec = LoadSpec(rate=rate, window=window, warmup=warmup, duration=duration)
            if protocol == "pysyncobj":
                with PySyncObjCluster.start(nodes, seed=seed) as cluster:
                    sample = presign_cached(1, seed=seed)
                    return cluster.measure(spec, tx_bytes=len(sample[0]))
            pool = presign_cached(spec.budget(8000.0) if records is None else records, seed=seed)
            tuning = _tuning(batch_size, batch_wait_ms, pipeline, request_timeout_ms)
            with BenchNetwork.start(
                protocol, nodes, standbys, directory=keep_dir, tuning=tuning
            ) as network:
                return measure_point(
                    network,
                    spec,
                    RecordStream(pool, seed=seed),
                    tx_bytes=max(len(r) for r in pool),
                    submit_to=submit_to,
                )

        try:
            with stop_on_sigterm():
                result = run_point()
        except (KeyboardInterrupt, BenchTerminated):
            typer.echo("stopped: every benchmark process was shut down", err=True)
            raise typer.Exit(130) from None
        except BelepError as exc:
            raise _fail(exc) from exc
        body = result.to_dict()
        typer.echo(json.dumps(body, indent=2, ensure_ascii=False) if as_json else _row(body))

    @bench_app.command("sweep")
    def sweep(
        protocols: Annotated[
            str, typer.Option("--protocols", help="Comma-separated; " + PROTOCOL_HELP)
        ] = "pbft,hpbft,raft,pysyncobj",
        nodes: Annotated[
            int, typer.Option("--nodes", min=1, help="Voters of pbft, raft, pysyncobj.")
        ] = 7,
        hpbft: Annotated[str, typer.Option("--hpbft", help="HPBFT seats+standbys.")] = "4+3",
        rates: Annotated[
            str, typer.Option("--rates", help="Offered loads (tx/s), comma-separated.")
        ] = "250,500,1000,1500,2000,3000,4000",
        light_window: Annotated[
            int, typer.Option("--light-window", min=0, help="Window of the light point (0: none).")
        ] = 1,
        saturation_window: Annotated[
            int,
            typer.Option(
                "--saturation-window", min=0, help="Window of the saturation point (0: none)."
            ),
        ] = 3000,
        duration: Annotated[float, typer.Option("--duration", min=0.5)] = 8.0,
        warmup: Annotated[float, typer.Option("--warmup", min=0.0)] = 2.0,
        seed: Annotated[int, typer.Option("--seed")] = 1,
        plot: Annotated[Path | None, typer.Option("--plot", help="Write figures 7/8 here.")] = None,
        out: Annotated[Path | None, typer.Option("--out", help="Write all results (JSON).")] = None,
        replot: Annotated[
            Path | None, typer.Option("--from", help="Plot a saved --out file; measure nothing.")
        ] = None,
        batch_size: BatchSize = None,
        batch_wait_ms: BatchWait = None,
        pipeline: Pipeline = None,
        request_timeout_ms: RequestTimeout = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    ) -> None:
        """Throughput and latency against offered load for each protocol (figures 7 and 8)."""
        from belep.bench.consensus import BenchTerminated, stop_on_sigterm
        from belep.bench.stats import ConsensusResult, machine_info
        from belep.bench.sweep import parse_system, plot_sweep, run_sweep

        machine = machine_info()
        if replot is not None:
            saved = json.loads(replot.read_text(encoding="utf-8"))
            rows: list[dict[str, Any]] = saved["results"]
            machine = saved.get("machine", machine)
        else:
            try:
                shape = _hpbft_shape(hpbft)
                plans = [parse_system(p, nodes, shape) for p in protocols.split(",") if p.strip()]
                rate_list = [float(r) for r in rates.split(",") if r.strip()]
            except ValueError:
                raise typer.BadParameter("rates must be numbers", param_hint="--rates") from None
            except BelepError as exc:
                raise _fail(exc) from exc

            def progress(result: ConsensusResult) -> None:
                if not as_json:
                    typer.echo(_row(result.to_dict()))

            try:
                with stop_on_sigterm():
                    results = run_sweep(
                        plans,
                        rate_list,
                        warmup=warmup,
                        duration=duration,
                        light_window=light_window or None,
                        saturation_window=saturation_window or None,
                        seed=seed,
                        progress=progress,
                        tuning=_tuning(batch_size, batch_wait_ms, pipeline, request_timeout_ms),
                    )
            except (KeyboardInterrupt, BenchTerminated):
                typer.echo("stopped: every benchmark process was shut down", err=True)
                raise typer.Exit(130) from None
            except BelepError as exc:
                raise _fail(exc) from exc
            rows = [r.to_dict() for r in results]
        document = {"machine": machine, "results": rows}
        if out is not None:
            out.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", "utf-8")
        if plot is not None:
            subtitle = (
                f"{machine.get('cpu')} ({machine.get('cpus')} CPUs), Python {machine.get('python')},"
                f" {machine.get('date')}; every node a separate process on 127.0.0.1"
            )
            plot_sweep(rows, plot, subtitle=subtitle)
            if not as_json:
                typer.echo(f"wrote {plot}")
        if as_json:
            typer.echo(json.dumps(document, indent=2, ensure_ascii=False))
