"""Deep Q-Network (DQN) on CartPole-v1, in one file: the script of the DQN-CartPole tutorial.

    python dqn_cartpole.py                               # train, then record the test videos
    python dqn_cartpole.py --play output/best_model.pth  # replay a trained model

Down to the PLUMBING banner, the whole DQN in the tutorial's order; below it, the plumbing.
"""

import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import swanlab
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim


@dataclass
class Config:
    """The settings: each is a flag, whose --help is its comment, and a SwanLab config key."""

    # DQN (五). Where ours differs from the tutorial's value, that value is given (tutorial: …).
    learning_rate: float = 3e-3  # Adam's step size (tutorial: 0.001)
    batch_size: int = 128  # transitions per gradient step (tutorial: 64)
    gamma: float = 0.99  # discount factor
    replay_buffer_size: int = 10_000  # replay buffer capacity; the oldest go first
    update_target_freq: int = 100  # copy q_net to target_net every N gradient steps
    epsilon_start: float = 1.0  # exploration rate ε at the first episode
    epsilon_end: float = 0.01  # lowest ε
    epsilon_decay: float = 0.95  # ε × this after each episode (tutorial: 0.995)
    gradient_steps: int = 4  # gradient steps after each environment step (tutorial: 1)
    # Beyond the tutorial: learning pauses once solved, and a best model must hold longer
    solved_reward: float = 500.0  # learning pauses while evaluations average this (tutorial: 0)
    long_check_steps: int = 5000  # a perfect evaluation counts once eval-episodes this long hold
    early_eval_reward: float = 100.0  # until a perfect evaluation, evaluate any episode this good
    tutorial_settings: bool = False  # the five "tutorial:" values above, in one flag
    no_replay: bool = False  # without experience replay (一): each update takes the latest batch
    no_target_net: bool = False  # without a target network (一): q_net gives its own TD target
    # The training loop (六)
    episode: int = 600  # number of training episodes
    eval_every: int = 10  # evaluate the greedy policy every N episodes
    eval_episodes: int = 5  # greedy episodes per evaluation
    seed: int = 42  # random seed for Python, NumPy, PyTorch and the environments
    device: str = "cpu"  # torch device
    test_episodes: int = 3  # episodes the best model plays after training
    max_test_steps: int = 1500  # step limit of a test episode (training: 500)
    no_video: bool = False  # play the test episodes without recording videos
    watch: bool = False  # show the test episodes in a window as well, at 50 frames/s
    play: str = ""  # skip training: replay this saved model (a .pth file, or its folder)
    output_dir: str = "output"  # where best_model.pth, best_model.json, metrics.csv go
    video_dir: str = "dqn_videos"  # where the test videos (mp4) go
    swanlab_mode: str = "auto"  # auto: the cloud after `swanlab login`, else this machine
    project: str = "RL-All-In-One"  # SwanLab project
    experiment_name: str = "DQN-CartPole-v1"  # SwanLab experiment name


# ==== 四、QNetwork: a state goes in, one Q-value per action comes out.
class QNetwork(nn.Module):
    def __init__(self, state_dim: int, action_dim: int):
        super().__init__()
        # Named `fc` as in the tutorial, so saved weights load into the tutorial's own class.
        self.fc = nn.Sequential(
            nn.Linear(state_dim, 64),
            nn.ReLU(),
            nn.Linear(64, 64),
            nn.ReLU(),
            nn.Linear(64, action_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


# ==== Experience replay: a FIFO memory of transitions, sampled at random so that a gradient step
# does not see a run of correlated states. NumPy arrays, not a deque: a batch is one indexing.
class ReplayBuffer:
    def __init__(self, capacity: int, state_dim: int, rng: np.random.Generator):
        self.capacity, self.rng = capacity, rng
        self.states = np.zeros((capacity, state_dim), dtype=np.float32)
        self.next_states = np.zeros((capacity, state_dim), dtype=np.float32)
        self.actions = np.zeros(capacity, dtype=np.int64)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=np.float32)
        self.size, self.next_index = 0, 0

    def append(self, state, action, reward, next_state, terminated) -> None:
        i = self.next_index
        self.states[i], self.actions[i], self.rewards[i] = state, action, reward
        self.next_states[i], self.terminated[i] = next_state, terminated
        self.next_index = (i + 1) % self.capacity  # when full, the oldest is overwritten
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, latest: bool = False) -> tuple[np.ndarray, ...]:
        """A random batch, with replacement (random.sample: without); or the latest, in order."""
        if latest:  # consecutive states, as they came: the correlation replay breaks
            idx = (self.next_index - batch_size + np.arange(batch_size)) % self.capacity
        else:
            idx = self.rng.integers(0, self.size, size=batch_size)
        columns = self.states, self.actions, self.rewards, self.next_states, self.terminated
        return tuple(column[idx] for column in columns)


# ==== 五、DQNAgent: ε-greedy acting, replay memory, and the DQN update with a target network.
class DQNAgent:
    def __init__(self, state_dim: int, action_dim: int, config: Config):
        self.config, self.action_dim = config, action_dim  # the tutorial's self.gamma…: config.*
        self.device = torch.device(config.device)
        self.rng = np.random.default_rng(config.seed)  # for np.random and random.sample
        self.q_net = QNetwork(state_dim, action_dim).to(self.device)
        # The target network gives the TD target. It starts equal to q_net and then follows it
        # only every update_target_freq steps, so the target does not move with every update.
        self.target_net = QNetwork(state_dim, action_dim).to(self.device)
        self.target_net.load_state_dict(self.q_net.state_dict())
        params = self.q_net.parameters()  # fused: Adam in one kernel (PyTorch 2.4+ on a CPU)
        self.optimizer = optim.Adam(params, lr=config.learning_rate, fused=Faster.FUSED)
        Faster.adam_steps(self.optimizer)  # SPEED, below: the same steps without PyTorch's checks
        self.numpy_greedy = Faster.greedy(self.q_net)  # and q_net's argmax in NumPy (not on a GPU)
        self.replay_buffer = ReplayBuffer(config.replay_buffer_size, state_dim, self.rng)
        self.epsilon = config.epsilon_start
        self.step_count, self.learning = 0, True  # gradient steps taken; learning, or paused

    def choose_action(self, state: np.ndarray) -> int:
        """ε-greedy: explore with probability ε, otherwise act on what the network has learned."""
        if self.rng.random() < self.epsilon:
            return int(self.rng.integers(self.action_dim))
        return self.greedy_action(state)

    def greedy_action(self, state: np.ndarray) -> int:
        """The action whose Q-value is highest: the agent's choice when it does not explore."""
        if self.numpy_greedy:  # the same argmax on q_net's own (live) weights: ~5 µs, not ~30
            return self.numpy_greedy(state)
        with torch.no_grad():
            return int(self.q_net(torch.as_tensor(state, device=self.device)).argmax())

    def store_experience(self, state, action, reward, next_state, terminated: bool) -> None:
        # The tutorial's `done` is `terminated`, the pole fell. Here an episode also ends at the
        # time limit (truncated), which is not stored as an end: the state after it has a future.
        if self.learning:  # while learning pauses, the buffer stays as it was
            self.replay_buffer.append(state, action, reward, next_state, terminated)

    def td_target(self, rewards, next_states, terminated) -> torch.Tensor:
        """r + γ·(1 − terminated)·max_a' Q_target(s', a'): after a fall, no future."""
        net = self.q_net if self.config.no_target_net else self.target_net  # --no-target-net
        with torch.no_grad():
            next_q = net(next_states).max(dim=1).values
        return rewards + self.config.gamma * (1.0 - terminated) * next_q

    def train(self) -> tuple[float, float] | None:
        """A gradient step: its loss and mean Q(s, a); None while paused or before a full batch."""
        if not self.learning or self.replay_buffer.size < self.config.batch_size:
            return None
        batch = self.replay_buffer.sample(self.config.batch_size, latest=self.config.no_replay)
        states, actions, rewards, next_states, terminated = (
            torch.as_tensor(column, device=self.device) for column in batch
        )
        current_q = self.q_net(states).gather(1, actions.unsqueeze(1)).squeeze(1)
        target_q = self.td_target(rewards, next_states, terminated)
        loss = F.mse_loss(current_q, target_q)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.step_count += 1
        if self.step_count % self.config.update_target_freq == 0:
            # load_state_dict copies the values: the tutorial's clone() is not needed.
            self.target_net.load_state_dict(self.q_net.state_dict())
        return loss.item(), current_q.mean().item()

    def evaluate(self, env: gym.Env, episodes: int) -> float:
        """Mean return of `episodes` greedy episodes (no exploration, no learning)."""
        return float(np.mean([greedy_episode(env, self.greedy_action)[0] for _ in range(episodes)]))

    def long_check(self, env: gym.Env, episodes: int) -> int:
        """Steps the greedy policy holds the pole in the shortest of `episodes` long episodes."""
        return min(greedy_episode(env, self.greedy_action)[1] for _ in range(episodes))

    def pause_if_solved(self, eval_avg_reward: float, held: int) -> None:
        """Beyond the tutorial: learning pauses while the latest evaluation is perfect and its long
        check held. Trained on nothing but perfect episodes, DQN would forget how to recover."""
        solved = self.config.solved_reward > 0 and eval_avg_reward >= self.config.solved_reward
        if not self.learning and not solved:  # resuming: small steps, from a nearly right network
            self.optimizer.param_groups[0]["lr"] = self.config.learning_rate / 5
        self.learning = not (solved and held >= self.config.long_check_steps)

    def save_model(self, file) -> None:
        """Save q_net's weights as a plain state_dict, to a path or a file open for writing."""
        torch.save(self.q_net.state_dict(), file)


