"""Quick runs of the benchmarks themselves: each must run the script and report what it saw."""

import re
import sys

import dqn_cartpole as dqn
from conftest import REPO, run_command

LAST_STDOUT = [""]  # what the last benchmark printed besides its table


def run_benchmark(name: str, cwd, *args: str) -> list[list[str]]:
    """Run benchmarks/`name` with `args`; the cells of its markdown table, header first."""
    result = run_command(cwd, [sys.executable, str(REPO / "benchmarks" / name), *args])
    assert result.returncode == 0, result.stdout + result.stderr
    LAST_STDOUT[:] = [result.stdout]
    lines = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.split("|")[1:-1]] for line in lines]


def test_the_seed_benchmark_prints_a_row_per_seed_and_the_medians(tmp_path):
    rows = run_benchmark(
        "seeds.py", tmp_path, "--seeds", "3", "4", "--jobs", "1", "--eval-episodes", "2",
        "--workdir", str(tmp_path / "runs"),
        "--", "--episode", "2", "--eval-every", "1", "--no-video", "--swanlab-mode", "disabled",
    )  # fmt: skip
    assert [row[0] for row in rows[1:]] == ["3", "4", "**median**"]
    assert rows[0][-4:] == [
        "test episodes held to 1500",
        "20,000-step episodes held",
        "peak Q",
        "peak loss",
    ]
    assert all(row[-4].endswith("/3") and row[-3].endswith("/5") for row in rows[1:3])
    # Two episodes cannot solve CartPole: the table must say so rather than invent a time.
    assert rows[-1][1] == "**0/2**"
    for seed in (3, 4):
        assert (tmp_path / "runs" / f"seed-{seed}" / "output" / "metrics.csv").is_file()


def test_the_video_benchmark_times_each_command_and_reports_peak_memory(tmp_path):
    model = tmp_path / "model.pth"
    dqn.DQNAgent(4, 2, dqn.Config()).save_model(model)
    rows = run_benchmark(
        "video.py", tmp_path, "--runs", "1", "--model", str(model),
        "--workdir", str(tmp_path / "runs"),
        "--", "--episode", "2", "--test-episodes", "1", "--max-test-steps", "30",
        "--swanlab-mode", "disabled",
    )  # fmt: skip
    assert [row[0][:11] for row in rows[1:]] == ["video phase", "the same wi", "whole run: "]
    for row in rows[1:]:
        assert 0 < float(row[3]) < 120 and 50 < float(row[5]) < 2000  # seconds, megabytes
    assert list((tmp_path / "runs").glob("run0-cmd0/dqn_videos/rl-video-episode-0.mp4"))
    assert not list((tmp_path / "runs").glob("run0-cmd1/dqn_videos/*.mp4"))  # --no-video
    console = (tmp_path / "runs" / "run0-cmd0" / "console.log").read_text()
    frames = sum(int(r) + 1 for r in re.findall(r"test episode 0 \| reward (\d+)", console))
    assert "A video frame: " in LAST_STDOUT[0] and f"({frames} frames a run" in LAST_STDOUT[0]
