"""What a learner sees: the console with and without a terminal, the charts that explain the
learning (train/q_value, eval/policy), the tutorial's settings side by side, two READMEs."""

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios

import numpy as np
import pytest
import torch

import dqn_cartpole as dqn
from conftest import (
    REPO,
    SCRIPT,
    clean_env,
    read_metrics,
    run_script,
    swanlab_entries,
    swanlab_metric,
)

SHORT = ["--episode", "30", "--test-episodes", "1", "--max-test-steps", "20", "--no-video"]


def run_in_terminal(cwd, *args: str) -> tuple[int, str]:
    """Run the script with a pseudo-terminal of 140 × 40 as its stdout and stderr."""
    parent, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 140, 0, 0))
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        cwd=cwd,
        env=clean_env(cwd),
        stdin=subprocess.DEVNULL,
        stdout=child,
        stderr=child,
    )
    os.close(child)
    output = b""
    while True:
        try:
            chunk = os.read(parent, 65536)
        except OSError:  # the terminal closes when the process ends
            break
        if not chunk:
            break
        output += chunk
    os.close(parent)
    return process.wait(timeout=60), output.decode()


def test_in_a_terminal_a_progress_bar_runs_below_one_line_per_evaluation(tmp_path):
    code, output = run_in_terminal(tmp_path, *SHORT, "--swanlab-mode", "disabled")
    assert code == 0, output
    screen = output.replace("\r\n", "\n")
    assert "\r" in screen  # the bar redraws itself in place
    bar = screen.split("\r")
    assert any(re.search(r"episode 30/30 .* ε [\d.]+ .* steps \d+ .* steps/s", s) for s in bar)
    assert any("eval" in s and "best" in s and "episode 2" in s for s in bar)
    kept = [line for line in screen.split("\n") if line.strip()]
    evaluations = [line for line in kept if re.match(r"\S*episode +\d+ \|", line.split("\r")[-1])]
    evaluated = [
        r for r in read_metrics(tmp_path / "output" / "metrics.csv") if r["eval_avg_reward"]
    ]
    assert len(evaluations) == len(evaluated) >= 3, kept  # 10, 20, 30 and any early ones
    assert "Best evaluation:" in screen and "Total time:" in screen


def test_without_a_terminal_only_the_evaluations_are_printed_and_no_carriage_return(tmp_path):
    result = run_script(tmp_path, *SHORT, "--episode", "100", "--swanlab-mode", "disabled")
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stdout + result.stderr
    lines = result.stdout.splitlines()
    evaluated = [int(r["episode"]) for r in read_metrics(tmp_path / "output" / "metrics.csv")
                 if r["eval_avg_reward"]]  # fmt: skip
    progress = [line for line in lines if line.startswith("episode ")]
    assert [int(line.split()[1]) for line in progress] == evaluated
    assert all("| eval " in line and "| best " in line for line in progress)
    assert len(lines) <= 40, lines
    assert "Best evaluation:" in result.stdout and result.stderr == ""


def test_the_q_value_chart_is_the_mean_q_value_of_each_episodes_training_batches(small_run):
    cwd, _ = small_run
    rows = read_metrics(cwd / "output" / "metrics.csv")
    expected = [float(r["q_value"]) for r in rows if r["q_value"]]
    assert expected and expected == [float(r["q_value"]) for r in rows if r["loss"]]
    assert swanlab_metric(cwd / "swanlog", "train/q_value") == pytest.approx(expected)


def test_each_evaluation_puts_an_image_of_the_greedy_policy_on_the_dashboard(small_run):
    cwd, _ = small_run
    logged = swanlab_entries(cwd / "swanlog", "eval/policy")
    rows = read_metrics(cwd / "output" / "metrics.csv")
    evaluated = [int(r["episode"]) for r in rows if r["eval_avg_reward"]]
    assert [entry["index"] for entry in logged] == evaluated == [1, 2, 3]
    assert [entry["more"][0]["caption"] for entry in logged] == [f"episode {e}" for e in evaluated]
    for entry in logged:
        (name,) = entry["data"]
        stored = list((cwd / "swanlog").glob(f"run-*/media/*/{name}"))
        assert stored and all(image.read_bytes()[:4] == b"\x89PNG" for image in stored)
        assert all(image.stat().st_size < 50_000 for image in stored)


def test_an_evaluation_pictures_the_policy_only_if_the_network_changed_since_the_last_picture(
    tmp_path, monkeypatch
):
    pictured = []
    monkeypatch.setattr(dqn.RunLog, "chart", lambda self, data, step: pictured.append(step))
    net, config = dqn.QNetwork(4, 2), dqn.Config(output_dir=str(tmp_path), swanlab_mode="disabled")
    with dqn.RunLog(config, started=0.0) as log:
        dqn.start_swanlab(config, log)
        for episode in (10, 20, 30):  # paused from 10 to 20; learning again by 30
            if episode == 30:
                with torch.no_grad():
                    net.fc[0].bias.add_(0.1)
            log.episode(episode, {"train/reward": 20.0}, length=20)
            log.evaluation(episode, {"eval/avg_reward": 20.0, "eval/best_avg_reward": 20.0}, net)
    assert pictured == [10, 30]


