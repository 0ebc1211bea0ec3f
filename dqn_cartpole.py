"""Deep Q-Network (DQN) on CartPole-v1, in one file.

This is the script that goes with the DQN-CartPole tutorial: the same QNetwork and DQNAgent,
the same training loop with ε decay and an evaluation every 10 episodes, the best model saved
to output/, a video of the trained agent in dqn_videos/ and every curve logged to SwanLab.

    python dqn_cartpole.py            # train, evaluate, record the videos
    python dqn_cartpole.py --help     # every setting, with its default
"""

import argparse
import contextlib
import csv
import json
import math
import os
import platform
import random
import signal
import socket
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit

import gymnasium as gym
import numpy as np
import swanlab
import torch
import torch.nn as nn
import torch.nn.functional as F
from gymnasium.wrappers import RecordVideo
from torch.optim.adam import adam as adam_update

ENV_ID = "CartPole-v1"


# ---------------------------------------------------------------------------------------------
# Settings: each one is declared once, here. The command line, the agent and the SwanLab config
# all read this one object, so no value is written twice.
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Range:
    """The values a numeric setting accepts: low..high, each end included unless marked open."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False

    def __contains__(self, value: float) -> bool:
        above_low = value > self.low if self.low_open else value >= self.low
        return above_low and value <= self.high

    def __str__(self) -> str:
        if self.high == math.inf:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"


def setting(default, help: str, valid: Range | None = None, **argparse_options):
    """A Config field: its default, its --help text, its valid range, other argparse options."""
    return field(default=default, metadata={"help": help, "valid": valid, **argparse_options})


POSITIVE, NON_NEGATIVE, UNIT = Range(1), Range(0), Range(0, 1)


@dataclass
class Config:
    # training
    episodes: int = setting(600, "number of training episodes", POSITIVE)
    eval_every: int = setting(10, "evaluate the greedy policy every N episodes", POSITIVE)
    eval_episodes: int = setting(5, "greedy episodes per evaluation", POSITIVE)
    seed: int = setting(
        42, "random seed for Python, NumPy, PyTorch and the environments", NON_NEGATIVE
    )
    # DQN
    # Defaults differ from the tutorial's where the seed benchmark measured a gain (README).
    lr: float = setting(3e-3, "Adam learning rate", Range(0, low_open=True))
    batch_size: int = setting(128, "transitions per gradient step", POSITIVE)
    gamma: float = setting(0.99, "discount factor", UNIT)
    buffer_size: int = setting(
        10_000, "replay buffer capacity (oldest transitions are dropped)", POSITIVE
    )
    target_update_freq: int = setting(
        100, "copy q_net into target_net every N gradient steps", POSITIVE
    )
    solved_reward: float = setting(
        500.0,
        "pause learning while the latest evaluation averages at least this, and evaluate at "
        "once a training episode that scores it (500, CartPole-v1's maximum; 0: neither)",
        NON_NEGATIVE,
    )
    epsilon_start: float = setting(1.0, "exploration rate ε at the first episode", UNIT)
    epsilon_end: float = setting(0.01, "lowest ε", UNIT)
    epsilon_decay: float = setting(
        0.98, "ε is multiplied by this after every episode", Range(0, 1, low_open=True)
    )
    device: str = setting("cpu", "torch device", choices=["cpu", "cuda"])
    # outputs
    output_dir: str = setting("output", "where best_model.pth, best_model.json, metrics.csv go")
    video_dir: str = setting("dqn_videos", "where the test videos (mp4) go")
    test_episodes: int = setting(
        3, "episodes the best model plays (and records) after training", NON_NEGATIVE
    )
    max_test_steps: int = setting(
        1500, "step limit of a test episode (training uses 500)", POSITIVE
    )
    no_video: bool = setting(False, "play the test episodes without recording videos")
    play: str = setting("", "skip training: replay this saved model (a .pth file)", metavar="MODEL")
    # SwanLab
    swanlab_mode: str = setting(
        "auto",
        "auto: the cloud if you ran `swanlab login`, else a local dashboard (`swanlab watch`)",
        choices=["auto", "cloud", "local", "offline", "disabled"],
    )
    project: str = setting("RL-All-In-One", "SwanLab project")
    experiment_name: str = setting("DQN-CartPole-v1", "SwanLab experiment name")


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str):
        # One line that names the flag, instead of the whole usage block above it.
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def checked(kind: type, valid: Range | None):
    """An argparse type that converts a flag's text and rejects values outside `valid`."""

    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None
        if valid is not None and value not in valid:
            raise argparse.ArgumentTypeError(f"must be {valid}, got {text}")
        return value

    convert.__name__ = kind.__name__  # argparse names the type in its messages
    return convert


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        description="Train a DQN agent on CartPole-v1 and watch it on SwanLab.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for f in fields(Config):
        flag = "--" + f.name.replace("_", "-")
        options = {k: v for k, v in f.metadata.items() if k != "valid"}
        if f.type is bool:
            parser.add_argument(flag, action="store_true", **options)
        else:
            kind = checked(f.type, f.metadata["valid"])
            parser.add_argument(flag, type=kind, default=f.default, **options)
    return parser


