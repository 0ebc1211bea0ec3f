"""The DQN pieces, one behaviour at a time: network, ε-greedy, TD target, target sync, saving."""

import csv
import json

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn as nn

import dqn_cartpole as dqn


def make_agent(**overrides) -> dqn.DQNAgent:
    torch.manual_seed(0)  # the same initial weights in every test run
    return dqn.DQNAgent(4, 2, dqn.Config(**overrides))


def fill_buffer(agent: dqn.DQNAgent, n: int) -> None:
    rng = np.random.default_rng(0)
    for _ in range(n):
        s, s2 = rng.normal(size=4), rng.normal(size=4)
        agent.store_experience(s, int(rng.integers(2)), 1.0, s2, bool(rng.random() < 0.1))


def test_qnetwork_maps_4_states_to_2_q_values_with_the_tutorials_keys():
    net = dqn.QNetwork(4, 2)
    assert net(torch.zeros(7, 4)).shape == (7, 2)
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes == {
        "fc.0.weight": (64, 4),
        "fc.0.bias": (64,),
        "fc.2.weight": (64, 64),
        "fc.2.bias": (64,),
        "fc.4.weight": (2, 64),
        "fc.4.bias": (2,),
    }


def test_target_net_starts_equal_to_q_net():
    agent = make_agent()
    for k, v in agent.q_net.state_dict().items():
        assert torch.equal(v, agent.target_net.state_dict()[k])


def balance_actions(q_net: dqn.QNetwork, states: np.ndarray) -> list[int]:
    """Set Q(s, 1) = 0 and shift Q(s, 0) so that each action is best for half of `states`,
    with a clear margin everywhere; returns the best actions by PyTorch's own forward pass."""
    states = torch.as_tensor(states)
    with torch.no_grad():
        q_net.fc[4].weight[1], q_net.fc[4].bias[1] = 0.0, 0.0
        q0 = q_net(states)[:, 0]
        # Halfway between the two middle values: no state is a near-tie that rounding could flip.
        middle = q0.sort().values[len(q0) // 2 - 1 : len(q0) // 2 + 1].mean()
        q_net.fc[4].bias[0] -= middle
        best = q_net(states).argmax(dim=1).tolist()
    assert 0 < sum(best) < len(best), "each action must be best for some state"
    return best


def test_choose_action_at_epsilon_zero_always_takes_the_best_q_value():
    agent = make_agent()
    agent.epsilon = 0.0
    states = np.random.default_rng(1).normal(size=(200, 4)).astype(np.float32)
    best = balance_actions(agent.q_net, states)
    assert [agent.choose_action(s) for s in states] == best


def test_the_greedy_policy_follows_the_networks_weights_through_training_and_loading():
    agent = make_agent(batch_size=32)
    policy = agent.numpy_greedy  # made once, when the agent was built
    states = np.random.default_rng(1).normal(size=(30, 4)).astype(np.float32)
    fill_buffer(agent, 64)
    for _ in range(50):
        agent.train()
    best = balance_actions(agent.q_net, states)
    assert [policy(s) for s in states] == best

    torch.manual_seed(7)
    other = dqn.QNetwork(4, 2)
    best = balance_actions(other, states)
    assert best != [policy(s) for s in states], "the loaded network must choose differently"
    agent.q_net.load_state_dict(other.state_dict())
    assert [policy(s) for s in states] == best


def test_the_greedy_policy_works_for_any_stack_of_linear_and_relu_layers():
    torch.manual_seed(3)
    net = dqn.QNetwork(4, 2)
    net.fc = nn.Sequential(  # four Linear layers instead of three, of other widths
        nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(),
        nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2),
    )  # fmt: skip
    states = np.random.default_rng(2).normal(size=(300, 4)).astype(np.float32)
    with torch.no_grad():  # shift Q(s, 1) so that each action is best for half of the states
        gaps = (net(torch.as_tensor(states)) @ torch.tensor([-1.0, 1.0])).sort().values
        net.fc[-1].bias[1] -= gaps[149:151].mean()
        expected = net(torch.as_tensor(states)).argmax(dim=1).tolist()
    assert 0 < sum(expected) < len(expected), "both actions must occur"
    policy = dqn.Faster.greedy(net)
    assert [policy(s) for s in states] == expected


