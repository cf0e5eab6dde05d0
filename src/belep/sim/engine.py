"""The deterministic simulation engine: virtual clock, event queue, replica hosts.

One :class:`Simulation` runs one seed. It owns:

* a **virtual clock** (integer ms) and an **event queue** ordered by
  ``(time, sequence number)`` — ties are broken by the order events were
  scheduled, never by object identity, so a run is a pure function of its
  parameters, its fault schedule and its seed;
* one **host** per replica *instance* implementing the host contract of
  :mod:`belep.consensus.types`: effects executed in order, timers
  (``SetTimer`` replaces, ``CancelTimer`` removes), an in-memory durable map for
  ``Persist`` (written before the next effect, acknowledged with ``Persisted``
  after ``disk_ms``), the delivered chain (the node's ledger, kept across
  restarts unless the disk is wiped), and state transfer served from another
  instance's delivered chain after a round trip;
* the fault schedule: crashes and restarts (with or without the disk),
  partitions, link loss/duplication/reordering, and Byzantine replicas —
  message rewriting by :class:`~belep.sim.adversary.Adversary` and Twins
  (a second instance of a node, same keys, its own timers, queue and disk);
* execution after ordering: each host executes every block its replica
  delivers with the simulated application (:mod:`belep.sim.application`),
  checking the block's state root against its own execution of the blocks
  below, and feeds ``Executed`` back to the replica at once;
* the client :class:`~belep.sim.workload.Workload` and the
  :class:`~belep.sim.checker.InvariantChecker`, consulted on every delivery.

Randomness: three ``random.Random`` streams derived from the seed (network,
workload, adversary), so removing a fault while shrinking does not reshuffle
the others. Replica code receives no randomness.

The run stops at the first safety violation (a correct host whose
execution disagrees with a committed block's state root is one, of kind
``state-root``) or an exception raised by replica code (both recorded), or at
``params.end_ms``.
"""

from __future__ import annotations

import hashlib
import heapq
import random
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from belep.consensus.types import (
    Block,
    BlocksFetched,
    Broadcast,
    CancelTimer,
    ClientRequest,
    Deliver,
    Effect,
    Event,
    Executed,
    NodeId,
    Persist,
    Persisted,
    QuorumCertificate,
    Receive,
    Replica,
    ReplicaConfig,
    RequestStateTransfer,
    Send,
    SetTimer,
    TimerFired,
    TimerId,
    Transaction,
)
from belep.crypto import PrivateKey
from belep.errors import ValidationError
from belep.ledger.block import Digest, DomainId
from belep.ledger.execution import ChainExecutor, MemoryState, genesis_state_root
from belep.ledger.genesis import TERM_START_ROOT_UNKNOWN
from belep.sim.adversary import ADVERSARY_HOOKS, Adversary
from belep.sim.application import PLANTED_NONDETERMINISM, SimApplication
from belep.sim.checker import InvariantChecker, Violation
from belep.sim.memo_suite import SIM_SUITE
from belep.sim.model import (
    CrashFault,
    FaultSchedule,
    LinkFault,
    PartitionFault,
    SimParams,
    member_ids,
    observer_ids,
    twin_key,
)
from belep.sim.network import Network
from belep.sim.protocols import ProtocolProfile
from belep.sim.trace import describe
from belep.sim.workload import Workload, validate_sim_transaction

__all__ = ["SIM_DOMAIN", "Simulation", "sim_key"]

SIM_DOMAIN = DomainId("sim")

# Event kinds (small ints: the queue holds plain tuples for speed).
_MSG, _TIMER, _PERSISTED, _FETCHED, _SUBMIT, _RETRY, _FAULT, _STOP, _EXECUTED = range(9)

_KEY_CACHE: dict[str, PrivateKey] = {}


def sim_key(node: NodeId) -> PrivateKey:
    """The simulated node's deterministic signing key (the same in every run).

    Real Ed25519 under the simulator's memoising suite (:mod:`belep.sim.memo_suite`).
    """
    key = _KEY_CACHE.get(node)
    if key is None:
        seed = hashlib.sha256(f"belep-sim-key/{node}".encode()).digest()
        key = PrivateKey.from_seed(seed, SIM_SUITE)
        _KEY_CACHE[node] = key
    return key