def parse_args(argv: list[str] | None = None) -> Config:
    """Read the command line; reject bad values before any work starts (exit code 2)."""
    parser = build_parser()
    config = Config(**vars(parser.parse_args(argv)))
    if config.batch_size > config.buffer_size:
        parser.error(
            f"--batch-size ({config.batch_size}) must be <= --buffer-size ({config.buffer_size})"
        )
    if config.epsilon_end > config.epsilon_start:
        start, end = config.epsilon_start, config.epsilon_end
        parser.error(f"--epsilon-end ({end}) must be <= --epsilon-start ({start})")
    if config.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: PyTorch sees no CUDA GPU here; use --device cpu")
    return config


def set_seed(seed: int) -> None:
    """Seed every source of randomness the script uses, so a run can be repeated exactly."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_env(seed: int, **kwargs) -> gym.Env:
    # CartPole-v1 keeps its standard 500-step limit here, so returns compare with published ones.
    env = gym.make(ENV_ID, **kwargs)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    return env


# ---------------------------------------------------------------------------------------------
# The Q-network: a state goes in, one Q-value per action comes out.
# ---------------------------------------------------------------------------------------------
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


def greedy_policy(q_net: QNetwork) -> Callable[[np.ndarray], int]:
    """The action with the highest Q-value: what the agent does when it stops exploring."""
    device = q_net.fc[0].weight.device
    if device.type != "cpu":  # a GPU's memory has no NumPy view: ask the network itself

        def act_on_device(state: np.ndarray) -> int:
            with torch.inference_mode():  # no autograd bookkeeping: nothing learns from this
                return int(
                    q_net(torch.as_tensor(state, dtype=torch.float32, device=device)).argmax()
                )

        return act_on_device

    # WHY NUMPY: acting is one state at a time, hundreds of thousands of times a run. For that,
    # PyTorch spends ~30-60 µs per call on bookkeeping around under 1 µs of arithmetic; NumPy
    # does the same three products in ~6 µs, and a default run takes ~14 s less.
    # CORRECTNESS: .numpy() gives views of q_net's own memory, not copies. Adam and
    # load_state_dict update the weights in place, so the policy always acts on the latest ones.
    (w1, b1), (w2, b2), (w3, b3) = (
        (layer.weight.detach().numpy(), layer.bias.detach().numpy())
        for layer in q_net.fc
        if isinstance(layer, nn.Linear)
    )

    def act(state: np.ndarray) -> int:
        hidden = np.maximum(w1 @ state + b1, 0)  # Linear, then ReLU: QNetwork.fc, layer by layer
        hidden = np.maximum(w2 @ hidden + b2, 0)
        return int((w3 @ hidden + b3).argmax())

    return act


def play_episode(env: gym.Env, policy: Callable[[np.ndarray], int]) -> tuple[float, int]:
    """One episode acting with `policy`; returns its total reward and its length."""
    state, _ = env.reset()
    total_reward, steps = 0.0, 0
    while True:
        state, reward, terminated, truncated, _ = env.step(policy(state))
        total_reward += float(reward)
        steps += 1
        # An episode ends when the pole falls (terminated) or the time limit hits (truncated).
        if terminated or truncated:
            return total_reward, steps


# ---------------------------------------------------------------------------------------------
# Experience replay: a fixed-size FIFO memory of transitions, sampled at random so that one
# gradient step does not see a run of strongly correlated consecutive states.
# ---------------------------------------------------------------------------------------------
class ReplayBuffer:
    def __init__(self, capacity: int, state_dim: int, rng: np.random.Generator):
        self.capacity, self.rng = capacity, rng
        self.states = np.zeros((capacity, state_dim), dtype=np.float32)
        self.next_states = np.zeros((capacity, state_dim), dtype=np.float32)
        self.actions = np.zeros(capacity, dtype=np.int64)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=np.float32)
        self.size, self.next_index = 0, 0

    def __len__(self) -> int:
        return self.size

    def append(self, state, action, reward, next_state, terminated) -> None:
        i = self.next_index
        self.states[i], self.actions[i], self.rewards[i] = state, action, reward
        self.next_states[i], self.terminated[i] = next_state, terminated
        # When full, the write position wraps around and overwrites the oldest transition.
        self.next_index = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int) -> tuple[np.ndarray, ...]:
        idx = self.rng.integers(0, self.size, size=batch_size)
        return (
            self.states[idx],
            self.actions[idx],
            self.rewards[idx],
            self.next_states[idx],
            self.terminated[idx],
        )


# ---------------------------------------------------------------------------------------------
# The agent: ε-greedy acting, replay memory, and the DQN update with a target network.
# ---------------------------------------------------------------------------------------------
class FusedAdam:
    """Adam as torch.optim.Adam(params, lr, fused=True) does it, bit for bit (tested)."""

    # WHY NOT torch.optim.Adam: its first use imports PyTorch's compiler (~0.9 s), and each step
    # passes through compiler guards (~80 µs, a sixth of a gradient step). Seed 5 reached its
    # first perfect evaluation 1.5 s sooner without them. PyTorch's functional Adam has neither.

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params = list(params)
        self.lr, self.betas, self.eps = lr, betas, eps
        # Adam's state per weight tensor: running means of the gradient and of its square,
        # and the step count for their bias correction.
        self.exp_avgs = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sqs = [torch.zeros_like(p) for p in self.params]
        self.steps = [torch.zeros((), device=p.device) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        adam_update(
            self.params,
            [p.grad for p in self.params],
            self.exp_avgs,
            self.exp_avg_sqs,
            [],  # max_exp_avg_sqs: only AMSGrad keeps them
            self.steps,
            fused=True,  # one kernel for all six tensors instead of a few small ops per tensor
            amsgrad=False,
            beta1=self.betas[0],
            beta2=self.betas[1],
            lr=self.lr,
            weight_decay=0.0,
            eps=self.eps,
            maximize=False,
        )


class DQNAgent:
    def __init__(self, state_dim: int, action_dim: int, config: Config):
        self.config = config
        self.action_dim = action_dim
        self.device = torch.device(config.device)
        self.rng = np.random.default_rng(config.seed)
        self.q_net = QNetwork(state_dim, action_dim).to(self.device)
        self.greedy = greedy_policy(self.q_net)
        # The target network gives the TD target. It starts equal to q_net and then follows it
        # only every target_update_freq steps, so the target does not move with every update.
        self.target_net = QNetwork(state_dim, action_dim).to(self.device)
        self.target_net.load_state_dict(self.q_net.state_dict())
        self.optimizer = FusedAdam(self.q_net.parameters(), lr=config.lr)
        self.replay_buffer = ReplayBuffer(config.buffer_size, state_dim, self.rng)
        self.epsilon = config.epsilon_start
        self.train_steps = 0
        self.learning = True

    def choose_action(self, state: np.ndarray) -> int:
        """ε-greedy: explore with probability ε, otherwise act on what the network has learned."""
        if self.rng.random() < self.epsilon:
            return int(self.rng.integers(self.action_dim))
        return self.greedy(state)

    def store_experience(self, state, action, reward, next_state, terminated: bool) -> None:
        # Store `terminated`, not `done`: an episode cut by the time limit did not really end.
        self.replay_buffer.append(state, action, reward, next_state, terminated)

    def td_target(
        self, rewards: torch.Tensor, next_states: torch.Tensor, terminated: torch.Tensor
    ) -> torch.Tensor:
        """r + γ·max_a' Q_target(s', a'), with no future value after a real end of episode."""
        with torch.no_grad():
            next_q = self.target_net(next_states).max(dim=1).values
        # CORRECTNESS: bootstrap after a truncation too; only a fallen pole has no future.
        return rewards + self.config.gamma * (1.0 - terminated) * next_q

    def train(self) -> float | None:
        """One gradient step on a random batch; returns the loss (None until a batch exists)."""
        if len(self.replay_buffer) < self.config.batch_size:
            return None
        states, actions, rewards, next_states, terminated = (
            torch.as_tensor(a, device=self.device)
            for a in self.replay_buffer.sample(self.config.batch_size)
        )
        q_taken = self.q_net(states).gather(1, actions.unsqueeze(1)).squeeze(1)
        loss = F.mse_loss(q_taken, self.td_target(rewards, next_states, terminated))
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()

        self.train_steps += 1
        if self.train_steps % self.config.target_update_freq == 0:
            self.target_net.load_state_dict(self.q_net.state_dict())
        return loss.item()

    def evaluate(self, env: gym.Env, episodes: int) -> float:
        """Mean return of `episodes` greedy episodes (no exploration, no learning)."""
        return float(np.mean([play_episode(env, self.greedy)[0] for _ in range(episodes)]))

    def save_model(self, path: Path) -> None:
        """Save q_net's weights as a plain state_dict (see save_atomically)."""
        save_atomically(path, lambda f: torch.save(self.q_net.state_dict(), f))


