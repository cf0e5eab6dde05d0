"""A local network: every node of a generated network as its own process on this machine.

Owns :class:`LocalNetwork` (what ``belep up`` runs, and what the end-to-end
tests and the demo drive): start each node as ``belep node --config …``
with its JSON log in ``DIR/logs/<node>.log``, wait until every node is
ready (``/health``: started and every peer connected), write
``DIR/network.json`` (each node's id, unit, role, domains, HTTP base URL,
peer address, log file), and stop them all — SIGTERM, then SIGKILL after a
grace period. Single nodes can be killed (SIGKILL) and restarted, which is
how the crash tests exercise recovery.

:func:`run_up` is ``belep up``'s whole run; what it has to say goes to an
:class:`UpReporter` (the command prints it).

I/O: processes, HTTP polling of ``/health``, two files; no console.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import httpx

from belep.deploy.presets import load_topology
from belep.deploy.provision import NetworkLayout, provision
from belep.errors import ConfigError, NetworkError
from belep.node.config import NodeConfig, read_node_config

__all__ = [
    "NETWORK_FILE",
    "LocalNetwork",
    "NodeProcess",
    "StopRequested",
    "UpReporter",
    "node_command",
    "run_until_signal",
    "run_up",
    "unusual_statuses",
]

NETWORK_FILE = "network.json"
STOP_GRACE_S = 10.0


def node_command(config: Path) -> list[str]:
    """The command line that runs one node with this interpreter."""
    return [
        sys.executable,
        "-c",
        "from belep.cli import main; main()",
        "node",
        "--config",
        str(config),
    ]


@dataclass(slots=True)
class NodeProcess:
    """One node of the local network and its process (if running)."""

    config: NodeConfig
    config_path: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None
    starts: int = 0

    @property
    def node_id(self) -> str:
        return self.config.node_id

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def token(self) -> str:
        return self.config.token_file.read_text(encoding="utf-8").strip()


@dataclass(slots=True)
class LocalNetwork:
    """The nodes of the network generated in ``root`` (by ``belep init``)."""

    root: Path
    nodes: dict[str, NodeProcess] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def open(cls, root: Path) -> LocalNetwork:
        layout = NetworkLayout(root)
        ids = layout.node_ids()
        if not ids:
            raise ConfigError("no generated network here (run belep init)", where=str(root))
        logs = root / "logs"
        logs.mkdir(exist_ok=True)
        network = cls(root)
        for node_id in ids:
            path = layout.config_path(node_id)
            network.nodes[node_id] = NodeProcess(
                read_node_config(path), path, logs / f"{node_id}.log"
            )
        return network

    # ------------------------------------------------------------------ processes

    def start(self, node_id: str | None = None) -> None:
        """Start one node (or every node that is not running)."""
        targets = [self.nodes[node_id]] if node_id is not None else list(self.nodes.values())
        env = {**os.environ, **self.extra_env}
        for node in targets:
            if node.running:
                continue
            if node.log_file is not None:
                node.log_file.close()
            node.log_file = open(node.log_path, "ab")  # noqa: SIM115 (kept open for the child's life)
            node.process = subprocess.Popen(  # noqa: S603 (our own interpreter and arguments)
                node_command(node.config_path),
                stdout=subprocess.DEVNULL,
                stderr=node.log_file,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # Ctrl-C in a terminal reaches `belep up`, which stops them
            )
            node.starts += 1

    def kill(self, node_id: str) -> None:
        """SIGKILL one node (a crash: no flush, no goodbye) and reap it."""
        node = self.nodes[node_id]
        if node.process is not None and node.process.poll() is None:
            node.process.kill()
            node.process.wait()

    def terminate(self, node_id: str, grace_s: float = STOP_GRACE_S) -> int | None:
        """SIGTERM one node, SIGKILL it after ``grace_s``; its exit status."""
        node = self.nodes[node_id]
        process = node.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(grace_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def stop(self, grace_s: float = STOP_GRACE_S) -> dict[str, int | None]:
        """Stop every node (SIGTERM to all at once, then SIGKILL stragglers)."""
        for node in self.nodes.values():
            if node.process is not None and node.process.poll() is None:
                node.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        codes: dict[str, int | None] = {}
        for node_id, node in self.nodes.items():
            process = node.process
            if process is None:
                codes[node_id] = None
                continue
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            codes[node_id] = process.returncode
            if node.log_file is not None:
                node.log_file.close()
                node.log_file = None
        return codes

    def exited(self) -> dict[str, int]:
        """Nodes whose process ended (and their exit status)."""
        return {
            n: p.process.returncode
            for n, p in self.nodes.items()
            if p.process is not None and p.process.poll() is not None
        }

    # ------------------------------------------------------------------ readiness

    def health(self, node_id: str, client: httpx.Client) -> dict[str, Any] | None:
        try:
            response = client.get(f"{self.nodes[node_id].config.http_url}/health", timeout=2.0)
            body: dict[str, Any] = response.json()
            return body
        except (httpx.HTTPError, ValueError):
            return None

    def wait_ready(self, timeout_s: float = 60.0, nodes: list[str] | None = None) -> None:
        """Wait until every (given) node is started and connected to all its peers."""
        deadline = time.monotonic() + timeout_s
        pending = set(self.nodes if nodes is None else nodes)
        with httpx.Client() as client:
            while pending:
                for node_id in sorted(pending):
                    process = self.nodes[node_id].process
                    if process is not None and process.poll() is not None:
                        raise NetworkError(
                            f"node {node_id} exited with status {process.returncode} during start-up;"
                            f" see {self.nodes[node_id].log_path}"
                        )
                    body = self.health(node_id, client)
                    if body is not None and body.get("status") == "ok":
                        pending.discard(node_id)
                if not pending:
                    return
                if time.monotonic() > deadline:
                    raise NetworkError(
                        f"nodes not ready after {timeout_s:.0f} s: {sorted(pending)}"
                    )
                time.sleep(0.2)

    # ------------------------------------------------------------------ description

    def describe(self) -> dict[str, Any]:
        """The content of ``network.json``."""
        entries = []
        for node_id, node in self.nodes.items():
            domains = {}
            for domain in node.config.domains:
                from belep.ledger.datadir import node_domain_dir
                from belep.ledger.genesis_file import read_genesis

                genesis = read_genesis(node_domain_dir(node.config.data_dir, domain).genesis_path)
                domains[domain] = (
                    "voter" if node_id in {m.node_id for m in genesis.voters} else "observer"
                )
            home = [d for d, r in domains.items() if r == "voter"]
            entries.append(
                {
                    "id": node_id,
                    "unit": node.config.unit,
                    "role": f"validator of {', '.join(home)}" if home else "observer",
                    "domains": domains,
                    "http": node.config.http_url,
                    "p2p": f"{node.config.host}:{node.config.p2p_port}",
                    "config": str(node.config_path),
                    "log": str(node.log_path),
                    "pid": None if node.process is None else node.process.pid,
                }
            )
        return {"network": next(iter(self.nodes.values())).config.network, "nodes": entries}

    def write_network_file(self) -> Path:
        path = self.root / NETWORK_FILE
        temporary = path.with_suffix(".tmp")
        temporary.write_text(
            json.dumps(self.describe(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        os.replace(temporary, path)
        return path


class UpReporter(Protocol):
    """What :func:`run_up` tells its operator, as it happens (``belep up`` prints it)."""

    def generated(self, name: str, directory: Path, note: str) -> None: ...

    def reusing(self, directory: Path) -> None: ...

    def started(self, nodes: Sequence[NodeProcess]) -> None: ...

    def ready(self, count: int, network_file: Path, duration: float | None) -> None: ...

    def exited(self, node: NodeProcess, status: int) -> None: ...

    def stopping(self) -> None: ...

    def stopped(self, statuses: Mapping[str, int | None]) -> None: ...


class StopRequested(Exception):
    """Raised in the main thread by the SIGTERM/SIGINT handler of :func:`run_until_signal`."""


def _raise_stop(_signum: int, _frame: object) -> None:
    raise StopRequested


@contextmanager
def run_until_signal(
    network: LocalNetwork, on_signal: Callable[[], None]
) -> Iterator[dict[str, int | None]]:
    """Run the body with SIGTERM/SIGINT turned into :class:`StopRequested` (caught here:
    ``on_signal`` is called and the body ends), then stop every node, the signals ignored
    meanwhile and restored after. Yields a dict that holds the nodes' exit statuses once
    the block has ended."""
    previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    statuses: dict[str, int | None] = {}
    try:
        yield statuses
    except StopRequested:
        on_signal()
    finally:
        for s in previous:
            signal.signal(s, signal.SIG_IGN)
        statuses.update(network.stop())
        for s, handler in previous.items():
            signal.signal(s, handler)


def unusual_statuses(statuses: Mapping[str, int | None]) -> dict[str, int | None]:
    """The nodes whose exit status is neither a clean stop nor SIGTERM's."""
    return {n: c for n, c in statuses.items() if c not in (0, None, -signal.SIGTERM)}


