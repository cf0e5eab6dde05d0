"""`belep sim` and `belep bench sim` from the command line, on the real Raft replica."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from belep.cli import app

runner = CliRunner()
FAST = ["--duration", "800", "--stable", "1500", "--rate", "300"]


def sim(*args: str) -> tuple[int, dict[str, object]]:
    result = runner.invoke(app, ["sim", *args, "--json"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, json.loads(result.stdout)


def test_json_summary_within_the_model() -> None:
    code, out = sim("--protocol", "raft", "--nodes", "3", "--seeds", "3", *FAST)
    assert code == 0
    for key in (
        "protocol",
        "nodes",
        "seeds",
        "safety_violations",
        "liveness_failures",
        "committed_blocks",
        "virtual_latency_ms",
    ):
        assert key in out
    assert out["protocol"] == "raft"
    assert out["nodes"] == 3
    assert out["seeds"] == 3
    assert out["safety_violations"] == 0
    assert out["liveness_failures"] == 0
    blocks = out["committed_blocks"]
    assert isinstance(blocks, dict)
    assert 0 < blocks["min"] <= blocks["median"] <= blocks["max"]
    latency = out["virtual_latency_ms"]
    assert isinstance(latency, dict)
    assert 0 < latency["p50"] <= latency["p99"]
    assert "replay_seed" not in out


@pytest.mark.slow
def test_a_planted_bug_prints_a_replayable_seed_and_a_shrunk_schedule(tmp_path: Path) -> None:
    bug = ["--planted-bug", "raft_truncate_without_conflict"]
    base = ["--protocol", "raft", "--nodes", "3", *FAST, *bug]
    code, out = sim(*base, "--seeds", "10")
    assert code == 1
    assert isinstance(out["safety_violations"], int)
    assert out["safety_violations"] >= 1
    seed = out["replay_seed"]
    failure = out["first_failure"]
    assert isinstance(failure, dict)
    assert failure["seed"] == seed
    assert f"--first-seed {seed} --seeds 1" in failure["replay"]
    assert failure["shrunk_faults"] <= failure["original_faults"]
    assert "VIOLATION" in failure["trace_tail"][-1]
    focus = failure["trace_focus"]
    assert "VIOLATION" in focus[-1]
    assert any(" deliver " in line for line in focus)
    # The printed seed replays the violation ...
    code, again = sim(*base, "--first-seed", str(seed), "--seeds", "1", "--no-shrink")
    assert code == 1
    assert again["safety_violations"] == 1
    # ... and so does the shrunk schedule.
    schedule = tmp_path / "shrunk.json"
    schedule.write_text(json.dumps(failure["shrunk_schedule"]))
    code, shrunk = sim(
        *base, "--first-seed", str(seed), "--seeds", "1", "--schedule", str(schedule)
    )
    assert code == 1
    assert shrunk["safety_violations"] == 1


@pytest.mark.parametrize(
    "args",
    [
        ["--protocol", "raft", "--nodes", "3", "--byzantine", "1"],  # Raft is crash-only
        ["--protocol", "pbft", "--nodes", "4", "--byzantine", "2"],  # f = 1
        ["--protocol", "no-such-protocol"],
        ["--protocol", "raft", "--faults", "crash,meteor"],
    ],
)
def test_requests_outside_the_model_or_unknown_are_refused(args: list[str]) -> None:
    result = runner.invoke(app, ["sim", *args, "--seeds", "1", "--json"])
    assert result.exit_code == 2
    assert "Invalid value" in result.output


def test_beyond_model_reports_safety_only() -> None:
    code, out = sim(
        "--protocol",
        "raft",
        "--nodes",
        "3",
        "--seeds",
        "2",
        "--beyond-model",
        "--faults",
        "crash",
        *FAST,
    )
    assert out["beyond_model"] is True
    assert out["liveness_required"] is False
    assert out["safety_violations"] == 0
    assert code == 0


def test_bench_sim_reports_blocks_per_wall_second() -> None:
    result = runner.invoke(
        app,
        [
            "bench",
            "sim",
            "--protocol",
            "raft",
            "--nodes",
            "3",
            "--seeds",
            "1",
            "--virtual-ms",
            "500",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    (row,) = out["rows"]
    assert row["protocol"] == "raft"
    assert row["nodes"] == 3
    assert row["committed_blocks"] > 0
    assert row["blocks_per_wall_s"] > 0
    assert out["reference_ed25519_verify_per_s"] > 0


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read the schedule file"), ("{x", "the schedule file is not JSON")],
    ids=["missing", "not-json"],
)
def test_a_bad_schedule_file_is_a_clear_error_not_a_traceback(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "schedule.json"
    if content is not None:
        path.write_text(content)
    result = runner.invoke(app, ["sim", "--protocol", "raft", "--schedule", str(path)])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_node_refuses_an_unknown_log_level_before_starting(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["node", "--config", str(tmp_path / "n.toml"), "--log-level", "loud"]
    )
    assert result.exit_code == 2
    assert "loud" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
