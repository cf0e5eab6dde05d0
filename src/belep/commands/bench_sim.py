"""`belep bench sim`: simulator speed — simulated committed blocks per wall-clock second.

For each registered protocol and each committee size (4 and 7 members by
default) it runs fault-free seeds with a steady client load of small
transactions and reports committed blocks, events and messages per
wall-clock second, and blocks per CPU second of this process (steadier on a
shared machine). As a machine reference measured in the same run it times
Ed25519 verifications per CPU second, so results from different machines
compare as ratios.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import replace

import typer

from belep.crypto import PrivateKey
from belep.sim.model import FaultSchedule, SimParams, WorkloadParams
from belep.sim.protocols import available_protocols, get_profile
from belep.sim.runner import run_seed


def _verify_per_s(samples: int = 2000) -> float:
    """Ed25519 verifications per CPU second (the machine reference)."""
    key = PrivateKey.from_seed(b"\x05" * 32)
    message = b"reference message " * 4
    signature = key.sign(message)
    public = key.public_key
    started = time.process_time()
    for _ in range(samples):
        public.is_valid_signature(message, signature)
    return samples / (time.process_time() - started)


def measure(
    protocol: str, nodes: int, seeds: int, virtual_ms: int, rate: int, reference: float
) -> dict[str, object]:
    """Fault-free runs of ``protocol`` with ``nodes`` members; speed figures."""
    profile = get_profile(protocol)
    params = SimParams(
        protocol=protocol,
        nodes=nodes,
        duration_ms=0,
        stable_ms=virtual_ms,
        drain_ms=min(virtual_ms, 500),
        faults=(),
        workload=WorkloadParams(rate_per_s=rate, median_payload=120, max_payload=512),
        max_batch_size=16,
    )
    blocks = events = messages = 0
    wall = 0.0
    cpu_started = time.process_time()
    for seed in range(seeds):
        result = run_seed(replace(params, seed=seed), profile, FaultSchedule())
        if result.violation is not None or result.liveness_failure is not None:
            raise typer.BadParameter(
                f"{protocol} n={nodes} seed {seed} failed: {result.violation or result.liveness_failure}"
            )
        blocks += result.committed_blocks
        events += result.events
        messages += result.messages
        wall += result.wall_s
    cpu = time.process_time() - cpu_started
    return {
        "protocol": protocol,
        "nodes": nodes,
        "seeds": seeds,
        "virtual_s": round(seeds * virtual_ms / 1000, 1),
        "committed_blocks": blocks,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "blocks_per_wall_s": round(blocks / wall, 1),
        "blocks_per_cpu_s": round(blocks / cpu, 1),
        "blocks_per_1k_ed25519_verifies": round(blocks / cpu / reference * 1000, 2),
        "events_per_wall_s": round(events / wall),
        "messages_per_wall_s": round(messages / wall),
        "virtual_speedup": round(seeds * virtual_ms / 1000 / wall, 2),
    }


def sim_bench(
    protocol: list[str] = typer.Option(  # noqa: B008 (typer's declaration style)
        [], "--protocol", help="Protocols to measure (default: every registered one)."
    ),
    nodes: list[int] = typer.Option([4, 7], "--nodes", help="Committee sizes."),  # noqa: B008
    seeds: int = typer.Option(3, "--seeds", min=1),
    virtual_ms: int = typer.Option(4000, "--virtual-ms", min=500, help="Virtual time per seed."),
    rate: int = typer.Option(2000, "--rate", min=1, help="Client transactions per virtual second."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Simulated committed blocks per wall-clock second, for 4 and 7 replicas."""
    reference = _verify_per_s()
    rows = [
        measure(p, n, seeds, virtual_ms, rate, reference)
        for p in (protocol or list(available_protocols()))
        for n in nodes
    ]
    out = {
        "benchmark": "sim",
        "machine": f"{platform.machine()} {platform.python_implementation()} {platform.python_version()}",
        "reference_ed25519_verify_per_s": round(reference),
        "rows": rows,
    }
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    typer.echo(f"reference: {out['reference_ed25519_verify_per_s']} Ed25519 verifies/s")
    typer.echo("protocol  n  blocks  wall_s  cpu_s  blocks/wall-s  blocks/cpu-s  events/wall-s")
    for r in rows:
        typer.echo(
            f"{r['protocol']:<8} {r['nodes']:>2} {r['committed_blocks']:>7} {r['wall_s']:>7} "
            f"{r['cpu_s']:>6} {r['blocks_per_wall_s']:>13} {r['blocks_per_cpu_s']:>13} "
            f"{r['events_per_wall_s']:>13}"
        )


def register(bench_app: typer.Typer) -> None:
    """Add this area's benchmark commands to `belep bench`."""
    bench_app.command("sim")(sim_bench)