def decay_epsilon(epsilon: float, config: Config) -> float:
    """After each episode explore a little less: early on the Q-values are noise, later they
    are worth trusting. ε never goes below epsilon_end, so the agent keeps exploring a bit."""
    return max(config.epsilon_end, epsilon * config.epsilon_decay)


class InputError(Exception):
    """Something the user gave (a file, a folder) cannot be used; the message says why."""


def load_model(
    path: Path, device: str = "cpu", state_dim: int = 4, action_dim: int = 2
) -> QNetwork:
    """Rebuild a QNetwork from a saved state_dict, or raise InputError saying what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty")
    try:
        # SAFETY: weights_only refuses anything but tensors. A plain pickle can run any code
        # when loaded, and a "pretrained model" from a stranger is exactly such a file.
        with warnings.catch_warnings():  # its warnings would bury the one line that matters
            warnings.simplefilter("ignore")
            state_dict = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:
        if "GLOBAL" in str(error):  # how PyTorch names the function the file wanted to call
            raise InputError(
                f"{path}: refused: the file asks to run code, not just load weights"
            ) from None
        raise InputError(f"{path}: not a PyTorch model file, or a damaged copy of one") from None
    q_net = QNetwork(state_dim, action_dim).to(device)
    problem = state_dict_mismatch(state_dict, q_net)
    if problem:
        raise InputError(f"{path}: not a CartPole QNetwork: {problem}")
    q_net.load_state_dict(state_dict)
    return q_net.eval()


def state_dict_mismatch(state_dict, q_net: QNetwork) -> str | None:
    """The first way `state_dict` fails to fit `q_net`, in words; None if it fits."""
    if not isinstance(state_dict, dict):
        return f"it holds a {type(state_dict).__name__}, not a state_dict"
    expected = q_net.state_dict()
    for key, tensor in expected.items():
        found = state_dict.get(key)
        if not isinstance(found, torch.Tensor):
            return f"{key} is missing"
        if found.shape != tensor.shape:
            return f"{key} has shape {tuple(found.shape)}, expected {tuple(tensor.shape)}"
    extra = sorted(set(state_dict) - set(expected))
    return f"unexpected entries {extra}" if extra else None


# ---------------------------------------------------------------------------------------------
# Files: written to a temporary name and then renamed, so that a run stopped at any moment
# leaves the previous file whole.
# ---------------------------------------------------------------------------------------------
def save_atomically(path: Path, write, mode: str = "wb") -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, mode) as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


METRIC_COLUMNS = [
    "episode",
    "env_steps",
    "wall_time_s",
    "train_reward",
    "episode_length",
    "epsilon",
    "loss",
    "eval_avg_reward",
    "best_avg_reward",
]


def write_metrics(path: Path, rows: list[dict]) -> None:
    def write(f):
        writer = csv.DictWriter(f, fieldnames=METRIC_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)

    save_atomically(path, write, mode="w")


def ensure_writable_dir(path: Path, flag: str) -> None:
    """Create `path` or fail now, before minutes of training are spent on a lost result."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        reason = "it is a file" if path.is_file() else (error.strerror or str(error))
        raise InputError(f"{flag} {path}: cannot write there ({reason})") from None