def train_episode(env: gym.Env, agent: DQNAgent) -> tuple[float, int, list[tuple[float, float]]]:
    """One ε-greedy episode, learning at every step: reward, length, each (loss, mean Q)."""
    state, _ = env.reset()
    total_reward, steps, updates = 0.0, 0, []
    while True:
        action = agent.choose_action(state)
        next_state, reward, terminated, truncated, _ = env.step(action)
        agent.store_experience(state, action, reward, next_state, terminated)
        for _ in range(agent.config.gradient_steps):  # more learning per step: fewer steps
            if (update := agent.train()) is not None:
                updates.append(update)
        total_reward += float(reward)
        steps += 1
        state = next_state
        # The pole fell (terminated), the time limit came (truncated), or Ctrl-C.
        if terminated or truncated or stop_requested():
            return total_reward, steps, updates


def greedy_episode(env: gym.Env, policy) -> tuple[float, int]:
    """One episode acting with `policy`, learning nothing; returns its reward and length."""
    state, _ = env.reset()
    total_reward, steps = 0.0, 0
    while True:
        state, reward, terminated, truncated, _ = env.step(policy(state))
        total_reward += float(reward)
        steps += 1
        if terminated or truncated:
            return total_reward, steps


# ==== 六、The training loop: ε-greedy episodes, an evaluation every 10, the best kept on disk.
def make_env(seed: int, **kwargs) -> gym.Env:
    # CartPole's 500-step limit ends an episode (the tutorial's: 20,000 reward); envs seeded too.
    env = gym.make("CartPole-v1", **kwargs)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    return env


def start_swanlab(config: Config, log: "RunLog", **tutorial_keys) -> None:
    """The tutorial's swanlab.init: its project and experiment, its config keys and ours. RunLog
    (below the banner) calls init() in a mode that needs no account: the cloud after `swanlab
    login`, else this machine. SwanLab failing, then or later, costs one warning."""

    def init(**mode_and_settings) -> None:
        swanlab.init(
            project=config.project,
            experiment_name=config.experiment_name,
            config={**tutorial_keys, **asdict(config)},
            description="DQN on CartPole-v1 (dqn_cartpole.py)",
            **mode_and_settings,
        )

    log.start_swanlab(init)


def train_agent(agent: DQNAgent, env: gym.Env, eval_env: gym.Env, log: "RunLog") -> bool:
    """The training loop; True once it has saved a model. Episodes count from 1: evaluations
    fall on 10, 20, …, 600 (the tutorial's on 0, …, 590), and on promising episodes."""
    config = agent.config
    # Beyond the tutorial: 500 perfect steps may end with the cart drifting off at step 1000,
    # so a perfect evaluation counts only once longer episodes (in their own env) hold too.
    long_env = make_env(config.seed + 3, max_episode_steps=config.long_check_steps)
    # (the tutorial's best_avg_reward, its long check, its gradient steps); on disk, not best_net
    best = (-math.inf, 0, -1)
    for episode in range(1, config.episode + 1):
        reward, length, updates = train_episode(env, agent)
        if stop_requested():
            break  # Ctrl-C: a cut-short episode is not a result; what came before it is kept
        charts = {"train/reward": reward}  # CartPole gives 1 a step: the reward is the length
        charts["train/epsilon"] = agent.epsilon  # the ε it explored with (the tutorial's: decayed)
        if updates:  # the means over the episode's gradient steps
            charts["train/loss"], charts["train/q_value"] = map(float, np.mean(updates, axis=0))
        swanlab.log(charts, step=episode)
        log.episode(episode, charts, length)  # a row of metrics.csv, the progress bar
        # Explore a little less after each episode: early on the Q-values are noise, later they
        # are worth trusting. ε stays above epsilon_end, so the agent keeps exploring a bit.
        agent.epsilon = max(config.epsilon_end, agent.epsilon * config.epsilon_decay)

        # Beyond the tutorial: a high-scoring episode is evaluated at once, before updates undo it.
        good = config.solved_reward if best[0] >= config.solved_reward else config.early_eval_reward
        promising = agent.learning and config.solved_reward > 0 and reward >= good
        if promising and good == config.solved_reward:  # updated at each step as it played, the
            # network is not the one that scored 500: a greedy episode of its own must score it too.
            promising = greedy_episode(eval_env, agent.greedy_action)[0] >= good
        if episode % config.eval_every == 0 or episode == config.episode or promising:
            eval_avg_reward = agent.evaluate(eval_env, config.eval_episodes)
            held = 0  # how long the long check held; run only after a perfect evaluation
            if config.solved_reward > 0 and eval_avg_reward >= config.solved_reward:
                # Paused: the weights are the ones whose long check held; no need to run it again.
                full = config.long_check_steps
                held = agent.long_check(long_env, config.eval_episodes) if agent.learning else full
            # Of two networks that evaluate as well, the one that held longer is kept; a tie
            # after more learning replaces it too: it has learned from more failures.
            if (eval_avg_reward, held, agent.step_count) > best:
                best = (eval_avg_reward, held, agent.step_count)
                # best_model.pth written whole or not at all, and best_model.json beside it
                with log.new_best_model(eval_avg_reward, held) as file:
                    agent.save_model(file)
            agent.pause_if_solved(eval_avg_reward, held)
            # eval/ charts at evaluations only (the tutorial logs best_avg_reward every episode)
            charts = {"eval/avg_reward": eval_avg_reward, "eval/best_avg_reward": best[0]}
            if held:  # our own check, not CartPole-v1's: the shortest of the long episodes
                charts["eval/long_check_steps"] = held
            swanlab.log(charts, step=episode)
            # metrics.csv saved, a console line, and the dashboard's picture of q_net's choices
            log.evaluation(episode, charts, agent.q_net)
    return best[2] >= 0


# ==== Test playback: the best model plays episodes of up to 1,500 steps (30 s), recorded to mp4.
def test_playback(config: Config, policy, log: "RunLog") -> None:
    """`policy` plays from start states that training and evaluation never saw (seed + 2)."""
    env = make_env(
        config.seed + 2, render_mode="rgb_array", max_episode_steps=config.max_test_steps
    )
    # gymnasium's RecordVideo (StreamingRecordVideo, below): an mp4 per episode in video_dir, each
    # frame sent to the encoder, not kept (1,500 would take 1 GB); with --watch, a window too.
    with log.recorded(env) as env:  # closing it finishes the last video
        for episode in range(config.test_episodes):
            total_reward, _ = greedy_episode(env, policy)
            swanlab.log({"test/reward": total_reward}, step=episode)
            log.test_episode(episode, total_reward)  # its line on the console


def train_and_test(config: Config, log: "RunLog") -> None:
    """The tutorial's 六、完整代码 from start to end: train, keep the best model, watch it play.
    `log`, a RunLog (below the banner), writes metrics.csv and best_model.json, the console, the
    progress bar and the videos."""
    env = make_env(config.seed)
    eval_env = make_env(config.seed + 1)  # its own, kept: evaluating must not disturb training
    state_dim, action_dim = env.observation_space.shape[0], env.action_space.n
    tutorial_keys = dict(state_dim=state_dim, action_dim=action_dim, epsilon=config.epsilon_start)
    start_swanlab(config, log, **tutorial_keys)
    # The same seed, the same run. After swanlab.init, which picks the run's colour at random.
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    agent = DQNAgent(state_dim, action_dim, config)
    if train_agent(agent, env, eval_env, log) and not stop_requested():
        # What plays is what was kept: the best model, read back from its file (load_model, below).
        agent.q_net.load_state_dict(load_model(log.best_model, state_dim, action_dim).state_dict())
        test_playback(config, agent.greedy_action, log)


# =============================================================================================
# PLUMBING. The DQN is all above. Below is what makes it a dependable program: the command line,
# files, SwanLab's mode, the console, the videos and the window, Ctrl-C, and two speed-ups.
# =============================================================================================
import argparse
import contextlib
import csv
import io
import json
import linecache
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import types
import warnings
from collections.abc import Callable
from dataclasses import fields
from importlib import metadata, util
from unittest import mock

import requests
from gymnasium.wrappers import HumanRendering, RecordVideo
from PIL import Image, ImageDraw, ImageFont
from torch.optim.adam import adam as adam_update
from torch.torch_version import TorchVersion as Version  # PEP 440 versions, for any library
from tqdm import tqdm