def network_that_always_pushes(action: int) -> dqn.QNetwork:
    net = dqn.QNetwork(4, 2)
    with torch.no_grad():
        net.fc[4].weight.zero_()
        net.fc[4].bias.copy_(torch.tensor([1.0, 0.0] if action == 0 else [0.0, 1.0]))
    return net


def pixels_of(image, colour) -> int:
    return int((np.asarray(image) == colour).all(axis=2).sum())


@pytest.mark.parametrize("action", [0, 1])
def test_the_policy_image_of_a_network_that_always_pushes_one_way_shows_only_that_way(action):
    net = network_that_always_pushes(action)
    calls = []
    net.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape))
    image = dqn.policy_image(net)
    assert calls == [(64 * 64, 4)]  # one batched forward pass for the whole map
    chosen, other = (dqn.RIGHT, dqn.LEFT) if action == 1 else (dqn.LEFT, dqn.RIGHT)
    map_area = (3 * 64) ** 2
    assert pixels_of(image, chosen) > 0.95 * map_area  # the map, less its two white axes
    assert pixels_of(image, other) < 0.01 * map_area  # the legend's square only


def test_the_policy_image_splits_where_the_network_changes_its_mind():
    # Q(right) = relu(angle), Q(left) = relu(-angle): push toward the side the pole leans to.
    net = dqn.QNetwork(4, 2)
    with torch.no_grad():
        for layer in (net.fc[0], net.fc[2], net.fc[4]):
            layer.weight.zero_()
            layer.bias.zero_()
        net.fc[0].weight[0, 2], net.fc[0].weight[1, 2] = 1.0, -1.0
        net.fc[2].weight[0, 0], net.fc[2].weight[1, 1] = 1.0, 1.0
        net.fc[4].weight[1, 0], net.fc[4].weight[0, 1] = 1.0, 1.0
    image = np.asarray(dqn.policy_image(net))
    rows = [row for row in image if (row == dqn.LEFT).all(axis=1).sum() > 50]
    assert len(rows) > 100, "the map's rows have a left half"
    for row in rows[:20]:  # the map's top rows, above the legend: left first, then right
        left = np.flatnonzero((row == dqn.LEFT).all(axis=1))
        right = np.flatnonzero((row == dqn.RIGHT).all(axis=1))
        assert left.max() < right.min() and abs(len(left) - len(right)) <= 2


def test_tutorial_settings_sets_the_tutorials_values_and_its_own_experiment_name():
    config = dqn.parse_args(["--tutorial-settings"])
    assert (config.learning_rate, config.batch_size) == (0.001, 64)
    assert (config.epsilon_decay, config.solved_reward) == (0.995, 0.0)
    assert config.gradient_steps == 1
    assert config.experiment_name == "DQN-CartPole-v1-tutorial-settings"
    assert dqn.parse_args([]).learning_rate == 0.003  # and nothing changes without it


def test_a_flag_given_beside_tutorial_settings_wins():
    argv = ["--tutorial-settings", "--batch-size", "32", "--experiment-name", "mine"]
    config = dqn.parse_args(argv)
    assert (config.batch_size, config.learning_rate) == (32, 0.001)
    assert config.experiment_name == "mine-tutorial-settings"
    assert dqn.parse_args(["--batch-size", "32", "--tutorial-settings"]).batch_size == 32


def test_tutorial_settings_values_reach_best_model_json_and_the_swanlab_config(tmp_path):
    args = ["--tutorial-settings", "--episode", "2", "--eval-every", "1", "--lr", "0.0005"]
    result = run_script(tmp_path, *args, "--test-episodes", "0", "--no-video")
    assert result.returncode == 0, result.stderr
    used = json.loads((tmp_path / "output" / "best_model.json").read_text())["config"]
    assert (used["learning_rate"], used["batch_size"], used["epsilon_decay"]) == (0.0005, 64, 0.995)
    assert used["solved_reward"] == 0 and used["experiment_name"].endswith("-tutorial-settings")
    (config_file,) = (tmp_path / "swanlog").glob("run-*/files/config.yaml")
    assert "value: 0.0005" in config_file.read_text() and "value: 64" in config_file.read_text()


def flags_in_help() -> set[str]:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60
    )
    return set(re.findall(r"(--[a-z][a-z-]+)", result.stdout)) - {"--help"}


@pytest.mark.parametrize("readme", ["README.md", "README.zh-CN.md"])
def test_each_settings_page_names_every_flag_and_each_readme_links_the_other(readme):
    page = REPO / "docs" / readme.replace("README", "settings")
    missing = sorted(flag for flag in flags_in_help() if f"`{flag}" not in page.read_text())
    assert not missing, f"{page.name} does not name {missing}"
    text = (REPO / readme).read_text()
    other = "README.zh-CN.md" if readme == "README.md" else "README.md"
    assert f"]({other})" in "\n".join(text.splitlines()[:5]), "a link to the other, at the top"


def test_in_a_kernel_without_ipywidgets_the_bar_is_text_redrawn_at_most_once_a_second(
    monkeypatch, capsys
):
    import tqdm.notebook

    monkeypatch.setattr(dqn, "in_notebook", lambda: True)
    monkeypatch.setattr(tqdm.notebook, "IProgress", None)  # what tqdm finds without ipywidgets
    bar = dqn.progress_bar(10, live=True)
    assert type(bar) is dqn.tqdm and not bar.disable and bar.mininterval == 1
    bar.close()
    assert "episode 0/10" in capsys.readouterr().out