def library_versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gymnasium": gym.__version__,
        "numpy": np.__version__,
        "swanlab": swanlab.__version__,
    }


# ---------------------------------------------------------------------------------------------
# SwanLab: choose a mode that never asks for a login, since learners may have no account.
# ---------------------------------------------------------------------------------------------
def resolve_swanlab_mode(requested: str) -> str:
    """Map --swanlab-mode to a SwanLab mode; `auto` uses the cloud only with a saved login."""
    if requested != "auto":
        return "online" if requested == "cloud" else requested
    # swanlab.Settings reads SWANLAB_MODE, SWANLAB_API_KEY and the key saved by `swanlab login`.
    settings = swanlab.Settings()
    if os.environ.get("SWANLAB_MODE"):
        return settings.mode
    return "online" if settings.api_key else "local"


class Dashboard:
    """The SwanLab run, if any. A SwanLab failure costs one warning, never the training."""

    def __init__(self, run: "swanlab.Run | None"):
        self.run, self.broken = run, False

    def log(self, data: dict, step: int) -> None:
        if self.run is None or self.broken:
            return
        try:
            self.run.log(data, step=step)
        except Exception as error:
            self.broken = True
            warn(f"SwanLab stopped logging ({error}); training goes on, metrics.csv has it all.")

    def finish(self, state: str = "success") -> None:
        if self.run is not None:
            with contextlib.suppress(Exception):
                self.run.finish(state=state)

    def where(self) -> str:
        if self.run is None:
            return "SwanLab: disabled"
        if self.run.mode == "online":
            return f"SwanLab: {self.run.url}"
        if self.run.mode == "local":
            return f"Dashboard: swanlab watch {Path(self.run.dir).parent}"
        return f"SwanLab run saved offline in {self.run.dir} (upload it with `swanlab sync`)"