# ---- Versions, checked at the start; how each range ends, the internals used: docs/versions.md
SUPPORTED = {
    "torch": ("2.2.2", "2.16"),
    "gymnasium": ("1.0.0", "1.5"),
    "numpy": ("1.23.2", "3"),
    "swanlab": ("0.8.2", "0.11"),
    "moviepy": ("1.0.3", "3"),  # only imported, by RecordVideo, to check that it is there
    "imageio-ffmpeg": ("0.2.0", "1"),
    "pillow": ("10.1", None),  # ImageFont.load_default(size=...)
    "tqdm": ("4.35", "5"),  # the bar's {bar:20}
    "requests": ("2.28", "3"),
}
EXTRAS = {"gymnasium": "[classic-control]", "swanlab": "[dashboard]"}  # as requirements.txt says
DASHBOARD_FIX = 'pip install "swanlab[dashboard]"'  # swanboard: local mode and `swanlab watch`


def version_problems(installed: dict[str, str | None], pip: str = "pip") -> list[str]:
    """One line for each library outside its range: the version found, the range, the fix."""
    problems = []
    for name, (low, high) in SUPPORTED.items():
        found = installed.get(name)
        # PEP 440's order, as pip's: 1.0 is 1.0.0, 1.0.0a1 is below it, 2.16.0rc1 above 2.16.dev0
        if found and Version(found) >= low and (high is None or Version(found) < f"{high}.dev0"):
            continue
        needs = f"{low} or newer" + (f", below {high}" if high else "")
        fix = f"{name}{EXTRAS.get(name, '')}>={low}" + (f",<{high}" if high else "")
        has = f"{name} {found} is installed" if found else f"{name} is not installed"
        problems.append(f'{has}; this script needs {needs}: {pip} install "{fix}"')
    torch_found, numpy_found = installed.get("torch"), installed.get("numpy")
    old_torch = torch_found and Version(torch_found) < (2, 3)  # its wheels: against NumPy 1
    if old_torch and numpy_found and Version(numpy_found) >= (2,):
        needs = f'needs NumPy 1: {pip} install "numpy>={SUPPORTED["numpy"][0]},<2"'
        problems.append(f"numpy {numpy_found} is installed; torch {torch_found} {needs}")
    return problems


def installed_versions() -> dict[str, str | None]:
    """Python's version and each library's in SUPPORTED, as its package says (missing: left out)."""
    versions = {"python": platform.python_version()}
    for name in SUPPORTED:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


# ---- The command line: one flag per Config field; a bad value is refused in one line ---------
VALID = {  # the values each setting accepts, checked before any work starts (argparse: the types)
    "> 0": "learning_rate",
    "(0, 1]": "epsilon_decay",
    "[0, 1]": "gamma epsilon_start epsilon_end",
    ">= 0": "solved_reward early_eval_reward test_episodes",
    "[0, 4294967295]": "seed",  # what NumPy's seed accepts
    ">= 1": "batch_size replay_buffer_size update_target_freq gradient_steps long_check_steps "
    "episode eval_every eval_episodes max_test_steps",
}
CHOICES = dict(device=["cpu", "cuda"], swanlab_mode="auto cloud local offline disabled".split())
# The tutorial's own values, for --tutorial-settings: run with and without, compare on SwanLab.
TUTORIAL_SETTINGS = dict(learning_rate=1e-3, batch_size=64, epsilon_decay=0.995, gradient_steps=1)
TUTORIAL_SETTINGS["solved_reward"] = 0.0
# The flags' earlier spellings, still understood (they were renamed to the tutorial's names).
OLD_FLAGS = dict(learning_rate="--lr", replay_buffer_size="--buffer-size", episode="--episodes")
OLD_FLAGS["update_target_freq"] = "--target-update-freq"


def allows(valid: str, value: float) -> bool:
    """Is `value` finite and within `valid`: "> 0", ">= 1", "[0, 1]" or "(0, 1]"?"""
    if valid[0] == ">":
        low, high, closed = float(valid.split()[1]), math.inf, valid[1] == "="
    else:  # a square bracket includes its end
        (low, high), closed = map(float, valid[1:-1].split(",")), valid[0] == "["
    return math.isfinite(value) and (value >= low if closed else value > low) and value <= high


