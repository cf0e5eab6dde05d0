"""The paper's figure 9 in the simulator: the shape of ``belep sim experiment failures``.

Virtual time only: committed blocks per virtual second after each failure.
Local validators fail one after another (2 s apart): PBFT(7) stops at the 3rd
failure, Raft(7) at the 4th, HPBFT(4 seats + 3 standbys) still commits after
the 4th (each silent seat was handed to a standby) and stops at the 5th; every
run stays safe (no fork, every certificate valid). All at once, HPBFT(4+3)
stops at the 2nd failure: that is the trade-off the spec states.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from belep.bench.failures import SETUPS, FailureParams, run_mode
from belep.cli import app

FAST = FailureParams(interval_ms=2000, settle_ms=800)


def _rates(rows: list[dict[str, object]]) -> list[float]:
    return [float(r["committed_per_s"]) for r in sorted(rows, key=lambda r: int(r["failures"]))]  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def sequential() -> dict[str, list[float]]:
    out = {}
    for setup in SETUPS:
        rows = run_mode(setup, "sequential", FAST)
        assert all(r["safe"] for r in rows), f"{setup.label}: a safety violation"
        out[setup.label] = _rates(rows)
    return out


def test_pbft_stops_at_the_third_failure(sequential: dict[str, list[float]]) -> None:
    rates = sequential["PBFT(7)"]
    assert min(rates[:3]) > 10
    assert rates[3:] == [0.0, 0.0, 0.0, 0.0]


def test_raft_stops_at_the_fourth_failure(sequential: dict[str, list[float]]) -> None:
    rates = sequential["Raft(7)"]
    assert min(rates[:4]) > 10
    assert rates[4:] == [0.0, 0.0, 0.0]


def test_hpbft_still_commits_after_the_fourth_failure(sequential: dict[str, list[float]]) -> None:
    rates = sequential["HPBFT(4+3)"]
    assert min(rates[:5]) > 10
    assert rates[5:] == [0.0, 0.0]


def test_hpbft_fails_at_once_like_a_four_seat_domain() -> None:
    rows = run_mode(
        SETUPS[2], "simultaneous", FailureParams(interval_ms=1500, settle_ms=700, max_failures=3)
    )
    assert all(r["safe"] for r in rows)
    rates = _rates(rows)
    assert min(rates[:2]) > 10
    assert rates[2:] == [0.0, 0.0]


def test_the_command_prints_one_row_per_protocol_failure_count_and_mode(tmp_path: object) -> None:
    result = CliRunner().invoke(
        app,
        [
            "sim",
            "experiment",
            "failures",
            "--json",
            "--protocols",
            "hpbft",
            "--modes",
            "sequential",
            "--interval",
            "1500",
            "--settle",
            "700",
            "--no-normal-case",
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert [(r["protocol"], r["failures"], r["mode"]) for r in out["rows"]] == [
        ("HPBFT(4+3)", k, "sequential") for k in range(7)
    ]
    assert all("committed_per_s" in r for r in out["rows"])