def test_a_layer_numpy_cannot_compute_leaves_the_agent_on_q_nets_own_argmax():
    agent = make_agent()
    agent.q_net.fc[1] = nn.Tanh()  # a learner's edit of the lesson's QNetwork
    assert dqn.Faster.greedy(agent.q_net) is None
    state = np.zeros(4, dtype=np.float32)
    agent.numpy_greedy = dqn.Faster.greedy(agent.q_net)
    assert agent.greedy_action(state) == int(agent.q_net(torch.as_tensor(state)).argmax())


def assert_fused_adam_moves_the_weights_as(**reference_options) -> None:
    """30 steps of an Adam sped up by Faster.adam_steps and of torch.optim.Adam(**reference_options)
    on the same batch, from the same weights: the weights are equal, bit for bit, and have moved;
    so is the optimizer's state."""
    torch.manual_seed(0)
    ours, reference = dqn.QNetwork(4, 2), dqn.QNetwork(4, 2)
    reference.load_state_dict(ours.state_dict())
    fast = torch.optim.Adam(ours.parameters(), lr=3e-3, **reference_options)
    dqn.Faster.adam_steps(fast)
    optimizers = [
        (ours, fast),
        (reference, torch.optim.Adam(reference.parameters(), lr=3e-3, **reference_options)),
    ]
    states, targets = torch.randn(32, 4), torch.randn(32, 2)
    for _ in range(30):  # enough steps for the bias corrections to matter and then fade
        for net, optimizer in optimizers:
            optimizer.zero_grad()
            nn.functional.mse_loss(net(states), targets).backward()
            optimizer.step()
    for mine, theirs in zip(ours.parameters(), reference.parameters(), strict=True):
        assert torch.equal(mine, theirs)
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(fast.state[mine][key], optimizers[1][1].state[theirs][key])
    assert not torch.equal(ours.fc[0].weight, dqn.QNetwork(4, 2).fc[0].weight)


@pytest.mark.skipif(not dqn.Faster.FUSED, reason="torch < 2.4 has no fused Adam on a CPU")
def test_fused_adam_moves_the_weights_exactly_as_torch_optim_adam_does():
    assert_fused_adam_moves_the_weights_as(fused=True)


def test_choose_action_at_epsilon_one_ignores_the_network_and_picks_both_actions(monkeypatch):
    agent = make_agent()
    agent.epsilon = 1.0

    def no_network(*args):
        raise AssertionError("the network was asked while exploring")

    monkeypatch.setattr(agent, "greedy_action", no_network)
    actions = [agent.choose_action(np.zeros(4, np.float32)) for _ in range(2000)]
    assert set(actions) == {0, 1}
    assert 0.45 < np.mean(actions) < 0.55


def test_td_target_bootstraps_after_truncation_but_not_after_termination():
    agent = make_agent(gamma=0.9)
    next_states = torch.ones(2, 4)
    with torch.no_grad():
        next_q = agent.target_net(next_states).max(dim=1).values
    target = agent.td_target(torch.tensor([1.0, 1.0]), next_states, torch.tensor([1.0, 0.0]))
    assert target[0].item() == pytest.approx(1.0)  # the pole fell: nothing follows
    assert target[1].item() == pytest.approx(1.0 + 0.9 * next_q[1].item())  # cut by time


