"""Read beside the tutorial: its names, its SwanLab calls, its optimizer, where a reader looks."""

import inspect
import re
import subprocess
import sys

import numpy as np
import torch

import dqn_cartpole as dqn
from conftest import REPO

# The keys of the tutorial's swanlab.init(config={...}), in its order.
TUTORIAL_KEYS = ["state_dim", "action_dim", "batch_size", "gamma", "epsilon", "update_target_freq"]
TUTORIAL_KEYS += ["replay_buffer_size", "learning_rate", "episode", "epsilon_start", "epsilon_end"]
TUTORIAL_KEYS += ["epsilon_decay"]


def lesson() -> str:
    text = (REPO / "dqn_cartpole.py").read_text()
    return text[: text.index("# PLUMBING")]


def test_the_swanlab_config_holds_every_key_of_the_tutorials(small_run):
    cwd, _ = small_run
    (config_file,) = (cwd / "swanlog").glob("run-*/files/config.yaml")
    keys = set(re.findall(r"^([a-z_]+):", config_file.read_text(), flags=re.M))
    assert set(TUTORIAL_KEYS) <= keys, set(TUTORIAL_KEYS) - keys


def test_the_lesson_makes_the_tutorials_calls_itself():
    text = lesson()
    for call in ("swanlab.init(", "swanlab.log(", "optim.Adam(", "step=episode"):
        assert call in text, call
    for chart in ("train/reward", "train/epsilon", "eval/best_avg_reward", "test/reward"):
        assert f'"{chart}"' in text, chart
    assert len(text.splitlines()) <= 340


def test_each_changed_default_names_the_tutorials_value_beside_it():
    source = inspect.getsource(dqn.Config)
    for name, value in dqn.TUTORIAL_SETTINGS.items():
        assert re.search(rf"^    {name}: .*  # .*\(tutorial: {value:g}\)", source, flags=re.M), name


def test_each_settings_comment_in_config_is_its_help_line():
    helps = dqn.setting_help()
    assert sorted(helps) == sorted(f.name for f in dqn.fields(dqn.Config))
    result = subprocess.run(
        [sys.executable, str(REPO / "dqn_cartpole.py"), "--help"], capture_output=True, text=True
    )
    one_line = " ".join(result.stdout.split())
    assert "Adam's step size (tutorial: 0.001) (default: 0.003)" in one_line
    assert all(" ".join(text.split()) in one_line for text in helps.values())


def test_the_greedy_action_is_the_same_with_or_without_numpy():
    agent = dqn.DQNAgent(4, 2, dqn.Config())
    states = np.random.default_rng(5).normal(size=(300, 4)).astype(np.float32)
    with torch.no_grad():  # shift Q(s, 1) so that each action is best for half of the states
        gaps = (agent.q_net(torch.as_tensor(states)) @ torch.tensor([-1.0, 1.0])).sort().values
        agent.q_net.fc[-1].bias[1] -= gaps[149:151].mean()
    fast = [agent.greedy_action(s) for s in states]
    agent.numpy_greedy = None  # the tutorial's own line: q_net(state).argmax()
    assert [agent.greedy_action(s) for s in states] == fast
    assert 0 < sum(fast) < len(fast), "both actions must occur"


def test_the_adam_is_torchs_own_with_its_settings_and_state():
    agent = dqn.DQNAgent(4, 2, dqn.Config(learning_rate=0.002))
    assert type(agent.optimizer) is torch.optim.Adam
    assert agent.optimizer.param_groups[0]["lr"] == 0.002  # the tutorial logs it from here