def cloud_reachable(timeout: float = 3.0) -> str | None:
    """None if SwanLab's API host answers; otherwise why not. SwanLab itself retries ~15 s."""
    url = urlsplit(swanlab.Settings().api_host)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return None
    except OSError as error:
        return f"cannot reach {url.hostname}: {error.strerror or error}"


def start_swanlab(config: Config, experiment_name: str, extra_config: dict) -> Dashboard:
    mode = resolve_swanlab_mode(config.swanlab_mode)
    if mode == "disabled":
        return Dashboard(None)
    options = dict(
        project=config.project,
        experiment_name=experiment_name,
        config={**asdict(config), **extra_config, "versions": library_versions()},
        description="DQN on CartPole-v1 (dqn_cartpole.py)",
        # The versions above are the ones that matter; SwanLab's own listing of every installed
        # package runs `pip list` first, ~0.35 s before the first episode.
        settings=swanlab.Settings(probe={"requirements": False}),
    )
    try:
        if mode == "online" and (problem := cloud_reachable()):
            raise ConnectionError(problem)  # fail now, not after SwanLab's own retries
        return Dashboard(swanlab.init(mode=mode, **options))
    except Exception as error:
        if mode != "online":
            raise
        # No network or a bad key: keep the run, and its curves, on this machine instead.
        warn(f"SwanLab cloud unavailable ({error}); logging locally instead.")
        return Dashboard(swanlab.init(mode="local", reinit=True, **options))


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