def test_training_episode_stores_terminated_not_truncated():
    agent = make_agent()
    # Five steps are too few for the pole to fall, so this episode ends only by truncation.
    short = gym.make("CartPole-v1", max_episode_steps=5)
    short.reset(seed=0)
    _, length, _ = dqn.train_episode(short, agent)
    assert length == 5
    assert agent.replay_buffer.terminated[:5].tolist() == [0.0] * 5

    # A random policy drops the pole long before 500 steps: the last step is a real end.
    full = gym.make("CartPole-v1")
    full.reset(seed=0)
    _, length, _ = dqn.train_episode(full, agent)
    flags = agent.replay_buffer.terminated[5 : 5 + length].tolist()
    assert flags == [0.0] * (length - 1) + [1.0]


@pytest.mark.parametrize("gradient_steps", [1, 4])
def test_each_environment_step_takes_gradient_steps_updates_once_a_batch_exists(gradient_steps):
    agent = make_agent(batch_size=8, gradient_steps=gradient_steps)
    env = gym.make("CartPole-v1", max_episode_steps=20)
    env.reset(seed=0)
    _, length, updates = dqn.train_episode(env, agent)
    assert length == 20  # steps 8 to 20 have a full batch: 13 steps with updates
    assert agent.step_count == len(updates) == 13 * gradient_steps


def test_train_returns_none_until_a_batch_exists_then_a_loss_and_a_q_value():
    agent = make_agent(batch_size=8)
    fill_buffer(agent, 7)
    assert agent.train() is None
    fill_buffer(agent, 1)
    loss, q_value = agent.train()
    assert isinstance(loss, float) and np.isfinite(loss) and isinstance(q_value, float)


def test_the_q_value_train_reports_is_q_nets_value_of_the_actions_in_the_batch():
    agent = make_agent(batch_size=8)
    state = np.array([0.1, -0.2, 0.03, 0.4], dtype=np.float32)
    for _ in range(8):  # every sample is the same transition: action 1 in `state`
        agent.store_experience(state, 1, 1.0, state, False)
    with torch.no_grad():
        before = agent.q_net(torch.as_tensor(state))
    _, q_value = agent.train()
    with torch.no_grad():
        after = agent.q_net(torch.as_tensor(state))
    # Q(state, 1) as the loss saw it, before the step: not Q(state, 0), not the updated value.
    assert q_value == pytest.approx(before[1].item(), abs=1e-6)
    assert abs(q_value - before[0].item()) > 1e-4 and abs(q_value - after[1].item()) > 1e-4


def test_target_net_is_synced_after_exactly_target_update_freq_gradient_steps():
    agent = make_agent(batch_size=8, update_target_freq=5)
    fill_buffer(agent, 32)

    def same() -> bool:
        target = agent.target_net.state_dict()
        return all(torch.equal(v, target[k]) for k, v in agent.q_net.state_dict().items())

    for _ in range(4):
        agent.train()
    assert not same(), "q_net has learned, the target must still hold the old weights"
    agent.train()
    assert same()
    agent.train()
    assert not same()


def test_replay_buffer_is_fifo_with_a_fixed_capacity():
    buffer = dqn.ReplayBuffer(3, 1, np.random.default_rng(0))
    for i in range(5):
        buffer.append([i], 0, float(i), [i + 1], False)
    assert buffer.size == 3
    assert sorted(buffer.rewards.tolist()) == [2.0, 3.0, 4.0]  # 0 and 1 were dropped first
    states, *_ = buffer.sample(50)
    assert set(states[:, 0].tolist()) == {2.0, 3.0, 4.0}


def test_epsilon_decays_geometrically_per_episode_down_to_its_floor(tmp_path):
    config = dqn.Config(episode=40, epsilon_decay=0.9, epsilon_end=0.05, batch_size=8)
    config.output_dir, config.eval_every, config.solved_reward = str(tmp_path), 100, 0
    schedule = [row["epsilon"] for row in train(dqn.DQNAgent(4, 2, config)).rows]
    assert schedule[0] == 1.0  # the ε each episode explored with
    assert schedule[10] == pytest.approx(0.9**10)
    assert min(schedule) == pytest.approx(0.05)
    first_floor = schedule.index(min(schedule))
    assert 0.9 ** (first_floor - 1) > 0.05  # the floor is reached exactly when due
    assert all(a >= b for a, b in zip(schedule, schedule[1:], strict=False))


