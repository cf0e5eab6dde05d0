"""The local launcher's stop on a signal (``belep up``, ``belep demo``), without processes."""

from __future__ import annotations

import signal
from pathlib import Path

from belep.deploy.launcher import LocalNetwork, run_until_signal, unusual_statuses


def test_a_signal_ends_the_run_stops_the_network_and_restores_the_handlers(
    tmp_path: Path,
) -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    heard: list[str] = []
    reached_end = False
    with run_until_signal(LocalNetwork(tmp_path), lambda: heard.append("stop")) as statuses:
        signal.raise_signal(signal.SIGTERM)
        reached_end = True
    assert heard == ["stop"]
    assert not reached_end
    assert statuses == {}  # a network without nodes: stopped, nothing to report
    assert {s: signal.getsignal(s) for s in before} == before


def test_a_run_without_a_signal_stops_the_network_too(tmp_path: Path) -> None:
    heard: list[str] = []
    with run_until_signal(LocalNetwork(tmp_path), lambda: heard.append("stop")) as statuses:
        pass
    assert heard == []
    assert statuses == {}


def test_unusual_statuses_leave_out_clean_stops() -> None:
    statuses = {"a": 0, "b": None, "c": -signal.SIGTERM, "d": 3, "e": -signal.SIGKILL}
    assert unusual_statuses(statuses) == {"d": 3, "e": -signal.SIGKILL}