@dataclass(slots=True)
class _Host:
    """One replica instance and what its machine keeps."""

    key: str
    node: NodeId
    config: ReplicaConfig
    correct: bool
    adversary: Adversary | None
    replica: Replica | None = None
    up: bool = False
    incarnation: int = 0
    timers: dict[TimerId, int] = field(default_factory=dict)
    store: dict[str, bytes] = field(default_factory=dict)
    chain: list[Block] = field(default_factory=list)
    certs: list[QuorumCertificate] = field(default_factory=list)
    may_redeliver: bool = False
    #: Executes ``chain`` (kept with it across restarts); ``roots[h]`` = state root after h.
    application: SimApplication = field(default_factory=SimApplication)
    term_start_root_unknown: bool = False
    executor: ChainExecutor | None = None
    roots: list[Digest] = field(default_factory=list)

    def reset_execution(self) -> None:
        """Execution from the genesis (a new or wiped disk)."""
        genesis = self.config.genesis_hash
        self.executor = ChainExecutor.from_genesis(
            self.application,
            MemoryState(),
            genesis,
            term_start_root_unknown=self.term_start_root_unknown,
        )
        self.roots = [genesis_state_root(genesis)]


class Simulation:
    """One seeded run of one protocol under one fault schedule."""

    def __init__(
        self,
        params: SimParams,
        profile: ProtocolProfile,
        schedule: FaultSchedule,
        *,
        validate_transaction: Callable[..., bool] = validate_sim_transaction,
    ) -> None:
        self.params = params
        self.profile = profile
        self.schedule = schedule
        seed = params.seed
        self._net_rng = random.Random(f"belep-sim/net/{seed}")
        self._wl_rng = random.Random(f"belep-sim/workload/{seed}")
        self._adv_rng = random.Random(f"belep-sim/adversary/{seed}")
        self.members = member_ids(params.nodes)
        self.observers = observer_ids(params.observers)
        all_nodes = self.members + self.observers
        keys = {n: sim_key(n) for n in all_nodes}
        public = {n: k.public_key for n, k in keys.items()}
        byzantine = {role.node: role.behaviours for role in schedule.byzantine}
        targets = {role.node: role.targets for role in schedule.byzantine}
        self.hosts: dict[str, _Host] = {}
        self.instances_of: dict[NodeId, tuple[str, ...]] = {}
        for node in all_nodes:
            config = ReplicaConfig(
                node_id=node,
                domain=SIM_DOMAIN,
                members=self.members,
                keys=public,
                private_key=keys[node],
                observers=self.observers,
                max_batch_size=params.max_batch_size,
                max_batch_wait_ms=params.max_batch_wait_ms,
                window=params.window,
                request_timeout_ms=params.request_timeout_ms,
                heartbeat_ms=params.heartbeat_ms,
                checkpoint_interval=params.checkpoint_interval,
                validate_transaction=validate_transaction,
                planted_bugs=params.planted_bugs,
            )
            behaviours = byzantine.get(node)
            instance_keys = [str(node)]
            if behaviours is not None and "twins" in behaviours:
                instance_keys.append(twin_key(node))
            for ikey in instance_keys:
                adversary = None
                active = tuple(b for b in (behaviours or ()) if b != "twins")
                if active:
                    adversary = Adversary(
                        node,
                        active,
                        self.members,
                        keys[node],
                        self._adv_rng,
                        ADVERSARY_HOOKS.get(profile.name),
                        targets.get(node, ()),
                    )
                host = _Host(ikey, node, config, behaviours is None, adversary)
                host.term_start_root_unknown = profile.name in TERM_START_ROOT_UNKNOWN
                if PLANTED_NONDETERMINISM in params.planted_bugs and node == self.members[-1]:
                    host.application = SimApplication(nondeterministic=True)
                host.reset_execution()
                self.hosts[ikey] = host
            self.instances_of[node] = tuple(instance_keys)
        self.network = Network(params.network, self.hosts, self._net_rng)
        self.checker = InvariantChecker(
            self.hosts[str(self.members[0])].config, profile.certificate_rule
        )
        self.workload = Workload(params.workload, tuple(self.hosts), self._wl_rng)
        self.now = 0
        self._queue: list[tuple[int, int, int, Any, Any, Any]] = []
        self._seq = 0
        self._timer_gen = 0
        self.violation: Violation | None = None
        self.trace: list[str] | None = [] if params.trace else None
        self.events = 0
        self.messages = 0
        self.height_at_heal = 0
        self._submit_until = params.end_ms - params.drain_ms

    # -- queue ----------------------------------------------------------------

    def _push(self, time: int, kind: int, a: Any, b: Any = None, c: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (time, self._seq, kind, a, b, c))

    def _log(self, line: str) -> None:
        if self.trace is not None:
            self.trace.append(f"{self.now} {line}")

    # -- running --------------------------------------------------------------

    def run(self) -> None:
        """Run to the end (or the first violation)."""
        for fault in self.schedule.faults:
            if isinstance(fault, CrashFault):
                self._push(fault.start_ms, _FAULT, "crash", fault)
                self._push(fault.end_ms, _FAULT, "restart", fault)
            else:
                self._push(fault.start_ms, _FAULT, "on", fault)
                self._push(fault.end_ms, _FAULT, "off", fault)
        self._push(self.schedule.heal_ms, _FAULT, "heal", None)
        self._push(self.params.end_ms, _STOP, None)
        if self.params.workload.rate_per_s > 0:
            self._push(self.workload.next_gap_ms(), _SUBMIT, None)
        for host in self.hosts.values():
            self._start(host, {})
        queue = self._queue
        hosts = self.hosts
        pop = heapq.heappop
        tracing = self.trace is not None
        while queue and self.violation is None:
            time, _, kind, a, b, c = pop(queue)
            self.now = time
            self.events += 1
            if kind == _MSG:
                host = hosts[a]
                if not host.up:
                    continue
                if tracing:
                    self._log(f"recv {a} <- {b} {describe(c)}")
                if host.adversary is not None:
                    host.adversary.observe(b, c)
                self._step(host, Receive(b, c))
            elif kind == _TIMER:
                host = hosts[a]
                if host.timers.get(b) != c:
                    continue
                del host.timers[b]
                if tracing:
                    self._log(f"timer {a} {b}")
                self._step(host, TimerFired(b))
            elif kind == _PERSISTED:
                host = hosts[a]
                token, incarnation = b
                if host.up and host.incarnation == incarnation:
                    self._step(host, Persisted(token))
            elif kind == _FETCHED:
                host = hosts[a]
                if host.up and host.incarnation == b:
                    if tracing:
                        self._log(f"fetched {a} {describe(c)}")
                    self._step(host, BlocksFetched(c))
            elif kind == _EXECUTED:
                host = hosts[a]
                if host.up and host.incarnation == b:
                    self._step(host, c)
            elif kind == _SUBMIT:
                self._submit(None)
            elif kind == _RETRY:
                self._retry(a)
            elif kind == _FAULT:
                self._fault(a, b)
            else:
                self._log("stop")
                break

    # -- one step of one replica ----------------------------------------------

    def _step(self, host: _Host, event: Event) -> None:
        replica = host.replica
        if replica is None:
            return
        try:
            effects = replica.handle(event, self.now)
        except Exception:
            self._replica_raised(host, f"handle({type(event).__name__})")
            return
        self._execute(host, effects)

    def _replica_raised(self, host: _Host, where: str) -> None:
        detail = traceback.format_exc(limit=-4)
        self.violation = Violation("exception", self.now, host.key, 0, f"{where}: {detail}")

    def _execute(self, host: _Host, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Send):
                self._send(host, effect.to, effect.message)
            elif isinstance(effect, Broadcast):
                message = effect.message
                for dst in effect.to:
                    self._send(host, dst, message)
            elif isinstance(effect, SetTimer):
                self._timer_gen += 1
                host.timers[effect.timer] = self._timer_gen
                self._push(
                    self.now + max(0, effect.delay_ms),
                    _TIMER,
                    host.key,
                    effect.timer,
                    self._timer_gen,
                )
            elif isinstance(effect, CancelTimer):
                host.timers.pop(effect.timer, None)
            elif isinstance(effect, Persist):
                if effect.value is None:
                    host.store.pop(effect.key, None)
                else:
                    host.store[effect.key] = effect.value
                self._push(
                    self.now + self.params.network.disk_ms,
                    _PERSISTED,
                    host.key,
                    (effect.token, host.incarnation),
                )
            elif isinstance(effect, Deliver):
                self._deliver(host, effect.block, effect.certificate)
                if self.violation is not None:
                    return
            elif isinstance(effect, RequestStateTransfer):
                self._state_transfer(host, effect)

    def _send(self, host: _Host, dst: NodeId, message: object) -> None:
        targets = self.instances_of.get(dst)
        if targets is None:
            return
        sender = host.node
        outgoing = [message] if host.adversary is None else host.adversary.rewrite(dst, message)
        route = self.network.route
        now = self.now
        push = self._push
        for m in outgoing:
            for target in targets:
                for delay in route(host.key, target):
                    self.messages += 1
                    push(now + delay, _MSG, target, sender, m)

    def _deliver(self, host: _Host, block: Block, certificate: QuorumCertificate) -> None:
        if self.trace is not None:
            self._log(f"deliver {host.key} {describe(block)} {describe(certificate)}")
        if not host.correct:
            if block.header.height == len(host.chain) + 1:
                host.chain.append(block)
                host.certs.append(certificate)
                self._execute_block(host, block)
            return
        before = self.checker.height
        violation, new = self.checker.check_delivery(
            host.key,
            host.chain,
            block,
            certificate,
            self.now,
            may_redeliver=host.may_redeliver,
        )
        if violation is not None:
            self._violate(violation)
            return
        if new:
            host.chain.append(block)
            host.certs.append(certificate)
            host.may_redeliver = False
            if self.checker.height > before:
                self.workload.on_commit(block.transactions, self.now)
            self._execute_block(host, block)
        else:
            self._report_executed(host, block.height)

    def _violate(self, violation: Violation) -> None:
        self.violation = violation
        self._log(
            f"VIOLATION {violation.kind} {violation.node} h={violation.height}: {violation.detail}"
        )

    def _execute_block(self, host: _Host, block: Block) -> None:
        """Execute a newly delivered block (state root first) and tell the replica."""
        executor = host.executor
        if executor is None:
            return  # a Byzantine host whose execution already failed: it gets no more roots
        try:
            execution = executor.execute(block)
        except ValidationError as exc:
            if host.correct:
                self._violate(Violation("state-root", self.now, host.key, block.height, str(exc)))
            host.executor = None
            return
        host.roots.append(execution.state_root)
        self._report_executed(host, block.height)

    def _report_executed(self, host: _Host, height: int) -> None:
        """Queue ``Executed`` for the block at ``height`` of the host's chain, now."""
        if height < 1 or height >= len(host.roots):
            return
        block = host.chain[height - 1]
        event = Executed(block.height, block.block_hash, host.roots[height])
        self._push(self.now, _EXECUTED, host.key, host.incarnation, event)

    def _state_transfer(self, host: _Host, request: RequestStateTransfer) -> None:
        """Serve ``request`` from a random qualified peer; request and answer cross the network.

        A peer qualifies if it is up, reachable through the current partition and
        holds ``from_height``. If the request or the answer is lost on its link (or
        no peer qualifies) the replica gets ``BlocksFetched(())`` after a timeout.
        """
        start = max(int(request.from_height), 1)
        network = self.network
        candidates = [
            other
            for peer in request.peers
            for other in (self.hosts[k] for k in self.instances_of.get(peer, ()))
            if other.up
            and other.key != host.key
            and len(other.chain) >= start
            and network.reachable(host.key, other.key)
        ]
        blocks: tuple[tuple[Block, QuorumCertificate], ...] = ()
        delay = 2 * network.params.max_base_ms + network.params.max_latency_ms
        server_key = "-"
        if candidates:
            server = candidates[self._net_rng.randrange(len(candidates))]
            server_key = server.key
            there = network.route(host.key, server.key)
            back = network.route(server.key, host.key) if there else []
            if there and back:
                end = start - 1 + network.params.fetch_batch
                blocks = tuple(
                    zip(server.chain[start - 1 : end], server.certs[start - 1 : end], strict=True)
                )
                blocks = self._tamper_answer(server, blocks)
                delay = there[0] + back[0] + len(blocks) // 16
        self._log(f"fetch {host.key} from={start} server={server_key} got={len(blocks)}")
        self._push(self.now + delay, _FETCHED, host.key, host.incarnation, blocks)

    def _tamper_answer(
        self, server: _Host, blocks: tuple[tuple[Block, QuorumCertificate], ...]
    ) -> tuple[tuple[Block, QuorumCertificate], ...]:
        """A Byzantine server with ``tamper`` corrupts one block of its answer."""
        adversary = server.adversary
        if adversary is None or "tamper" not in adversary.behaviours or not blocks:
            return blocks
        i = self._adv_rng.randrange(len(blocks))
        block, cert = blocks[i]
        return (*blocks[:i], (adversary.tampered_block(block), cert), *blocks[i + 1 :])

    # -- lifecycle -------------------------------------------------------------

    def _start(self, host: _Host, persisted: dict[str, bytes]) -> None:
        host.incarnation += 1
        host.timers.clear()
        try:
            replica = self.profile.factory(host.config, persisted)
            host.replica = replica
            host.up = True
            effects = replica.start(self.now)
        except Exception:
            self._replica_raised(host, "start")
            return
        self._execute(host, effects)
        self._report_executed(host, replica.committed_height)

    def _crash(self, node: NodeId) -> None:
        for key in self.instances_of[node]:
            host = self.hosts[key]
            host.up = False
            host.replica = None
            host.timers.clear()

    def _restart(self, node: NodeId, wipe: bool) -> None:
        for key in self.instances_of[node]:
            host = self.hosts[key]
            if host.up:
                continue
            if wipe:
                host.store.clear()
                host.chain.clear()
                host.certs.clear()
                host.reset_execution()
            host.may_redeliver = True
            self._start(host, dict(host.store))

    def _fault(self, action: str, fault: object) -> None:
        self._log(f"fault {action} {describe(fault)}")
        if isinstance(fault, CrashFault):
            if action == "crash":
                self._crash(fault.node)
            else:
                self._restart(fault.node, fault.wipe)
        elif isinstance(fault, PartitionFault):
            self.network.set_partition(fault if action == "on" else None)
        elif isinstance(fault, LinkFault):
            if action == "on":
                self.network.add_link_fault(fault)
            else:
                self.network.remove_link_fault(fault)
        elif action == "heal":
            self.height_at_heal = self.checker.height

    # -- clients -----------------------------------------------------------------

    def _submit(self, _unused: object) -> None:
        if self.now >= self._submit_until:
            return
        index, tx = self.workload.new_transaction(self.now)
        target = self.workload.pick_target()
        self._client_request(target, index, tx)
        self._push(self.now + self.workload.next_gap_ms(), _SUBMIT, None)

    def _retry(self, packed: tuple[int, str]) -> None:
        """Not committed after ``retry_ms``: send to every replica (as PBFT clients do)."""
        index, _last = packed
        if self.workload.is_committed(index):
            return
        tx = self.workload.txs[index]
        for target in self.workload.targets:
            self._client_request(target, index, tx, retry=False)
        self._push(self.now + self.params.workload.retry_ms, _RETRY, (index, "*"))

    def _client_request(
        self, target: str, index: int, tx: Transaction, *, retry: bool = True
    ) -> None:
        host = self.hosts[target]
        if self.trace is not None:
            self._log(f"submit {target} tx{index} {describe(tx)}")
        if host.up:
            self._step(host, ClientRequest(tx))
        if retry:
            self._push(self.now + self.params.workload.retry_ms, _RETRY, (index, target))