def test_evaluate_stops_at_the_500_step_time_limit():
    env = dqn.make_env(seed=0)
    # Make the pole impossible to drop: only the time limit can end the episode now.
    env.unwrapped.theta_threshold_radians = float("inf")
    env.unwrapped.x_threshold = float("inf")
    assert make_agent().evaluate(env, episodes=2) == 500.0


def test_saved_model_loads_back_and_into_the_tutorials_own_qnetwork(tmp_path):
    agent = make_agent()
    path = tmp_path / "best_model.pth"
    agent.save_model(path)

    loaded = dqn.load_model(path, 4, 2)
    state = torch.randn(5, 4)
    assert torch.equal(loaded(state), agent.q_net(state))

    class TutorialQNetwork(nn.Module):  # the class as the tutorial defines it
        def __init__(self, state_dim, action_dim):
            super().__init__()
            self.fc = nn.Sequential(
                nn.Linear(state_dim, 64),
                nn.ReLU(),
                nn.Linear(64, 64),
                nn.ReLU(),
                nn.Linear(64, action_dim),
            )

        def forward(self, x):
            return self.fc(x)

    theirs = TutorialQNetwork(4, 2)
    theirs.load_state_dict(torch.load(path))
    assert torch.equal(theirs(state), agent.q_net(state))


def test_config_defaults_are_the_command_line_defaults():
    assert dqn.parse_args([]) == dqn.Config()
    config = dqn.parse_args(["--episode", "7", "--learning-rate", "0.01", "--no-video"])
    assert dqn.parse_args(["--episodes", "7", "--lr", "0.01", "--no-video"]) == config
    assert (config.episode, config.learning_rate, config.no_video) == (7, 0.01, True)


def train(agent: dqn.DQNAgent) -> dqn.RunLog:
    """The real training loop, with no dashboard and no Ctrl-C."""
    agent.config.swanlab_mode = "disabled"
    with dqn.RunLog(agent.config, started=0.0) as log:
        dqn.start_swanlab(agent.config, log)
        dqn.train_agent(agent, dqn.make_env(0), dqn.make_env(1), log)
    return log


def train_with_scripted_evaluations(
    tmp_path, monkeypatch, scores: list[float], held: list[int] | None = None
) -> tuple[list[dict], dqn.DQNAgent]:
    """Six episodes, an evaluation every two, whose averages are `scores` and whose long checks
    hold `held` steps (all of them, if not given); returns the rows of metrics.csv, the agent."""
    config = dqn.Config(episode=6, eval_every=2, solved_reward=500, batch_size=8)
    config.output_dir = str(tmp_path)
    agent = dqn.DQNAgent(4, 2, config)
    scripted, checks = iter(scores), iter(held or [config.long_check_steps] * len(scores))
    monkeypatch.setattr(agent, "evaluate", lambda env, episodes: next(scripted))
    monkeypatch.setattr(agent, "long_check", lambda env, episodes: next(checks))
    train(agent)
    with open(tmp_path / "metrics.csv") as f:
        return list(csv.DictReader(f)), agent


def best_episode(tmp_path) -> int:
    return json.loads((tmp_path / "best_model.json").read_text())["episode"]


def test_learning_pauses_while_the_latest_evaluation_is_solved_and_resumes_after(
    tmp_path, monkeypatch
):
    rows, _ = train_with_scripted_evaluations(tmp_path, monkeypatch, [500.0, 20.0, 500.0])
    learned = [row["loss"] != "" for row in rows]
    assert learned == [True, True, False, False, True, True]
    # The second perfect network, trained on the failure in between, replaces the first.
    assert best_episode(tmp_path) == 6


def test_a_tie_without_learning_in_between_keeps_the_saved_model(tmp_path, monkeypatch):
    train_with_scripted_evaluations(tmp_path, monkeypatch, [500.0, 500.0, 500.0])
    assert best_episode(tmp_path) == 2