class StopRequest:
    """Ctrl-C during training: finish the current step, keep what was learned, then stop."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        self.previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def _on_sigint(self, signum, frame) -> None:
        self.requested = True
        print("\nCtrl-C: stopping after this step (press it again to quit at once).", flush=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def __exit__(self, *exc_info) -> None:
        signal.signal(signal.SIGINT, self.previous)


# ---------------------------------------------------------------------------------------------
# Training: episodes of ε-greedy play, one gradient step per environment step, a greedy
# evaluation every eval_every episodes, and the best evaluated model kept on disk.
# ---------------------------------------------------------------------------------------------
def run_episode(
    env: gym.Env, agent: DQNAgent, stop: StopRequest | None = None
) -> tuple[float, int, list[float]]:
    """One training episode; returns its total reward, its length and the losses of its steps."""
    state, _ = env.reset()
    total_reward, steps, losses = 0.0, 0, []
    while True:
        action = agent.choose_action(state)
        next_state, reward, terminated, truncated, _ = env.step(action)
        agent.store_experience(state, action, reward, next_state, terminated)
        steps += 1
        if agent.learning:
            loss = agent.train()
            if loss is not None:
                losses.append(loss)
        total_reward += float(reward)
        state = next_state
        if terminated or truncated or (stop and stop.requested):
            return total_reward, steps, losses


class BestModel:
    """The best evaluation so far; its network is kept in best_model.pth, described in .json."""

    def __init__(self, output_dir: Path):
        self.output_dir = output_dir
        self.avg_reward, self.episode, self.train_steps = -math.inf, None, -1

    def consider(self, agent: DQNAgent, avg_reward: float, description: dict) -> None:
        # A tie after more learning counts too: the newer network scores as well and has also
        # learned from the failures seen since.
        improved = avg_reward > self.avg_reward
        retrained_tie = avg_reward == self.avg_reward and agent.train_steps > self.train_steps
        if not (improved or retrained_tie):
            return
        self.avg_reward, self.episode = avg_reward, description["episode"]
        self.train_steps = agent.train_steps
        agent.save_model(self.output_dir / "best_model.pth")
        info = {**description, "config": asdict(agent.config), "versions": library_versions()}
        save_atomically(
            self.output_dir / "best_model.json", lambda f: json.dump(info, f, indent=2), "w"
        )


def progress_line(row: dict) -> str:
    line = (
        f"episode {row['episode']:4d} | steps {row['env_steps']:7d} "
        f"| reward {row['train_reward']:5.0f} | ε {row['epsilon']:.3f}"
    )
    if row["loss"] != "":
        line += f" | loss {row['loss']:7.4f}"
    if row["eval_avg_reward"] != "":
        line += f" | eval {row['eval_avg_reward']:5.1f} | best {row['best_avg_reward']:5.1f}"
    return line


def train_agent(
    agent: DQNAgent, env: gym.Env, eval_env: gym.Env, dashboard: Dashboard, started: float
) -> dict:
    """The training loop. Returns a summary: best evaluation, its episode, whether Ctrl-C came."""
    config = agent.config
    output_dir = Path(config.output_dir)
    rows: list[dict] = []
    best, env_steps = BestModel(output_dir), 0
    with StopRequest() as stop:
        for episode in range(1, config.episodes + 1):
            reward, length, losses = run_episode(env, agent, stop)
            if stop.requested:
                break  # a cut-short episode is not a result; what came before it is kept
            env_steps += length
            row = {
                "episode": episode,
                "env_steps": env_steps,
                "wall_time_s": round(time.time() - started, 3),
                "train_reward": reward,
                "episode_length": length,
                "epsilon": agent.epsilon,
                "loss": float(np.mean(losses)) if losses else "",
                "eval_avg_reward": "",
                "best_avg_reward": "",
            }
            agent.epsilon = decay_epsilon(agent.epsilon, config)

            # While learning, a training episode that reaches the solved reward is checked at
            # once: it may be the policy to keep, and ten more episodes of updates can undo it.
            promising = agent.learning and reward >= config.solved_reward > 0
            if episode % config.eval_every == 0 or episode == config.episodes or promising:
                eval_avg = agent.evaluate(eval_env, config.eval_episodes)
                description = {
                    "episode": episode,
                    "eval_avg_reward": eval_avg,
                    "env_steps": env_steps,
                    "seed": config.seed,
                    "run_started_at": started,
                }
                best.consider(agent, eval_avg, description)
                row["eval_avg_reward"] = eval_avg
                # A perfect policy stops updating until an evaluation fails: trained on a buffer
                # of nothing but perfect episodes, DQN forgets how to recover and collapses.
                solved = config.solved_reward > 0 and eval_avg >= config.solved_reward
                agent.learning = not solved
                dashboard.log(
                    {"eval/avg_reward": eval_avg, "eval/best_avg_reward": best.avg_reward}, episode
                )
            if best.episode is not None:
                row["best_avg_reward"] = best.avg_reward
            rows.append(row)
            if row["eval_avg_reward"] != "":
                write_metrics(output_dir / "metrics.csv", rows)  # kept safe at every evaluation

            metrics = {
                "train/reward": reward,
                "train/episode_length": length,
                "train/epsilon": row["epsilon"],
            }
            if losses:
                metrics["train/loss"] = row["loss"]
            dashboard.log(metrics, episode)
            print(progress_line(row), flush=True)

    if rows:
        write_metrics(output_dir / "metrics.csv", rows)
    return {
        "best_avg_reward": best.avg_reward,
        "best_episode": best.episode,
        "interrupted": stop.requested,
    }


# ---------------------------------------------------------------------------------------------
# Test playback: the best saved model plays with a longer time limit, recorded to mp4, and the
# first episode goes to the dashboard as a GIF (SwanLab shows GIFs, not mp4).
# ---------------------------------------------------------------------------------------------
VIDEO_PREFIX = "rl-video"


def test_playback(config: Config, q_net: QNetwork, dashboard: Dashboard) -> list[float]:
    """Play config.test_episodes greedy episodes; returns their rewards."""
    record = not config.no_video
    if record:
        # Frames are drawn off-screen; without this, SDL looks for a display and complains.
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    env = make_env(
        config.seed + 2,
        render_mode="rgb_array" if record else None,
        max_episode_steps=config.max_test_steps,
    )
    if record:
        if any(Path(config.video_dir).glob(f"{VIDEO_PREFIX}-*")):
            print(f"Replacing the videos in {config.video_dir}/", flush=True)
        # One mp4 per episode: the wrapper writes each file when the next reset (or close) comes.
        with warnings.catch_warnings():  # its own "overwriting" notice, said above in plain words
            warnings.simplefilter("ignore")
            env = RecordVideo(
                env, config.video_dir, episode_trigger=lambda _: True, name_prefix=VIDEO_PREFIX
            )
    returns, policy = [], greedy_policy(q_net)
    try:
        for episode in range(config.test_episodes):
            total_reward, _ = play_episode(env, policy)
            returns.append(total_reward)
            print(f"test episode {episode} | reward {total_reward:.0f}", flush=True)
            dashboard.log({"test/reward": total_reward}, episode)
    finally:
        env.close()
    return returns


def make_gif(mp4: Path, gif: Path, seconds: float = 10, fps: int = 15, width: int = 240) -> Path:
    """A small GIF of the start of an mp4: fewer frames, fewer pixels, few colours."""
    from moviepy import VideoFileClip
    from PIL import Image

    with VideoFileClip(str(mp4)) as clip:
        start = clip.subclipped(0, min(seconds, clip.duration))
        frames = [Image.fromarray(f) for f in start.iter_frames(fps=fps, dtype="uint8")]
    height = round(frames[0].height * width / frames[0].width)
    # CartPole is drawn in a handful of colours: a tiny palette keeps the file small.
    small = [f.resize((width, height), Image.Resampling.BILINEAR).quantize(8) for f in frames]
    small[0].save(gif, save_all=True, append_images=small[1:], duration=1000 // fps, loop=0)
    return gif


def record_and_report(config: Config, q_net: QNetwork, dashboard: Dashboard) -> str | None:
    """Test playback with its video and GIF; returns what went wrong with the video, if anything."""
    try:
        test_playback(config, q_net, dashboard)
    except Exception as error:
        if config.no_video:
            raise
        return (
            f"the test video could not be made ({type(error).__name__}: {error}). "
            "Reinstall with `pip install -r requirements.txt` (moviepy, pygame), or use --no-video."
        )
    if config.no_video or config.test_episodes == 0:
        return None
    first = Path(config.video_dir) / f"{VIDEO_PREFIX}-episode-0.mp4"
    try:
        gif = make_gif(first, Path(config.video_dir) / f"{VIDEO_PREFIX}-episode-0.gif")
        dashboard.log({"test/video": swanlab.Video(str(gif), caption="test episode 0")}, 0)
    except Exception as error:  # the mp4 files are there; the GIF is a bonus
        warn(f"no GIF for the dashboard ({type(error).__name__}: {error})")
    return None


# ---------------------------------------------------------------------------------------------
# main(): the only entry point. Exit codes: 0 done, 2 bad input, 3 finished without a video,
# 130 stopped by Ctrl-C.
# ---------------------------------------------------------------------------------------------
def train_and_test(config: Config, started: float) -> int:
    env = make_env(config.seed)
    # A separate environment for evaluation, so that evaluating does not disturb training.
    eval_env = make_env(config.seed + 1)
    state_dim, action_dim = env.observation_space.shape[0], env.action_space.n
    agent = DQNAgent(state_dim, action_dim, config)
    shapes = {"state_dim": state_dim, "action_dim": action_dim}
    dashboard = start_swanlab(config, config.experiment_name, shapes)

    summary = train_agent(agent, env, eval_env, dashboard, started)
    env.close()
    eval_env.close()
    model_path = Path(config.output_dir) / "best_model.pth"
    video_problem = None
    if summary["best_episode"] is not None and not summary["interrupted"]:
        video_problem = record_and_report(config, load_model(model_path, config.device), dashboard)
    dashboard.finish("aborted" if summary["interrupted"] else "success")

    print(
        f"\nBest evaluation: {summary['best_avg_reward']:.1f} (episode {summary['best_episode']})"
    )
    if summary["best_episode"] is not None:
        print(f"Model:   {model_path}")
    print(f"Metrics: {Path(config.output_dir) / 'metrics.csv'}")
    print(f"Total time: {time.time() - started:.1f} s")
    if summary["interrupted"]:
        print(
            f"Stopped by Ctrl-C. To record the videos: python dqn_cartpole.py --play {model_path}"
        )
        print(dashboard.where())
        return 130
    return report_outputs(config, dashboard, video_problem)


def play_saved_model(config: Config) -> int:
    q_net = load_model(Path(config.play), config.device)
    dashboard = start_swanlab(config, f"{config.experiment_name}-play", {})
    video_problem = record_and_report(config, q_net, dashboard)
    dashboard.finish()
    return report_outputs(config, dashboard, video_problem)


def report_outputs(config: Config, dashboard: Dashboard, video_problem: str | None) -> int:
    """The closing lines of both modes; exit code 3 when the video could not be made."""
    if not config.no_video and not video_problem:
        print(f"Videos:  {config.video_dir}/")
    print(dashboard.where())
    if video_problem:
        print(f"error: {video_problem}", file=sys.stderr)
        return 3
    return 0


def main(argv: list[str] | None = None) -> int:
    started = time.time()
    config = parse_args(argv)
    set_seed(config.seed)
    # The network is tiny: a second thread costs more in coordination than it saves.
    torch.set_num_threads(1)
    try:
        if not config.play:
            ensure_writable_dir(Path(config.output_dir), "--output-dir")
        if not config.no_video:
            ensure_writable_dir(Path(config.video_dir), "--video-dir")
        return play_saved_model(config) if config.play else train_and_test(config, started)
    except InputError as error:
        print(f"dqn_cartpole.py: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside the training loop
        print("\nStopped by Ctrl-C.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
