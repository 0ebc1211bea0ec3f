"""A quick run of the seed benchmark itself: it must run the script and report what it left."""

import subprocess
import sys

import dqn_cartpole as dqn
from conftest import REPO, clean_env


def test_the_seed_benchmark_prints_a_row_per_seed_and_the_medians(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "seeds.py"), "--seeds", "3", "4",
         "--jobs", "1", "--eval-episodes", "2", "--workdir", str(tmp_path / "runs"),
         "--", "--episodes", "2", "--eval-every", "1", "--no-video", "--swanlab-mode", "disabled"],
        env=clean_env(tmp_path),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert [row.split("|")[1].strip() for row in rows[1:]] == ["3", "4", "**median**"]
    # Two episodes cannot solve CartPole: the table must say so rather than invent a time.
    assert rows[-1].split("|")[2].strip() == "**0/2**"
    for seed in (3, 4):
        assert (tmp_path / "runs" / f"seed-{seed}" / "output" / "metrics.csv").is_file()


def test_the_video_benchmark_times_each_command_and_reports_peak_memory(tmp_path):
    model = tmp_path / "model.pth"
    dqn.DQNAgent(4, 2, dqn.Config()).save_model(model)
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "video.py"), "--runs", "1",
         "--model", str(model), "--workdir", str(tmp_path / "runs"),
         "--", "--episodes", "2", "--test-episodes", "1", "--max-test-steps", "30",
         "--swanlab-mode", "disabled"],
        env=clean_env(tmp_path),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split("|") for line in result.stdout.splitlines() if line.startswith("| ")]
    assert [row[1].strip()[:11] for row in rows[1:]] == ["video phase", "whole run: "]
    for row in rows[1:]:
        assert 0 < float(row[4]) < 120 and 50 < float(row[6]) < 2000  # seconds, megabytes
    assert list((tmp_path / "runs").glob("run0-cmd0/dqn_videos/rl-video-episode-0.mp4"))