def run_up(
    report: UpReporter,
    directory: Path,
    preset: str | None,
    topology: Path | None,
    base_port: int | None,
    duration: float | None,
    timeout: float,
) -> int:
    """``belep up``: generate if needed, start, wait ready, write network.json, run, stop;
    the exit status (1 if a node exited on its own)."""
    layout = NetworkLayout(directory)
    if not layout.node_ids():
        if preset is None and topology is None:
            raise ConfigError("empty directory: give --preset or --topology", where=str(directory))
        topo, text, note = load_topology(topology, preset, base_port)
        provision(topo, directory, topology_text=text)
        report.generated(topo.name, directory, note)
    elif preset is not None or topology is not None:
        report.reusing(directory)
    network = LocalNetwork.open(directory)
    status = 0
    with run_until_signal(network, report.stopping) as statuses:
        network.start()
        report.started(list(network.nodes.values()))
        network.wait_ready(timeout)
        report.ready(len(network.nodes), network.write_network_file(), duration)
        deadline = None if duration is None else time.monotonic() + duration
        reported: set[str] = set()
        while deadline is None or time.monotonic() < deadline:
            for node_id, code in network.exited().items():
                if node_id not in reported:  # a crash stops one node, not the network
                    reported.add(node_id)
                    status = 1
                    report.exited(network.nodes[node_id], code)
            time.sleep(0.5)
    report.stopped(statuses)
    return status