def test_while_learning_a_full_length_training_episode_is_evaluated_at_once(tmp_path, monkeypatch):
    config = dqn.Config(episode=8, eval_every=4, solved_reward=500, batch_size=8)
    config.output_dir = str(tmp_path)
    agent = dqn.DQNAgent(4, 2, config)
    train_rewards = iter([20.0, 500.0, 30.0, 500.0, 500.0, 500.0, 40.0, 500.0])

    def scripted_episode(env, agent):
        reward = next(train_rewards)
        return reward, int(reward), [(1.0, 2.0)] if agent.learning else []

    monkeypatch.setattr(dqn, "train_episode", scripted_episode)
    monkeypatch.setattr(agent, "evaluate", lambda env, episodes: next(eval_scores))
    monkeypatch.setattr(agent, "long_check", lambda env, episodes: config.long_check_steps)
    eval_scores = iter([480.0, 500.0, 500.0])
    train(agent)
    with open(tmp_path / "metrics.csv") as f:
        evaluated = [int(row["episode"]) for row in csv.DictReader(f) if row["eval_avg_reward"]]
    # Episode 2 is extra; 4 and 8 are the regular ones; 5 and 6 come while learning is paused.
    assert evaluated == [2, 4, 8]


def evaluated_episodes(tmp_path, monkeypatch, train_rewards: list[float], scores) -> list[int]:
    """Which episodes are evaluated when training scores `train_rewards` (every 5 is regular)."""
    config = dqn.Config(episode=len(train_rewards), eval_every=5, batch_size=8)
    config.output_dir = str(tmp_path)
    agent = dqn.DQNAgent(4, 2, config)
    rewards, evals = iter(train_rewards), iter(scores)
    monkeypatch.setattr(
        dqn,
        "train_episode",
        lambda env, agent: (reward := next(rewards), int(reward), [(1.0, 2.0)]),
    )
    monkeypatch.setattr(agent, "evaluate", lambda env, episodes: next(evals))
    monkeypatch.setattr(agent, "long_check", lambda env, episodes: 10)  # never long enough
    train(agent)
    with open(tmp_path / "metrics.csv") as f:
        return [int(row["episode"]) for row in csv.DictReader(f) if row["eval_avg_reward"]]


def test_until_the_first_perfect_evaluation_a_good_episode_is_evaluated_at_once(
    tmp_path, monkeypatch
):
    train_rewards = [20.0, 150.0, 60.0, 99.0, 30.0, 100.0, 140.0, 40.0, 40.0, 40.0]
    scores = [90.0, 110.0, 500.0, 480.0]  # episodes 2, 5, 6 (perfect), then 10
    assert evaluated_episodes(tmp_path, monkeypatch, train_rewards, scores) == [2, 5, 6, 10]
    # 150 and 100 reach early_eval_reward (100); after the perfect one, 140 no longer does.


def test_after_a_perfect_evaluation_a_full_length_episode_is_evaluated_if_a_greedy_one_is_too(
    tmp_path, monkeypatch
):
    # Four gradient steps a step: the network at the end of an episode is not the one that played.
    greedy_rewards = iter([120.0, 500.0])
    monkeypatch.setattr(dqn, "greedy_episode", lambda env, policy: (next(greedy_rewards), 1))
    train_rewards = [20.0, 150.0, 500.0, 500.0, 40.0, 40.0]
    scores = [500.0, 480.0, 300.0, 200.0, 100.0]  # 2 (perfect, held 10 steps), 4, 5, 6; 1 spare
    assert evaluated_episodes(tmp_path, monkeypatch, train_rewards, scores) == [2, 4, 5, 6]


@pytest.mark.parametrize(
    "scores, learning_rate", [([500.0, 20.0, 500.0], 6e-4), ([480.0] * 3, 3e-3)]
)
def test_learning_that_resumes_after_a_pause_takes_a_fifth_of_the_step(
    tmp_path, monkeypatch, scores, learning_rate
):
    _, agent = train_with_scripted_evaluations(tmp_path, monkeypatch, scores)
    assert agent.config.learning_rate == 3e-3
    assert agent.optimizer.param_groups[0]["lr"] == pytest.approx(learning_rate)