def text_given(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def setting_help() -> dict[str, str]:
    """Each setting's --help: its Config comment, as linecache has this file or a notebook cell."""
    linecache.checkcache(filename := QNetwork.forward.__code__.co_filename)  # the file as it is now
    source = "".join(linecache.getlines(filename))
    config = source[source.find("class Config:") :].split("\n\n\n")[0]
    return dict(re.findall(r"^    (\w+): \w+ = .+?  # (.+)$", config, flags=re.M))


def parse_args(argv: list[str] | None = None) -> Config:
    """Read the command line; reject bad values before any work starts (exit code 2)."""
    parser = argparse.ArgumentParser(
        prog="dqn_cartpole.py",  # not the kernel's ipykernel_launcher.py in a notebook
        description="Train a DQN agent on CartPole-v1 and watch it on SwanLab.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    # A bad flag gets one line that names it, not argparse's usage block above that line.
    parser.error = lambda message: parser.exit(2, f"{parser.prog}: error: {message} (see --help)\n")
    flags, helps = {f.name: "--" + f.name.replace("_", "-") for f in fields(Config)}, setting_help()
    for f in fields(Config):
        names = [flags[f.name]] + ([OLD_FLAGS[f.name]] if f.name in OLD_FLAGS else [])
        options = dict(action="store_true")
        if f.type is not bool:  # argparse converts the text, and says so if it cannot
            kind = text_given if f.type is str else f.type  # `--play "$UNSET"` must not train
            options = dict(type=kind, default=f.default, choices=CHOICES.get(f.name))
        if f.name == "play":  # no default to convert: an empty one would be refused
            options |= dict(default=argparse.SUPPRESS, metavar="MODEL")
        text = helps.get(f.name) or f.name.replace("_", " ")  # argparse reads % as a format
        parser.add_argument(*names, dest=f.name, help=text.replace("%", "%%"), **options)
    if parser.parse_args(argv).tutorial_settings:  # its values become defaults: a flag still wins
        parser.set_defaults(**TUTORIAL_SETTINGS)
    config = Config(**vars(parser.parse_args(argv)))
    for switch in ("tutorial_settings", "no_replay", "no_target_net", "play"):  # a run of its own
        if getattr(config, switch):
            config.experiment_name += "-" + switch.replace("_", "-")
    for name, valid in [(name, valid) for valid, names in VALID.items() for name in names.split()]:
        value = getattr(config, name)  # inf and nan too: --learning-rate inf trains to NaN
        if not allows(valid, value):
            allowed = valid if valid[0] == ">" else f"in {valid}"
            finite = "a finite number " if math.isinf(value) else ""
            parser.error(f"argument {flags[name]}: must be {finite}{allowed}, got {value}")
    values = asdict(config)
    for low, high in [("batch_size", "replay_buffer_size"), ("epsilon_end", "epsilon_start")]:
        if values[low] > values[high]:
            parser.error(f"{flags[low]} ({values[low]}) must be <= {flags[high]} ({values[high]})")
    if config.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: PyTorch sees no CUDA GPU here; use --device cpu")
    return config


# ---- Files: each written under a temporary name, then renamed: a stop leaves the old one whole
class InputError(Exception):
    """Something the user gave (a file, a folder) cannot be used; the message says why."""


class WriteError(Exception):
    """A result could not be written (a full disk, a folder gone); the message names the file."""


HELD_LOCKS: dict[Path, io.TextIOWrapper] = {}  # a lock lasts while its file is open


def claim_folder(path: Path, flag: str) -> None:
    """Create `path` and hold it until main() returns (or the process ends); refuse a held one."""
    try:  # a symlink loop is a RuntimeError before Python 3.13
        if (held := path.resolve()) in HELD_LOCKS:
            return
        path.mkdir(parents=True, exist_ok=True)
        lock = open(path / ".lock", "a+", encoding="utf-8")  # proves the folder can be written
    except (OSError, RuntimeError) as error:
        reason = "it is a file" if isinstance(error, FileExistsError) else error
        reason = getattr(reason, "strerror", None) or reason
        raise InputError(f"{flag} {path}: cannot write there ({reason})") from None
    try:
        import fcntl  # Windows has none: there, two runs may share a folder (README)

        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:
        pass
    except OSError:
        lock.close()
        pid = (path / ".lock").read_text(encoding="utf-8").strip() or "unknown"
        advice = f"let it finish, or give this run another {flag}"
        raise InputError(f"{flag} {path}: in use by another run (pid {pid}); {advice}") from None
    lock.truncate(0)
    print(os.getpid(), file=lock, flush=True)
    HELD_LOCKS[held] = lock


def save_atomically(files: dict[Path, bytes | Callable]) -> None:
    """Each file's bytes (or what writes them) in a temporary file, renamed once all are whole."""
    tmps = {path: path.with_name(f".{path.name}.tmp") for path in files}
    try:
        for path, data in files.items():
            with open(tmps[path], "wb") as f:
                data(f) if callable(data) else f.write(data)
                f.flush()
                os.fsync(f.fileno())
        for path, tmp in tmps.items():
            os.replace(tmp, path)
    except OSError as error:  # a full disk, most often: the previous files are still whole
        raise WriteError(f"cannot write {path}: {error.strerror or error}") from None
    finally:  # stopped or failed, no temporary file stays (once renamed, there is none)
        for tmp in tmps.values():
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)


COLUMNS = {  # each column of metrics.csv: its chart on the dashboard, its console name and format
    "episode": (None, "episode", "4d"),
    "env_steps": (None, "steps", "7d"),
    "wall_time_s": (None, None, None),
    "train_reward": ("train/reward", "reward", "5.0f"),
    "episode_length": (None, None, None),
    "epsilon": ("train/epsilon", "ε", ".3f"),
    "loss": ("train/loss", "loss", "7.4f"),
    "q_value": ("train/q_value", "Q", "6.2f"),
    "eval_avg_reward": ("eval/avg_reward", "eval", "5.1f"),  # logged only with an evaluation
    "best_avg_reward": ("eval/best_avg_reward", "best", "5.1f"),
    "long_check_steps": ("eval/long_check_steps", "held", "5d"),  # none if the check was not run
}
METRIC_COLUMNS = list(COLUMNS)


def metrics_csv(rows: list[dict]) -> bytes:
    writer = csv.DictWriter(text := io.StringIO(), fieldnames=METRIC_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)  # None becomes an empty cell
    return text.getvalue().encode()


def load_model(path: Path, state_dim: int, action_dim: int) -> QNetwork:
    """Rebuild a QNetwork from a saved state_dict, or raise InputError saying what is wrong."""
    try:  # a name too long raises, a symlink loop may: the system's words then
        if path.is_file():
            problem = None if path.stat().st_size else "the file is empty"
        else:
            problem = "not a regular file" if path.exists() else "no such file"
    except OSError as error:
        problem = error.strerror or str(error)
    if problem:
        raise InputError(f"{path}: {problem}")
    try:  # SAFETY: a stranger's model file may be a pickle that runs code: weights_only refuses one
        with warnings.catch_warnings():  # its warnings would bury the one line that matters
            warnings.simplefilter("ignore")
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        if re.search(r"GLOBAL \w+(\.\w+)+ |Unsupported class", str(error)):  # a whole name
            refused = "refused: the file asks to run code, not just load weights"
            raise InputError(f"{path}: {refused}") from None
        raise InputError(f"{path}: not a PyTorch model file, or a damaged copy of one") from None
    q_net = QNetwork(state_dim, action_dim)
    try:  # strict: PyTorch names each missing, unexpected or wrongly shaped entry, a line each
        q_net.load_state_dict(state_dict)
    except (RuntimeError, TypeError) as error:
        problem = (str(error).splitlines()[1:] or [str(error)])[0].strip()  # the first
        raise InputError(f"{path}: not a CartPole QNetwork: {problem}") from None
    if not all(torch.isfinite(p).all() for p in q_net.parameters()):  # it would play blind
        raise InputError(f"{path}: the model's weights are not finite (NaN or inf): retrain it")
    return q_net.eval()


# ---- SwanLab: a mode that never asks for a login, since learners may have no account ---------
def resolve_swanlab_mode(requested: str, settings: "swanlab.Settings") -> str:
    """--swanlab-mode as SwanLab names it; `auto`: the cloud only with a saved login."""
    if requested != "auto":
        return "online" if requested == "cloud" else requested
    if os.environ.get("SWANLAB_MODE"):  # Settings reads it, SWANLAB_API_KEY, `swanlab login`'s key
        return settings.mode
    return "online" if settings.api_key else "local"


def swanlab_mode(requested: str, settings: "swanlab.Settings", cloud_failed: str = "") -> str:
    """The mode for swanlab.init: the cloud if it answers, else local; offline without swanboard."""
    mode = resolve_swanlab_mode(requested, settings)
    if mode == "online":
        try:  # first a 3 s check that the host answers: SwanLab itself retries for ~15 s
            requests.head(settings.api_host, timeout=3)  # via HTTPS_PROXY/ALL_PROXY, as SwanLab
        except requests.RequestException as error:  # no network: the curves stay on this machine
            mode, cloud_failed = "local", f"{settings.api_host}: {type(error).__name__}"
    if cloud_failed:
        warn(f"SwanLab cloud unavailable ({cloud_failed}); logging locally instead.")
    if mode != "local" or util.find_spec("swanboard"):  # the dashboard's package is there
        return mode
    kept = "this run is kept offline in swanlog/, and metrics.csv has every value"
    warn(f"SwanLab's dashboard is not installed ({DASHBOARD_FIX}): {kept}.")
    return "offline"


# ---- What a run reports: the dashboard, metrics.csv, best_model.json and the console ---------
def numbers_line(row: dict, keys=COLUMNS, aligned: bool = True) -> str:
    """ "episode   10 | steps     245 | ...": the named numbers of `keys` that are not None."""
    shown = [(*COLUMNS[k][1:], row[k]) for k in keys if COLUMNS[k][1] and row[k] is not None]
    strip = "" if aligned else "0123456789"  # the widths
    return " | ".join(f"{name} {value:{spec.lstrip(strip)}}" for name, spec, value in shown)


def columns_of(charts: dict) -> dict:
    """The metrics.csv columns of the dashboard's charts in `charts`."""
    return {k: charts[chart] for k, (chart, *_) in COLUMNS.items() if chart in charts}


class RunLog(contextlib.AbstractContextManager):
    """All a run reports besides the lesson's swanlab.log: files, console, videos, SwanLab's run."""

    def __init__(self, config: Config, started: float):
        self.config, self.started, self.output = config, started, Path(config.output_dir)
        self.run, self.broken, self.rows, self.env_steps, self.last_eval = None, False, [], 0, None
        self.bar = tqdm(disable=True)  # until the first episode: closing it does nothing
        self.best_model = self.best_episode = self.best_avg_reward = None  # once a model is saved
        self.making_videos, self.video_error, self.pictured = False, None, None
        self.on_exit = contextlib.ExitStack()  # SwanLab's greetings put back, once silenced

    def start_swanlab(self, init: Callable) -> None:
        """Calls `init`, the lesson's swanlab.init, as the lesson's start_swanlab describes."""
        self.quiet_swanlab_greetings()
        handler = signal.getsignal(signal.SIGINT)  # put back: SwanLab's would end its run at Ctrl-C
        try:
            # The versions go in the config below: SwanLab's own listing runs `pip list` (~0.35 s).
            settings = swanlab.Settings(probe={"requirements": False})
            mode = swanlab_mode(self.config.swanlab_mode, settings)
            try:
                init(mode=mode, settings=settings, reinit=True)
            except Exception as error:  # a bad key, say
                if mode != "online":
                    raise
                mode = swanlab_mode("local", settings, cloud_failed=" ".join(f"{error}".split()))
                init(mode=mode, settings=settings, reinit=True)
            self.run = swanlab.get_run()
            if self.live:
                swanlab.config.update({"versions": installed_versions()})
                self.swanlab_log, self.run.log = self.run.log, self.guarded_log
        except Exception as error:  # e.g. a file named swanlog, or a folder that cannot be written
            reason = " ".join(f"{error}".split())
            if hasattr(error, "errors"):  # pydantic's ValidationError: its first message
                reason = error.errors()[0]["msg"]
            warn(f"SwanLab could not start ({reason}); no dashboard, metrics.csv has every value.")
            # The lesson's swanlab.log calls then do nothing. A disabled run writes no file, yet
            # SwanLab checks its folder and its variables, which may be what failed: neither here.
            mine = {k: v for k, v in os.environ.items() if not k.startswith("SWANLAB_")}
            mine["SWANLAB_LOG_DIR"] = tempfile.gettempdir()
            with mock.patch.dict(os.environ, mine, clear=True):
                self.run = swanlab.init(mode="disabled", reinit=True)
        finally:  # None: a handler set outside Python, which signal.signal cannot put back
            self.bar_started = time.perf_counter()  # time.time() steps by 15.6 ms on Windows
            if handler is not None and threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGINT, handler)

    # INTERNALS (swanlab 0.10.3, docs/versions.md): its greeting module says where the dashboard
    # is as a run starts and ends, wrapped mid-path; where() says it once. Its warnings still print.
    def quiet_swanlab_greetings(self) -> None:
        """Silence SwanLab's greetings until this run ends: a notebook's own runs greet again."""
        with contextlib.suppress(ImportError, AttributeError):
            from swanlab.sdk.internal.run import greeting

            silent = dict.fromkeys(["welcome", "goodbye"], lambda *args, **kwargs: None)
            self.on_exit.enter_context(mock.patch.multiple(greeting, **silent))

    def guarded_log(self, data: dict, step: int | None = None, **options):
        """The run's log, drawing values given as functions; a failure warns, then logging stops."""
        if self.broken:
            return None
        try:
            data = {k: v() if callable(v) else v for k, v in data.items()}
            return self.swanlab_log(data, step, **options)
        except Exception as err:
            self.broken = True
            warn(f"SwanLab stopped logging ({err}); training goes on, metrics.csv has it all.")

    @property
    def live(self) -> bool:
        """Is SwanLab recording this run (the cloud, local or offline)?"""
        return self.run is not None and self.run.mode != "disabled"

    def chart(self, data: dict, step: int) -> None:
        """The plumbing's own charts (the policy picture, the GIF), made only if SwanLab logs."""
        if self.live and not self.broken:
            swanlab.log(data, step=step)

    def episode(self, episode: int, charts: dict, length: int) -> None:
        """A training episode's numbers: its row of metrics.csv, and the progress bar."""
        if not self.rows:  # a live bar in a terminal or a notebook; else evaluation lines only
            self.bar = progress_bar(self.config.episode, sys.stdout.isatty() or in_notebook())
        self.env_steps += length
        row = dict(episode=episode, env_steps=self.env_steps, best_avg_reward=self.best_avg_reward)
        row["episode_length"], row["wall_time_s"] = length, round(time.time() - self.started, 3)
        self.rows.append(dict.fromkeys(COLUMNS) | row | columns_of(charts))
        self.show_progress(refresh=False)
        self.bar.update()

    @contextlib.contextmanager
    def new_best_model(self, eval_avg_reward: float, held: int):
        """A file for the best model's weights. Once they are whole, best_model.pth, its JSON and
        metrics.csv are replaced together: output/ never holds two runs' files at once."""
        weights = io.BytesIO()
        yield weights
        row = self.rows[-1]
        info = {"episode": row["episode"], "eval_avg_reward": eval_avg_reward}
        info |= {"env_steps": row["env_steps"], "seed": self.config.seed}
        info |= {"run_started_at": self.started, "config": asdict(self.config)}
        info |= {"long_check_steps": held or None, "versions": installed_versions()}
        files = {"best_model.pth": weights.getvalue(), "metrics.csv": metrics_csv(self.rows)}
        files["best_model.json"] = json.dumps(info, indent=2).encode()
        save_atomically({self.output / name: data for name, data in files.items()})
        self.best_model, self.best_episode = self.output / "best_model.pth", row["episode"]
        self.best_avg_reward = eval_avg_reward

    def save_metrics(self) -> None:
        """metrics.csv, once this run's model is beside it: until then, the last run's stays."""
        if self.best_model is not None:
            save_atomically({self.output / "metrics.csv": metrics_csv(self.rows)})

    def evaluation(self, episode: int, charts: dict, q_net: QNetwork) -> None:
        """An evaluation: metrics.csv saved, a line printed, q_net's greedy policy pictured."""
        row, self.last_eval = self.rows[-1], charts["eval/avg_reward"]
        row |= columns_of(charts)
        self.save_metrics()
        tqdm.write(numbers_line(row), file=sys.stdout)
        sys.stdout.flush()
        caption = f"episode {episode}"  # the picture is drawn only if SwanLab logs it
        picture = {"eval/policy": lambda: swanlab.Image(policy_image(q_net), caption=caption)}
        # A new picture only if learning changed the network: a paused one is as pictured last.
        weights = torch.cat([p.detach().flatten() for p in q_net.parameters()])
        if self.pictured is None or not torch.equal(weights, self.pictured):
            self.pictured = weights  # torch.cat made a copy: later steps do not change it
            self.chart(picture, episode)
        self.show_progress(refresh=True)

    def show_progress(self, refresh: bool) -> None:
        # What matters most first: a terminal of 80 columns cuts the bar after ε.
        keys = ["eval_avg_reward", "best_avg_reward", "train_reward", "epsilon", "env_steps"]
        numbers = numbers_line(self.rows[-1] | {"eval_avg_reward": self.last_eval}, keys, False)
        rate = self.env_steps / (time.perf_counter() - self.bar_started)
        self.bar.set_description_str(f"{numbers} | {rate:.0f} steps/s", refresh=refresh)

    def recorded(self, env: gym.Env) -> gym.Env:
        """The test env, recorded (unless --no-video) and shown in a window (with --watch)."""
        if not self.config.no_video:
            env = StreamingRecordVideo(env, self.config.video_dir, self)
        return Window(env) if self.config.watch else env

    def test_episode(self, episode: int, total_reward: float) -> None:
        self.bar.close()  # training is over: drawn a last time, the lines after it go below it
        print(f"test episode {episode} | reward {total_reward:.0f}", flush=True)

    def where(self) -> str:
        """Where the dashboard is: a URL, or a command to paste (shell or cell) and what next."""
        if not self.live:
            return "SwanLab: disabled"
        if self.run.mode == "online":
            return f"SwanLab: {self.run.url}"
        if self.run.mode == "offline":
            saved = f"SwanLab run saved offline in {self.run.dir} (upload it with `swanlab sync`)"
            fix = f"Dashboard: for the next runs, install it: {DASHBOARD_FIX}. "
            return saved if util.find_spec("swanboard") else fix + saved
        cli = ["swanlab"] if shutil.which("swanlab") else [python_command(), "-m", "swanlab"]
        line = "Dashboard: " + shell_command([*cli, "watch", str(Path(self.run.dir).parent)])
        first = "run it in a cell of its own (it serves until you press stop), then"
        name = getattr(self.run, "name", None) or "the experiment"
        then = f"open the address it prints and click {name} for its charts"
        return f"{line}\n  {first if in_notebook() else 'then'} {then}"

    def __exit__(self, kind, error, traceback) -> bool:
        """However the run ends: metrics.csv written, SwanLab closed. A video that could not be
        made is noted (exit 3), a closed window ends the playback; anything else goes on."""
        self.bar.close()  # a closed bar closes again as a no-op
        said = InputError | WriteError | KeyboardInterrupt  # each gets its own line in main()
        if kind is WindowClosed:  # no video of this run is kept then (close())
            print("The window was closed: no more test episodes.", flush=True)
            self.making_videos = False
        elif self.making_videos and kind and not issubclass(kind, said):
            self.video_error = (  # a full disk is exit 4; this is a library missing or broken
                f"the test video could not be made ({type(error).__name__}: {error}). Reinstall "
                "with `pip install -r requirements.txt` (moviepy, pygame), or use --no-video."
            )
        handled = kind is WindowClosed or self.video_error is not None
        try:
            self.save_metrics()  # the rows since the last evaluation, however training ended
        finally:
            aborted = stop_requested() or kind is KeyboardInterrupt
            state = "aborted" if aborted else "crashed" if kind and not handled else "success"
            reason = f"{kind.__name__}: {error}" if state == "crashed" else None
            with contextlib.suppress(Exception):
                self.run and self.run.finish(state=state, error=reason)
            self.on_exit.close()
        return handled


