"""The real command, run as a learner runs it: files, videos, SwanLab, seeding, imports."""

import json
import shlex
import subprocess
import sys

import pytest
import torch
import yaml

import dqn_cartpole as dqn
from conftest import REPO, read_metrics, run_command, swanlab_charts, swanlab_metric


def run_with_script_imported(cwd, code: str = "") -> subprocess.CompletedProcess:
    """`import dqn_cartpole`, then `code`, in a fresh Python process with a learner's HOME."""
    imported = f"import sys; sys.path.insert(0, {str(REPO)!r}); import dqn_cartpole\n{code}"
    return run_command(cwd, [sys.executable, "-c", imported], timeout=60)


def test_importing_the_script_trains_prints_and_writes_nothing(tmp_path):
    result = run_with_script_imported(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    assert list(tmp_path.iterdir()) == []


def test_training_never_loads_pytorchs_compiler(tmp_path):
    # torch.optim's classes import torch._dynamo (~1 s) on first use; Faster avoids that.
    args = "['--episodes', '3', '--batch-size', '16', '--no-video', '--swanlab-mode', 'disabled']"
    code = f"dqn_cartpole.main({args}); print('torch._dynamo' in sys.modules)"
    result = run_with_script_imported(tmp_path, code)
    assert result.returncode == 0, result.stderr
    assert "loss" in result.stdout  # gradient steps were taken
    assert result.stdout.splitlines()[-1] == "False"


def test_small_run_writes_a_loadable_model_and_its_description(small_run):
    cwd, _ = small_run
    q_net = dqn.load_model(cwd / "output" / "best_model.pth", 4, 2)
    assert q_net(torch.zeros(1, 4)).shape == (1, 2)
    info = json.loads((cwd / "output" / "best_model.json").read_text())
    assert info["seed"] == 42 and info["config"]["episode"] == 3
    assert 1 <= info["episode"] <= 3 and info["eval_avg_reward"] > 0
    assert set(info["versions"]) >= {"python", "torch", "gymnasium", "swanlab"}


def test_small_run_writes_one_metrics_row_per_episode(small_run):
    cwd, _ = small_run
    rows = read_metrics(cwd / "output" / "metrics.csv")
    assert list(rows[0]) == dqn.METRIC_COLUMNS
    assert [int(r["episode"]) for r in rows] == [1, 2, 3]
    assert all(int(r["episode_length"]) == float(r["train_reward"]) for r in rows)
    steps = [int(r["env_steps"]) for r in rows]
    assert steps == sorted(steps) and steps[-1] == sum(int(r["episode_length"]) for r in rows)
    assert all(r["eval_avg_reward"] for r in rows)  # --eval-every 1
    best = [float(r["best_avg_reward"]) for r in rows]
    assert best == [max(float(r["eval_avg_reward"]) for r in rows[: i + 1]) for i in range(3)]


def test_small_run_records_a_test_video(small_run):
    cwd, _ = small_run
    videos = sorted((cwd / "dqn_videos").glob("*.mp4"))
    assert [v.name for v in videos] == ["rl-video-episode-0.mp4", "rl-video-episode-1.mp4"]
    for video in videos:
        assert video.stat().st_size > 1000
        assert video.read_bytes()[4:8] == b"ftyp"  # an MP4 container


def test_small_run_logs_every_metric_to_a_local_swanlab_run(small_run):
    cwd, result = small_run
    swanlog = cwd / "swanlog"
    rows = read_metrics(cwd / "output" / "metrics.csv")
    rewards = [float(r["train_reward"]) for r in rows]
    assert swanlab_metric(swanlog, "train/reward") == rewards
    assert len(swanlab_metric(swanlog, "train/epsilon")) == 3
    # CartPole gives 1 a step: an episode's length is its reward, charted once, as train/reward.
    assert "train/episode_length" not in swanlab_charts(swanlog)
    assert swanlab_metric(swanlog, "eval/avg_reward") == [float(r["eval_avg_reward"]) for r in rows]
    assert len(swanlab_metric(swanlog, "eval/best_avg_reward")) == 3
    assert len(swanlab_metric(swanlog, "test/reward")) == 2
    assert f"swanlab watch {shlex.quote(str(swanlog))}" in result.stdout  # once, quoted


def test_the_swanlab_run_records_library_versions_without_a_pip_listing(small_run):
    cwd, _ = small_run
    (files,) = (cwd / "swanlog").glob("run-*/files")
    config = yaml.safe_load((files / "config.yaml").read_text())
    assert config["versions"]["value"] == dqn.installed_versions()
    # SwanLab's full listing runs `pip list` before the first episode (~0.35 s); the libraries
    # this script depends on are already in the config.
    assert not (files / "requirements.txt").exists()


def test_same_seed_gives_the_same_rewards_and_weights(tmp_path, no_swanlab_login):
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        args = ["--episode", "8", "--eval-every", "4", "--no-video", "--test-episodes", "1"]
        assert dqn.main([*args, "--swanlab-mode", "disabled", "--output-dir", str(out)]) == 0
        rewards = [r["train_reward"] for r in read_metrics(out / "metrics.csv")]
        runs.append((rewards, torch.load(out / "best_model.pth")))
    (rewards_a, weights_a), (rewards_b, weights_b) = runs
    assert rewards_a == rewards_b
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


@pytest.mark.parametrize(
    "flag, env, expected",
    [
        ("auto", {}, "local"),  # no account: a local dashboard, never a login prompt
        ("auto", {"SWANLAB_API_KEY": "x" * 21}, "online"),
        ("auto", {"SWANLAB_MODE": "offline"}, "offline"),
        ("cloud", {}, "online"),
        ("disabled", {"SWANLAB_API_KEY": "x" * 21}, "disabled"),
    ],
)
def test_swanlab_mode_is_chosen_without_asking(no_swanlab_login, monkeypatch, flag, env, expected):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert dqn.resolve_swanlab_mode(flag, dqn.swanlab.Settings()) == expected


def test_auto_mode_uses_the_cloud_after_swanlab_login(no_swanlab_login):
    # What `swanlab login` saves: a netrc entry in the user's SwanLab folder.
    folder = no_swanlab_login / ".swanlab"
    folder.mkdir()
    (folder / ".netrc").write_text(
        "machine https://api.swanlab.cn\n  login https://swanlab.cn\n  password " + "k" * 21 + "\n"
    )
    assert dqn.resolve_swanlab_mode("auto", dqn.swanlab.Settings()) == "online"


def test_a_damaged_swanlab_login_file_means_a_local_run_not_a_crash(no_swanlab_login):
    folder = no_swanlab_login / ".swanlab"
    folder.mkdir()
    (folder / ".netrc").write_text("macro x\n")  # not a valid netrc
    assert dqn.resolve_swanlab_mode("auto", dqn.swanlab.Settings()) == "local"
