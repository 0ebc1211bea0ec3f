"""What a learner watches: the GIF on the dashboard, --play, `swanlab watch`, cloud fallback."""

import json
import shutil
import socket
import subprocess
import time
import urllib.request

import pytest

import dqn_cartpole as dqn
from conftest import clean_env, read_metrics, run_script, swanlab_metric


def test_first_test_episode_becomes_a_small_gif_on_the_dashboard(small_run):
    cwd, _ = small_run
    gif = cwd / "dqn_videos" / "rl-video-episode-0.gif"
    assert gif.read_bytes()[:6] == b"GIF89a"
    assert gif.stat().st_size < 1_000_000
    (logged,) = swanlab_metric(cwd / "swanlog", "test/video")
    stored = list((cwd / "swanlog").glob(f"run-*/media/*/{logged[0]}"))
    assert stored and all(copy.read_bytes() == gif.read_bytes() for copy in stored)


def test_a_gif_failure_is_one_warning_and_the_run_still_succeeds(
    tmp_path, no_swanlab_login, monkeypatch, capsys
):
    def broken_gif(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(dqn, "save_gif", broken_gif)
    args = ["--episode", "1", "--test-episodes", "1", "--max-test-steps", "10"]
    assert dqn.main([*args, "--swanlab-mode", "disabled"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["warning: no GIF for the dashboard (OSError: disk full)"]
    assert (tmp_path / "dqn_videos" / "rl-video-episode-0.mp4").stat().st_size > 0


def test_play_replays_a_saved_model_without_training(small_run, tmp_path):
    shutil.copy(small_run[0] / "output" / "best_model.pth", tmp_path / "model.pth")
    result = run_script(
        tmp_path, "--play", "model.pth", "--test-episodes", "2", "--max-test-steps", "30"
    )
    assert result.returncode == 0, result.stderr
    assert "test episode 0 | reward" in result.stdout
    assert "test episode 1 | reward" in result.stdout
    assert "episode    1 |" not in result.stdout  # no training
    assert not (tmp_path / "output").exists()
    videos = sorted(p.name for p in (tmp_path / "dqn_videos").glob("rl-video-*"))
    assert videos == ["rl-video-episode-0.gif", "rl-video-episode-0.mp4", "rl-video-episode-1.mp4"]
    # A SwanLab run of its own, with the replayed rewards.
    assert len(swanlab_metric(tmp_path / "swanlog", "test/reward")) == 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)["data"]


def test_swanlab_watch_serves_the_runs_curves_on_loopback(small_run):
    cwd, result = small_run
    # The command as printed, pasted into a shell: the run's folder has a space in its name.
    line = next(line for line in result.stdout.splitlines() if line.startswith("Dashboard: "))
    command = line.removeprefix("Dashboard: ")
    port = free_port()
    server = subprocess.Popen(
        ["bash", "-c", f"exec {command} --host 127.0.0.1 --port {port}"],
        cwd=cwd,
        env=clean_env(cwd),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/api/v1"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                project = get_json(f"{base}/project")
                break
            except OSError:
                assert time.monotonic() < deadline, "swanlab watch did not answer"
                assert server.poll() is None, "swanlab watch exited"
                time.sleep(0.5)
        (experiment,) = project["experiments"]
        assert experiment["name"] == "DQN-CartPole-v1"
        charts = get_json(f"{base}/experiment/{experiment['id']}/chart")["charts"]
        names = {chart["name"] for chart in charts}
        assert {"train/reward", "eval/avg_reward", "train/epsilon", "train/loss"} <= names
        assert "test/video" in names
        served = get_json(f"{base}/experiment/{experiment['id']}/tag/train/reward")["list"]
        rows = read_metrics(cwd / "output" / "metrics.csv")
        assert [p["data"] for p in served] == [float(r["train_reward"]) for r in rows]
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_cloud_failure_falls_back_to_a_local_dashboard_in_one_line(tmp_path):
    # A saved-looking key, and a SwanLab host that refuses connections (nothing leaves here).
    closed = free_port()
    result = run_script(
        tmp_path,
        *["--episode", "1", "--test-episodes", "1", "--no-video"],
        SWANLAB_API_KEY="k" * 21,
        SWANLAB_API_HOST=f"http://127.0.0.1:{closed}",
    )
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "SwanLab" in line]
    assert len(warnings) == 1 and "logging locally instead" in warnings[0]
    assert f"swanlab watch {tmp_path / 'swanlog'}" in result.stdout
    assert len(swanlab_metric(tmp_path / "swanlog", "train/reward")) == 1


@pytest.mark.parametrize("mode", ["disabled"])
def test_play_with_swanlab_disabled_writes_no_swanlab_run(small_run, tmp_path, mode):
    shutil.copy(small_run[0] / "output" / "best_model.pth", tmp_path / "model.pth")
    result = run_script(tmp_path, "--play", "model.pth", "--no-video", "--swanlab-mode", mode)
    assert result.returncode == 0, result.stderr
    assert "SwanLab: disabled" in result.stdout
    assert not (tmp_path / "swanlog").exists()
