"""DQN without experience replay, and without a target network: each switch changes what the
agent learns from, and its run is named for it on the dashboard."""

import json

import numpy as np
import pytest
import torch
import yaml

import dqn_cartpole as dqn
from conftest import run_script


def agent_with(**overrides) -> dqn.DQNAgent:
    torch.manual_seed(0)
    return dqn.DQNAgent(4, 2, dqn.Config(**overrides))


@pytest.mark.parametrize("no_replay", [False, True])
def test_without_replay_each_update_learns_from_the_latest_transitions_in_order(no_replay):
    agent = agent_with(batch_size=8, no_replay=no_replay)
    rng = np.random.default_rng(0)
    for _ in range(100):  # older transitions: random states, action 0
        agent.store_experience(rng.normal(size=4), 0, 1.0, rng.normal(size=4), False)
    latest = np.array([0.1, -0.2, 0.03, 0.4], dtype=np.float32)
    for _ in range(8):  # the latest eight: one state, action 1
        agent.store_experience(latest, 1, 1.0, latest, False)
    with torch.no_grad():
        q_latest = agent.q_net(torch.as_tensor(latest))[1].item()
    _, q_value = agent.train()  # the mean Q(s, a) of the batch it learned from
    if no_replay:
        assert q_value == pytest.approx(q_latest, abs=1e-6)
    else:  # a random batch of 8 from 108 is almost never the latest eight
        assert abs(q_value - q_latest) > 1e-3


def test_the_latest_batch_is_in_the_order_the_transitions_happened_across_the_wrap():
    buffer = dqn.ReplayBuffer(5, 1, np.random.default_rng(0))
    for i in range(7):  # the ring wraps: positions hold 5, 6, 2, 3, 4
        buffer.append([i], 0, float(i), [i + 1], False)
    _, _, rewards, _, _ = buffer.sample(3, latest=True)
    assert rewards.tolist() == [4.0, 5.0, 6.0]


@pytest.mark.parametrize("no_target_net", [False, True])
def test_without_a_target_network_q_net_gives_its_own_td_target(no_target_net):
    agent = agent_with(batch_size=8, update_target_freq=10_000, no_target_net=no_target_net)
    rng = np.random.default_rng(1)
    for _ in range(64):
        agent.store_experience(
            rng.normal(size=4), int(rng.integers(2)), 1.0, rng.normal(size=4), False
        )
    for _ in range(20):  # q_net learns; target_net keeps its first weights
        agent.train()
    next_states = torch.randn(16, 4)
    rewards, alive = torch.ones(16), torch.zeros(16)
    with torch.no_grad():
        from_q = 1.0 + 0.99 * agent.q_net(next_states).max(dim=1).values
        from_target = 1.0 + 0.99 * agent.target_net(next_states).max(dim=1).values
    assert not torch.allclose(from_q, from_target), "the two networks must differ by now"
    expected = from_q if no_target_net else from_target
    assert torch.allclose(agent.td_target(rewards, next_states, alive), expected)


def test_both_switches_reach_best_model_json_the_swanlab_config_and_the_run_name(tmp_path):
    args = ["--episode", "2", "--eval-every", "1", "--batch-size", "16", "--test-episodes", "0"]
    result = run_script(tmp_path, *args, "--no-video", "--no-replay", "--no-target-net")
    assert result.returncode == 0, result.stderr
    used = json.loads((tmp_path / "output" / "best_model.json").read_text())["config"]
    assert used["no_replay"] is True and used["no_target_net"] is True
    assert used["experiment_name"] == "DQN-CartPole-v1-no-replay-no-target-net"
    (config_file,) = (tmp_path / "swanlog").glob("run-*/files/config.yaml")
    config = yaml.safe_load(config_file.read_text())
    assert config["no_replay"]["value"] is True and config["no_target_net"]["value"] is True


def test_without_either_switch_the_run_keeps_its_name():
    assert dqn.parse_args([]).experiment_name == "DQN-CartPole-v1"
    assert dqn.parse_args(["--no-replay"]).experiment_name == "DQN-CartPole-v1-no-replay"
    assert dqn.parse_args(["--no-target-net"]).experiment_name == "DQN-CartPole-v1-no-target-net"