def progress_bar(episodes: int, live: bool) -> tqdm:
    """The training's bar: tqdm's widget in a notebook with ipywidgets; else text redrawn in
    place, in a kernel at most once a second so that the cell's output stays small."""
    look = "episode {n_fmt}/{total_fmt} {bar:10} {desc}"
    if live and in_notebook():
        with contextlib.suppress(ImportError):  # tqdm.notebook is there from tqdm 4.36
            from tqdm.notebook import IProgress, tqdm_notebook  # IProgress: None without ipywidgets

            if IProgress is not None:
                return tqdm_notebook(total=episodes, bar_format=look.replace("{bar:10}", "{bar}"))
        return tqdm(total=episodes, bar_format=look, file=sys.stdout, mininterval=1)
    return tqdm(total=episodes, bar_format=look, disable=not live, dynamic_ncols=True)


LEFT, RIGHT = (0, 114, 178), (230, 159, 0)  # blue and orange: told apart in colour blindness too


def policy_image(q_net: QNetwork, angle: float = 0.21, spin: float = 2.0, cells: int = 64):
    """The greedy action by pole angle (at ±0.21 rad an episode ends) and spin, the cart at rest."""
    grid = (np.arange(cells) + 0.5) / cells * 2 - 1  # cell centres, from -1 to 1
    angles, spins = np.meshgrid(grid * angle, -grid * spin)  # the top row spins fastest right
    states = np.zeros((cells * cells, 4), np.float32)
    states[:, 2], states[:, 3] = angles.ravel(), spins.ravel()
    with torch.no_grad():  # one batched forward pass for the whole grid
        q = q_net(torch.from_numpy(states).to(q_net.fc[0].weight.device)).cpu().numpy()
    pushes_right = (q.argmax(axis=1) == 1).reshape(cells, cells, 1)
    font, f, ink = ImageFont.load_default(size=16), 16, (30, 30, 30)
    x0, y0, size, mid = 2 * f + 12, f + 10, 3 * cells, 3 * cells // 2  # room for the labels
    image = Image.new("RGB", (x0 + size + 2 * f + 90, y0 + size + 2 * f + 12), "white")
    colours = np.where(pushes_right, RIGHT, LEFT).astype(np.uint8).repeat(3, 0).repeat(3, 1)
    colours[mid] = colours[:, mid] = 255  # white lines: the pole still, and upright
    image.paste(Image.fromarray(colours), (x0, y0))
    draw = ImageDraw.Draw(image)
    draw.text((image.width // 2, 4), "greedy action, cart at rest", ink, font, "mt")
    draw.text((x0 + mid, y0 + size + f + 7), "pole angle (rad)", ink, font, "mt")
    ticks = zip((0, mid, size), "lmr", "amd", (-angle, 0, angle), (spin, 0, -spin), strict=True)
    for at, x_side, y_side, a, s in ticks:
        draw.text((x0 + at, y0 + size + 3), f"{a:g}", ink, font, x_side + "t")
        draw.text((x0 - 4, y0 + at), f"{s:g}", ink, font, "r" + y_side)
    for row, (name, colour) in enumerate((("push left", LEFT), ("push right", RIGHT))):
        x, y = x0 + size + 10, y0 + mid + (row - 1) * (f + 8)
        draw.rectangle([x, y, x + f - 2, y + f - 2], fill=colour)
        draw.text((x + f + 4, y + f // 2 - 1), name, ink, font, "lm")
    label = Image.new("RGB", (size + 2 * f, f + 4), "white")  # Pillow writes level: turn it
    ImageDraw.Draw(label).text((mid + f, f // 2 + 2), "angular velocity (rad/s)", ink, font, "mm")
    image.paste(label.rotate(90, expand=True), (2, y0 - f))
    return image


# ---- Where it runs: a terminal, a log file, or a notebook (Jupyter, JupyterHub, Colab) --------
def in_notebook() -> bool:
    """Is this running in a notebook's kernel? Jupyter, JupyterHub and Colab all run ipykernel."""
    if "ipykernel" not in sys.modules:  # imported by the kernel only: a terminal has none
        return False
    from IPython import get_ipython

    return getattr(get_ipython(), "kernel", None) is not None  # not a plain IPython shell


def command_line_flags() -> list[str]:
    """The flags after the script's name; in a kernel (argv `-f kernel.json`), those of %run."""
    here = globals().get("__file__")  # None when this code was pasted into a notebook's cell
    ran = here is not None and Path(sys.argv[0]).resolve() == Path(here).resolve()
    return sys.argv[1:] if ran or not in_notebook() else []


def shell_command(args: list[str]) -> str:
    """`args` quoted for sh, bash and zsh (Windows: for cmd and PowerShell); a cell's: after `!`."""
    line = subprocess.list2cmdline(args) if os.name == "nt" else shlex.join(args)
    return "!" + line if in_notebook() else line


def python_command() -> str:
    """This Python as the user types it: its name if the PATH finds it there, else its path."""
    found = shutil.which(Path(sys.executable).name)
    same = found is not None and os.path.samefile(found, sys.executable)
    return Path(sys.executable).name if same else sys.executable


def stop_name(signum: int) -> str:
    """The stop in the learner's words: Ctrl-C, a notebook's stop button (both SIGINT), SIGTERM."""
    if signum == signal.SIGINT:
        return "the stop button" if in_notebook() else "Ctrl-C"
    return signal.Signals(signum).name


def stop_line(signum: int, log: RunLog) -> str:
    """ "Stopped by SIGTERM." and, once a model is saved, the command that records its videos."""
    line = f"Stopped by {stop_name(signum)}."
    if log.best_model is not None:
        here = globals().get("__file__") or "dqn_cartpole.py"  # in a cell: the tutorial's name
        script = sys.argv[0] if Path(sys.argv[0]).name == Path(here).name else here  # as typed
        play = [python_command(), script, "--play", str(log.best_model)]
        line += f" To record the videos: {shell_command(play)}"
    return line


class Console:
    """stdout or stderr, whose failure costs the output, never the run: a closed or broken pipe
    (`| head`), a full disk, no stream at all (`>&-`)."""

    def __init__(self, stream):
        self.stream = stream if stream is not None else open(os.devnull, "w", encoding="utf-8")

    def __getattr__(self, name: str):
        return getattr(self.stream, name)

    def write(self, text: str) -> int:
        with contextlib.suppress(OSError, ValueError):
            return self.stream.write(text)
        self.lost()
        return len(text)

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            return self.stream.flush()
        self.lost()

    def lost(self) -> None:
        """What follows goes nowhere: Python's own flush at exit then has nothing to fail at."""
        with contextlib.suppress(Exception):
            os.dup2(os.open(os.devnull, os.O_WRONLY), self.stream.fileno())


def warn(message: str) -> None:
    tqdm.write(f"warning: {message}", file=sys.stderr)  # above the progress bar, if there is one


# ---- The videos, the GIF and the window ------------------------------------------------------
VIDEO_PREFIX = "rl-video"
GIF_STEP, GIF_SECONDS, GIF_SIZE = 3, 10, (240, 160)  # 50 fps / 3: 16.7 fps, 2/5 the size


class StreamingRecordVideo(RecordVideo):
    """RecordVideo handing each frame to ffmpeg as it is drawn, not all 1500 (1 GB) at the end."""

    def __init__(self, env: gym.Env, video_folder: str, log: RunLog):
        log.making_videos = True  # from here on, what fails costs the video only (exit 3)
        log.bar.close()  # training is over: the lines after it go below the bar
        if any(Path(video_folder).glob(f"{VIDEO_PREFIX}-*")):
            print(f"Replacing the videos in {video_folder}/", flush=True)
        with warnings.catch_warnings():  # its own "overwriting" notice, said above in plain words
            warnings.simplefilter("ignore")
            super().__init__(env, video_folder, lambda _: True, name_prefix=VIDEO_PREFIX)
        self.log, self.folder, self.ffmpeg, self.gif_frames = log, Path(video_folder), None, []
        self.whole = {}  # each finished video's temporary file, renamed once all are whole

    def step(self, action):
        result = super().step(action)
        if self.recording and (result[2] or result[3]):  # the episode is over: its video too
            self.stop_recording()
        return result

    def _capture_frame(self) -> None:
        frame, size = draw_cartpole(self.env.unwrapped)
        number = len(self.recorded_frames)
        self.recorded_frames.append(None)  # RecordVideo counts them against video_length
        if self.ffmpeg is None:  # a temporary name: a video cut short never replaces a whole one
            self.path = self.folder / f"{self._video_name}.mp4"
            self.tmp = self.folder / f".{self._video_name}.tmp.mp4"
            self.ffmpeg = start_ffmpeg(self.tmp, size, self.frames_per_sec)
        try:
            self.ffmpeg.stdin.write(frame)
        except OSError:  # ffmpeg has stopped: WriteError, in its own words
            self.stop_recording(kill=True)
        if self.episode_id == 0 and number in range(0, GIF_SECONDS * self.frames_per_sec, GIF_STEP):
            image = Image.frombytes("RGB", size, frame)  # the first video's start
            small = image.resize(GIF_SIZE, Image.Resampling.BOX)  # averaged: 2.5 pixels to 1
            # CartPole has a handful of colours; the fast quantizer finds them in a third the time
            self.gif_frames.append(small.quantize(8, Image.Quantize.FASTOCTREE))

    def stop_recording(self, kill: bool = False) -> None:
        """ffmpeg ends the video, for close() to name; killed (cut short) or failed, it goes."""
        if self.ffmpeg is not None:
            ffmpeg, self.ffmpeg = self.ffmpeg, None
            if kill:
                ffmpeg.kill()
            ffmpeg.communicate()  # its input closed, ffmpeg encodes what it still holds and ends
            with ffmpeg.log as log:
                log.seek(0)
                said = log.read().decode(errors="replace").splitlines()
            if ffmpeg.returncode != 0 or kill:  # its first message is the first cause
                self.tmp.unlink(missing_ok=True)
                why = said[0].rsplit(": ", 1)[-1] if said else "the encoder stopped"
                raise WriteError(f"cannot write {self.path}: {why}") from None
            self.whole[self.tmp] = self.path
        self.recorded_frames, self.recording, self._video_name = [], False, None

    def close(self) -> None:
        cut_short = self.recording  # a whole video ended with its episode; a failed one did not
        with contextlib.suppress(WriteError):  # killed: the stop or the closed window says why
            self.stop_recording(kill=True)
        super().close()
        try:  # the earlier videos stay until every new one is whole
            for tmp, path in list(self.whole.items()) if not cut_short else []:
                os.replace(tmp, path)
                del self.whole[tmp]
        except OSError as error:
            raise WriteError(f"cannot write {path}: {error.strerror}") from None
        finally:  # cut short or failed: none of this run's videos replaces an earlier one
            for tmp in self.whole:
                tmp.unlink(missing_ok=True)
        if cut_short or self.episode_id < 0:
            return
        for old in self.folder.glob(f"{VIDEO_PREFIX}-episode-*.mp4"):  # an earlier, longer run's
            if (number := old.stem.rsplit("-", 1)[1]).isdigit() and int(number) > self.episode_id:
                old.unlink()
        gif = self.folder / f"{VIDEO_PREFIX}-episode-0.gif"  # the dashboard shows no mp4
        try:
            save_gif(self.gif_frames, gif, 1000 * GIF_STEP // self.frames_per_sec)
            self.log.chart({"test/video": swanlab.Video(str(gif), caption="test episode 0")}, 0)
        except Exception as error:  # the mp4 files are there; the GIF is a bonus
            warn(f"no GIF for the dashboard ({type(error).__name__}: {error})")


def save_gif(frames: list, path: Path, delay_ms: int) -> None:
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=delay_ms, loop=0)


def draw_cartpole(cartpole: gym.Env) -> tuple[np.ndarray, tuple[int, int]]:
    """CartPole's next frame, as its render() draws it (rows of RGB pixels), and its size."""
    import pygame
    from pygame import gfxdraw

    if stop_requested():  # the videos' and the window's frames: no step to finish, stop at once
        raise KeyboardInterrupt(stop_signal)
    # WHY: render() draws all 600x400 pixels afresh, turns them upside down, copies them, and
    # NumPy copies them one by one (3 ms). Only the cart and the pole move: only a box round them
    # is drawn again here, render()'s shapes moved by whole pixels (tested: the same frames).
    size = width, height = cartpole.screen_width, cartpole.screen_height
    scale, rail = width / (cartpole.x_threshold * 2), 100  # the cart's middle is 100 px up
    if getattr(cartpole, "ground", None) is None:  # the empty picture: white, the rail in black
        cartpole.ground = pygame.Surface(size, 0, 32, (0xFF0000, 0xFF00, 0xFF, 0))
        cartpole.ground.fill("white")
        gfxdraw.hline(cartpole.ground, 0, width, height - 1 - rail, (0, 0, 0))
        cartpole.screen, cartpole.drawn = cartpole.ground.copy(), cartpole.ground.get_rect()
        cartpole.rgb = np.zeros((height, width, 3), np.uint8)
    position, _, angle, _ = cartpole.state
    cart_x, top = position * scale + width / 2.0, scale * (2 * cartpole.length) - 5
    cart = [(cart_x + x, rail + y) for x, y in ((-25, -15), (-25, 15), (25, 15), (25, -15))]
    corners = (-5, -5), (-5, top), (5, top), (5, -5)
    turned = (pygame.math.Vector2(xy).rotate_rad(-angle) for xy in corners)
    pole = [(x + cart_x, y + rail + 7.5) for x, y in turned]
    # the box, bounded where the shapes cross the screen's edges: pygame clips them there
    xs, ys = zip(*cart, *pole, strict=True)
    left, bottom = (max(0, math.floor(min(v)) - 8) for v in (xs, ys))
    right, up = (min(end, math.ceil(max(v)) + 8) for v, end in ((xs, width), (ys, height)))
    box = pygame.Surface((max(right - left, 1), max(up - bottom, 1)), 0, cartpole.ground)
    box.fill("white")
    for shape, colour in (cart, (0, 0, 0)), (pole, (202, 152, 101)):
        moved = [(x - left, y - bottom) for x, y in shape]
        gfxdraw.aapolygon(box, moved, colour)
        gfxdraw.filled_polygon(box, moved, colour)
    for circle in gfxdraw.aacircle, gfxdraw.filled_circle:  # the axle
        circle(box, int(cart_x) - left, int(rail + 7.5) - bottom, 5, (129, 132, 203))
    gfxdraw.hline(box, -left, width - left, rail - bottom, (0, 0, 0))
    erased = cartpole.screen.blit(cartpole.ground, cartpole.drawn, cartpole.drawn)  # the last box
    box = pygame.transform.flip(box, False, True)  # render() draws upwards
    cartpole.drawn = cartpole.screen.blit(box, (left, height - bottom - box.get_height()))
    pixels = pygame.surfarray.pixels3d(cartpole.screen)  # RGB, whatever the order in memory
    for x, y, w, h in erased, cartpole.drawn:  # into the frame ffmpeg reads: 3/4 of pygame's bytes
        cartpole.rgb[y : y + h, x : x + w] = pixels[x : x + w, y : y + h].transpose(1, 0, 2)
    del pixels  # it locks the screen, which the next blit draws on
    return cartpole.rgb, size


def start_ffmpeg(path: Path, size: tuple[int, int], fps: int) -> subprocess.Popen:
    """ffmpeg, reading raw frames on its stdin, writing H.264 as RecordVideo's moviepy does."""
    import imageio_ffmpeg  # the ffmpeg that moviepy installs

    raw = "-y -v error -f rawvideo -pix_fmt rgb24 -s {}x{} -r {} -i -".format(*size, fps)
    # ultrafast, one thread: a third of the CPU of x264's defaults (larger files, ~70 KB per
    # 1000 frames, that look the same), so ffmpeg keeps pace with pygame on the other core.
    h264 = "-c:v libx264 -preset ultrafast -threads 1 -pix_fmt yuv420p"
    command = [imageio_ffmpeg.get_ffmpeg_exe(), *raw.split(), *h264.split(), str(path)]
    log = tempfile.TemporaryFile()  # ffmpeg's messages: a file, which never fills up as a pipe can
    # Its own session (process group on Windows): Ctrl-C reaches this script, which decides.
    group = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
    ffmpeg = subprocess.Popen(
        command, stdin=subprocess.PIPE, stderr=log, start_new_session=True, creationflags=group
    )
    ffmpeg.log = log
    with contextlib.suppress(ImportError, AttributeError, OSError):  # Linux: a whole frame fits,
        import fcntl  # so pygame draws the next one while ffmpeg encodes this one

        fcntl.fcntl(ffmpeg.stdin, fcntl.F_SETPIPE_SZ, 1 << 20)
    return ffmpeg


class WindowClosed(Exception):
    """The learner closed the window that --watch opened."""


class Window(HumanRendering):
    """HumanRendering (50 frames/s), drawn as the videos are; closing the window ends playback."""

    killed: list = []  # the window's X connection, once Xlib reports it lost (xkill): see main

    def __init__(self, env: gym.Env):
        """Opens the window before anything is drawn, so that its failure is said as its own."""
        import pygame

        super().__init__(env)
        self.killed.clear()  # a notebook's earlier run may have lost its window
        size = env.unwrapped.screen_width, env.unwrapped.screen_height
        try:  # SDL_VIDEODRIVER naming a system this is not, a screen SDL cannot draw on
            pygame.display.init()
            if pygame.display.get_driver() == "offscreen":  # DISPLAY names a screen gone
                raise pygame.error("no screen answered; SDL chose to draw off-screen")
            self.window, self.clock = pygame.display.set_mode(size), pygame.time.Clock()
        except pygame.error as error:
            why = f"--watch: SDL could not open a window ({error}); without --watch"
            raise InputError(f"{why} the test episodes are still recorded") from None
        pygame.display.set_caption("CartPole-v1 · dqn_cartpole.py")
        self.outlive_a_kill()

    def _render_frame(self) -> None:
        import pygame

        draw_cartpole(cartpole := self.env.unwrapped)
        self.window.blit(cartpole.screen, (0, 0))
        pygame.display.flip()
        if self.killed or pygame.event.get(pygame.QUIT):
            raise WindowClosed
        self.clock.tick(self.metadata["render_fps"])

    def outlive_a_kill(self) -> None:
        """A window killed (xkill) loses its X connection, and Xlib ends the process from C. From
        libX11 1.7 its handlers may return instead: the next frame then ends the playback."""
        import ctypes.util

        import pygame

        if pygame.display.get_driver() != "x11":  # Windows, macOS, Wayland: no Xlib to tell
            return
        with contextlib.suppress(Exception):  # an Xlib older than 1.7: it ends the process
            x11 = ctypes.CDLL(ctypes.util.find_library("X11"))
            address = ctypes.pythonapi.PyCapsule_GetPointer
            address.restype, address.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
            display = address(pygame.display.get_wm_info()["display"], b"display")

            @ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)
            def lost(connection) -> int:  # then Xlib's exit: ours below, or the process's
                if connection != display:  # the X server itself gone
                    print("dqn_cartpole.py: error: --watch: the X server is gone", file=sys.stderr)
                return 0

            ended = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)
            ended = ended(lambda connection, _: self.killed.append(connection))
            x11.XSetIOErrorExitHandler.argtypes = [ctypes.c_void_p, type(ended), ctypes.c_void_p]
            x11.XSetIOErrorExitHandler(display, ended, None)
            x11.XSetIOErrorHandler(lost)
            Window.handlers = lost, ended  # alive with the process: Xlib keeps the one in use

    def close(self) -> None:
        if self.killed:  # SDL would wait for ever on the lost connection: main() exits without it
            self.window = self.env.unwrapped.screen = None
        super().close()


# ---- Stopping: Ctrl-C, SIGTERM, SIGHUP, one way ----------------------------------------------
stop_signal: int | None = None  # set by Ctrl-C or SIGTERM


def stop_requested() -> bool:
    return stop_signal is not None  # training then stops after its current step


def on_stop_signal(signum: int, frame) -> None:
    """The first signal asks for a stop after the current step; the second stops at once."""
    global stop_signal
    if stop_signal is not None:
        raise KeyboardInterrupt(signum)
    stop_signal = signum
    name = stop_name(signum)
    tqdm.write(f"\n{name[0].upper()}{name[1:]}: stopping after this step (again to quit at once).")


@contextlib.contextmanager
def stop_signals_handled():
    """on_stop_signal for each stop signal while main() runs, then the handlers as they were.
    One ignored at the start stays so: `nohup` ignores SIGHUP, a shell's background job SIGINT."""
    global stop_signal
    stop_signal = None
    # What Ctrl-C, `timeout`, `kill`, `docker stop`, a job scheduler or a closed terminal send
    stops = [getattr(signal, s) for s in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, s)]
    handled = [s for s in stops if signal.getsignal(s) is not signal.SIG_IGN]
    previous = {s: signal.signal(s, on_stop_signal) for s in handled}
    try:
        yield
    finally:
        stop_signal = None
        for s, handler in previous.items():
            signal.signal(s, handler)


# ---- Speed: two shortcuts the lesson takes, each with the same results, each measured ---------
class Faster:
    """What DQNAgent uses to run faster than the tutorial's lines would (docs/performance.md)."""

    @staticmethod
    def greedy(q_net: QNetwork) -> Callable[[np.ndarray], int] | None:
        """q_net's argmax for one state, in NumPy on its own weights; None where it cannot be."""
        # WHY NUMPY: acting is one state at a time, ~300,000 times a run: PyTorch spends ~25-30 µs
        # a call on bookkeeping around <1 µs of arithmetic, NumPy ~5 µs (a default run: ~7 s less).
        # CORRECTNESS: views (.numpy()), not copies: it acts on what Adam and load_state_dict write.
        on_cpu = q_net.fc[0].weight.device.type == "cpu"
        if not on_cpu or not all(isinstance(layer, nn.Linear | nn.ReLU) for layer in q_net.fc):
            return None
        layers = [[p.detach().numpy() for p in layer.parameters()] for layer in q_net.fc]

        def greedy(x: np.ndarray) -> int:  # x: the state, then each layer's output
            for weights in layers:  # [weight, bias] for a Linear layer, [] for a ReLU
                x = weights[0] @ x + weights[1] if weights else np.maximum(x, 0)
            return int(x.argmax())

        return greedy

    # A CPU has no fused Adam before torch 2.4 (an Intel Mac's 2.2.2): there, the plain one.
    FUSED = torch.__version__ >= (2, 4)

    @staticmethod
    def adam_steps(optimizer: optim.Adam) -> None:
        """Adam's step and zero_grad without the checks around them, on its settings and state read
        at each step (tested: bit for bit); an Adam it would compute otherwise is left as it is."""
        # WHY: Adam.step's profiler, hook and compiler checks: ~20 µs, a sixth of a gradient step.
        group = optimizer.param_groups[0]
        unlike = ("amsgrad", "capturable", "differentiable", "decoupled_weight_decay")
        if len(optimizer.param_groups) > 1 or any(group.get(k) for k in unlike):
            return
        for p in group["params"]:  # the state Adam.step would create at its first call
            moments = {"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
            step_count = torch.zeros((), dtype=torch.float32, device=p.device)
            optimizer.state[p] = {"step": step_count} | moments

        @torch.no_grad()
        def step(self: optim.Adam, closure: Callable | None = None):
            loss = None if closure is None else torch.enable_grad()(closure)()
            group = self.param_groups[0]  # anew: a scheduler or load_state_dict may change it
            params, states = group["params"], [self.state[p] for p in group["params"]]
            (beta1, beta2), settings = group["betas"], ("lr", "eps", "weight_decay", "maximize")
            options = dict(fused=group["fused"], beta1=beta1, beta2=beta2, amsgrad=False)
            options |= {k: group[k] for k in settings}
            moments = [[state[k] for state in states] for k in ("exp_avg", "exp_avg_sq")]
            steps = [state["step"] for state in states]
            adam_update(params, [p.grad for p in params], *moments, [], steps, **options)
            return loss

        def zero_grad(self: optim.Adam, set_to_none: bool = True) -> None:
            for p in self.param_groups[0]["params"]:
                p.grad = None

        optimizer.step = types.MethodType(step, optimizer)  # methods, as LR schedulers expect
        optimizer.zero_grad = types.MethodType(zero_grad, optimizer)

    @staticmethod
    def skip_compiler_import() -> contextlib.AbstractContextManager:
        """Until main() returns, add_param_group is marked never compiled, as torch.optim.Adam(...)
        marks it after importing PyTorch's compiler (~0.9 s), which nothing here uses."""
        # INTERNALS (torch 2.13-2.14, docs/versions.md): torch._disable_dynamo caches its wrapper
        # as the function's __dynamo_disable. Where torch does otherwise, the import happens.
        method = getattr(torch.optim.Optimizer.add_param_group, "__wrapped__", None)
        if method is None or hasattr(method, "__dynamo_disable"):
            return contextlib.nullcontext()
        return mock.patch.object(method, "__dynamo_disable", method, create=True)


# ---- main(): the only entry point ------------------------------------------------------------
def play_saved_model(config: Config, log: RunLog) -> None:
    path = Path(config.play)
    with contextlib.suppress(OSError):  # a name the system refuses: load_model says why
        if path.is_dir():  # `--play output`: the model a run keeps there
            if not (path / "best_model.pth").is_file():
                raise InputError(f"--play {path}: a folder with no best_model.pth; give a file")
            path = path / "best_model.pth"
    agent = DQNAgent(state_dim=4, action_dim=2, config=config)
    agent.q_net.load_state_dict(load_model(path, state_dim=4, action_dim=2).state_dict())
    start_swanlab(config, log)
    test_playback(config, agent.greedy_action, log)


def report(config: Config, log: RunLog) -> int:
    """Print the closing lines; return the exit code (see main)."""
    if not config.play:
        if log.best_model is not None:
            print(f"\nBest evaluation: {log.best_avg_reward:.1f} (episode {log.best_episode})")
            print(f"Model:   {log.best_model}\nMetrics: {log.output / 'metrics.csv'}")
        else:  # stopped before the first evaluation
            print("\nNo evaluation yet, so no model was saved.")
        print(f"Total time: {time.time() - log.started:.1f} s")
    if stop_requested():
        print(stop_line(stop_signal, log), log.where(), sep="\n")
        return 128 + stop_signal
    if recorded := log.making_videos and config.test_episodes and not log.video_error:
        print(f"Videos:  {config.video_dir}/")
    print(log.where())
    first = Path(config.video_dir) / f"{VIDEO_PREFIX}-episode-0.mp4"
    if recorded and in_notebook() and first.is_file():
        from IPython.display import Video, display  # embedded in the cell: Colab serves no files

        display(Video(str(first), embed=True, html_attributes="controls autoplay loop muted"))
    if log.video_error:
        print(f"error: {log.video_error}", file=sys.stderr)
        return 3
    return 0


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done, 2 bad input, 3 finished without a video, 4 a result could not be
    written (a full disk), 128 + the signal's number when stopped (130 Ctrl-C, 143 SIGTERM)."""
    started = time.time()
    # Put back after the run, as the signal handlers are: a notebook's kernel goes on.
    safe = dict(stdout=Console(sys.stdout), stderr=Console(sys.stderr))
    with mock.patch.multiple(sys, **safe), stop_signals_handled(), Faster.skip_compiler_import():
        try:
            config = parse_args(command_line_flags() if argv is None else argv)
        except SystemExit as done:  # --help, or a bad flag, whose one line is printed already
            return done.code  # returned: in a notebook a raised SystemExit, even 0, is an error
        pip = "%pip" if in_notebook() else "pip"  # %pip installs into the kernel's own Python
        if problems := version_problems(installed_versions(), pip):  # before any file is written
            print(*(f"dqn_cartpole.py: error: {p}" for p in problems), sep="\n", file=sys.stderr)
            return 2
        for stream in sys.stdout, sys.stderr:  # a console that lacks "ε" prints "?" instead
            with contextlib.suppress(AttributeError):
                stream.reconfigure(errors="replace")
        torch.set_num_threads(1)  # the network is tiny: a second thread costs more than it saves
        if not config.watch:  # pygame draws the frames with no display, whatever SDL was told
            os.environ["SDL_VIDEODRIVER"] = "dummy"
        os.environ.setdefault("SDL_AUDIODRIVER", "dummy")  # no ALSA errors without a sound card
        log = RunLog(config, started)
        try:
            # Linux shows windows through X or Wayland; with neither, SDL draws off-screen.
            screen = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
            if config.watch and sys.platform == "linux" and not screen:
                why = "--watch: no screen to open a window on here (no DISPLAY: over SSH, say);"
                raise InputError(f"{why} without --watch the test episodes are still recorded")
            if not config.play:
                claim_folder(Path(config.output_dir), "--output-dir")
            if not config.no_video:
                claim_folder(Path(config.video_dir), "--video-dir")
            with log:  # ends the SwanLab run and writes metrics.csv, however the run ends
                (play_saved_model if config.play else train_and_test)(config, log)
            return report(config, log)
        except (InputError, WriteError, MemoryError) as error:
            if isinstance(error, MemoryError):  # the replay buffer is allocated first, at once
                error = InputError("not enough memory for --replay-buffer-size; give a smaller one")
            print(f"dqn_cartpole.py: error: {error}", file=sys.stderr)
            return 2 if isinstance(error, InputError) else 4
        except KeyboardInterrupt as stop:  # a second signal, or one during the test videos
            signum = stop.args[0] if stop.args else signal.SIGINT
            print(f"\n{stop_line(signum, log)}", file=sys.stderr)
            return 128 + signum
        finally:  # a kernel outlives its runs: its next run, or a `!python … --play`, finds
            for lock in HELD_LOCKS.values():  # the folders free (closing the file drops its flock)
                lock.close()
            HELD_LOCKS.clear()


if __name__ == "__main__":  # also when the whole file is pasted into a notebook's cell
    exit_code = main()
    if Window.killed and not in_notebook():  # pygame's exit would wait for ever on the lost window
        sys.stdout.flush()
        os._exit(exit_code)
    if not in_notebook():  # a kernel shows SystemExit as an error, even SystemExit(0)
        sys.exit(exit_code)