def test_a_perfect_evaluation_counts_only_once_the_long_check_holds(tmp_path, monkeypatch):
    rows, _ = train_with_scripted_evaluations(tmp_path, monkeypatch, [500.0] * 3, [900, 5000, 5000])
    learned = [row["loss"] != "" for row in rows]
    assert learned == [True, True, True, True, False, False]  # it pauses after episode 4
    assert [row["long_check_steps"] for row in rows if row["eval_avg_reward"]] == [
        "900",
        "5000",
        "5000",
    ]


def test_of_two_networks_that_evaluate_as_well_the_one_that_held_longer_is_kept(
    tmp_path, monkeypatch
):
    train_with_scripted_evaluations(tmp_path, monkeypatch, [500.0] * 3, [3000, 800, 1200])
    assert best_episode(tmp_path) == 2
    info = json.loads((tmp_path / "best_model.json").read_text())
    assert info["long_check_steps"] == 3000


def test_while_learning_is_paused_the_buffer_keeps_what_it_held():
    agent = make_agent()
    fill_buffer(agent, 20)
    agent.learning = False
    fill_buffer(agent, 5)
    assert agent.replay_buffer.size == 20
    agent.learning = True
    fill_buffer(agent, 5)
    assert agent.replay_buffer.size == 25


def test_the_long_check_is_the_shortest_of_its_episodes(monkeypatch):
    lengths = iter([300, 120, 250])
    monkeypatch.setattr(dqn, "greedy_episode", lambda env, policy: (0.0, next(lengths)))
    assert make_agent().long_check(dqn.make_env(seed=0, max_episode_steps=300), 3) == 120


def test_the_faster_adam_follows_an_lr_scheduler_and_a_loaded_state_as_adam_does():
    torch.manual_seed(0)
    nets = [dqn.QNetwork(4, 2), dqn.QNetwork(4, 2)]
    nets[1].load_state_dict(nets[0].state_dict())
    optimizers = [torch.optim.Adam(net.parameters(), lr=3e-3) for net in nets]
    dqn.Faster.adam_steps(optimizers[0])
    schedulers = [torch.optim.lr_scheduler.StepLR(o, step_size=5, gamma=0.1) for o in optimizers]
    states, targets = torch.randn(32, 4), torch.randn(32, 2)
    for i in range(20):
        if i == 10:  # a saved optimizer, loaded back: its moments and step count are used
            for optimizer in optimizers:
                optimizer.load_state_dict(optimizer.state_dict())
        for net, optimizer, scheduler in zip(nets, optimizers, schedulers, strict=True):
            optimizer.zero_grad()
            nn.functional.mse_loss(net(states), targets).backward()
            optimizer.step()
            scheduler.step()
    for mine, theirs in zip(*(net.parameters() for net in nets), strict=True):
        assert torch.equal(mine, theirs)


@pytest.mark.parametrize("options", [{"amsgrad": True}, {"decoupled_weight_decay": True}])
def test_an_adam_the_shortcut_would_compute_otherwise_is_left_as_it_is(options):
    try:
        optimizer = torch.optim.Adam(dqn.QNetwork(4, 2).parameters(), **options)
    except TypeError:
        pytest.skip(f"this torch's Adam has no {options}")
    before = optimizer.step
    dqn.Faster.adam_steps(optimizer)
    assert optimizer.step == before and not optimizer.state


def test_main_leaves_torch_as_it_found_it(monkeypatch):
    method = torch.optim.Optimizer.add_param_group.__wrapped__
    monkeypatch.delattr(method, "__dynamo_disable", raising=False)  # as in a new process
    with dqn.Faster.skip_compiler_import():
        assert hasattr(method, "__dynamo_disable")
    assert not hasattr(method, "__dynamo_disable")
