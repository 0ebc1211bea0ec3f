"""Deep Q-Network (DQN) on CartPole-v1, in one file: the script of the DQN-CartPole tutorial.

    python dqn_cartpole.py                               # train, then record the test videos
    python dqn_cartpole.py --play output/best_model.pth  # replay a trained model
    python dqn_cartpole.py --help                        # every setting, with its default

How to read it: from the top down to the PLUMBING banner is the whole DQN, in the tutorial's
order: the settings a learner tunes, QNetwork (四、定义QNet), the replay buffer and DQNAgent
(五、定义DQNAgent), ε decay, the training loop with its evaluations and best-model saving, and
test playback with RecordVideo (六、完整代码). Below the banner: the command line, SwanLab,
files, error messages, Ctrl-C and two speed workarounds. You need none of it to follow DQN.
"""

import argparse
import contextlib
import csv
import io
import json
import math
import os
import platform
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import gymnasium as gym
import numpy as np
import requests
import swanlab
import torch
import torch.nn as nn
import torch.nn.functional as F
from gymnasium.wrappers import RecordVideo
from PIL import Image
from torch.optim.adam import adam as adam_update
from tqdm import tqdm

SWANLAB_MODES = ["auto", "cloud", "local", "offline", "disabled"]


def setting(default, help: str, valid: str | None = None, **argparse_options):
    """A setting: its default, its --help line, the values it accepts ("> 0", "[0, 1]")."""
    return field(default=default, metadata={"help": help, "valid": valid, **argparse_options})


@dataclass
class Config:
    """Every setting, declared once: each is also a flag (--batch-size) and goes to SwanLab."""

    # DQN. Defaults differ from the tutorial's where the seed benchmark measured a gain (README).
    lr: float = setting(3e-3, "Adam learning rate (tutorial: 0.001)", "> 0")
    batch_size: int = setting(128, "transitions per gradient step (tutorial: 64)", ">= 1")
    gamma: float = setting(0.99, "discount factor", "[0, 1]")
    buffer_size: int = setting(10_000, "replay buffer capacity; the oldest go first", ">= 1")
    target_update_freq: int = setting(100, "copy q_net to target_net every N updates", ">= 1")
    epsilon_start: float = setting(1.0, "exploration rate ε at the first episode", "[0, 1]")
    epsilon_end: float = setting(0.01, "lowest ε", "[0, 1]")
    epsilon_decay: float = setting(0.98, "ε × this after each episode (tutorial: 0.995)", "(0, 1]")
    solved_reward: float = setting(
        500.0,
        "pause learning while the latest evaluation averages this, and evaluate at once a "
        "training episode that scores it (0: neither)",
        ">= 0",
    )
    tutorial_settings: bool = setting(
        False,
        "the tutorial's values: lr 0.001, batch 64, ε decay 0.995, no pause (solved reward 0), "
        "as experiment <name>-tutorial-settings; a flag given beside it wins",
    )
    # The training loop
    episodes: int = setting(600, "number of training episodes", ">= 1")
    eval_every: int = setting(10, "evaluate the greedy policy every N episodes", ">= 1")
    eval_episodes: int = setting(5, "greedy episodes per evaluation", ">= 1")
    seed: int = setting(42, "random seed for Python, NumPy, PyTorch and the environments", ">= 0")
    device: str = setting("cpu", "torch device", choices=["cpu", "cuda"])
    # Test playback
    test_episodes: int = setting(3, "episodes the best model plays after training", ">= 0")
    max_test_steps: int = setting(1500, "step limit of a test episode (training: 500)", ">= 1")
    no_video: bool = setting(False, "play the test episodes without recording videos")
    watch: bool = setting(False, "show the test episodes in a window as well, at 50 frames/s")
    play: str = setting("", "skip training: replay this saved model (a .pth file)", metavar="MODEL")
    # Where results go
    output_dir: str = setting("output", "where best_model.pth, best_model.json, metrics.csv go")
    video_dir: str = setting("dqn_videos", "where the test videos (mp4) go")
    swanlab_mode: str = setting(
        "auto", "auto: the cloud after `swanlab login`, else local", choices=SWANLAB_MODES
    )
    project: str = setting("RL-All-In-One", "SwanLab project")
    experiment_name: str = setting("DQN-CartPole-v1", "SwanLab experiment name")


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


# ==== Experience replay: a fixed-size FIFO memory of transitions, sampled at random so that one
# gradient step does not see a run of strongly correlated consecutive states. The tutorial's
# deque of tuples, as NumPy arrays: a batch is one indexing, drawn with replacement.
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
        columns = self.states, self.actions, self.rewards, self.next_states, self.terminated
        return tuple(column[idx] for column in columns)


# ==== 五、DQNAgent: ε-greedy acting, replay memory, and the DQN update with a target network.
class DQNAgent:
    def __init__(self, state_dim: int, action_dim: int, config: Config):
        self.config = config
        self.action_dim = action_dim
        self.device = torch.device(config.device)
        self.rng = np.random.default_rng(config.seed)
        self.q_net = QNetwork(state_dim, action_dim).to(self.device)
        # The target network gives the TD target. It starts equal to q_net and then follows it
        # only every target_update_freq steps, so the target does not move with every update.
        self.target_net = QNetwork(state_dim, action_dim).to(self.device)
        self.target_net.load_state_dict(self.q_net.state_dict())
        # Adam: the same update as torch.optim.Adam(q_net.parameters(), lr), bit for bit, faster.
        self.optimizer = FusedAdam(self.q_net.parameters(), lr=config.lr)
        self.replay_buffer = ReplayBuffer(config.buffer_size, state_dim, self.rng)
        # The greedy action, q_net(state).argmax(), computed with NumPy: ~7x faster for one state.
        self.greedy = greedy_policy(self.q_net)
        self.epsilon = config.epsilon_start
        self.step_count = 0
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
        """r + γ·max_a' Q_target(s', a'): the reward now plus the discounted best value after."""
        with torch.no_grad():
            next_q = self.target_net(next_states).max(dim=1).values
        # CORRECTNESS: bootstrap after a truncation too; only a fallen pole has no future.
        return rewards + self.config.gamma * (1.0 - terminated) * next_q

    def train(self) -> tuple[float, float] | None:
        """One gradient step on a random batch; returns its loss and the mean Q-value of the
        actions taken in it. None while learning is paused or the buffer holds < batch_size."""
        if not self.learning or len(self.replay_buffer) < self.config.batch_size:
            return None
        states, actions, rewards, next_states, terminated = (
            torch.as_tensor(a, device=self.device)
            for a in self.replay_buffer.sample(self.config.batch_size)
        )
        current_q = self.q_net(states).gather(1, actions.unsqueeze(1)).squeeze(1)
        target_q = self.td_target(rewards, next_states, terminated)
        loss = F.mse_loss(current_q, target_q)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()

        self.step_count += 1
        if self.step_count % self.config.target_update_freq == 0:
            self.target_net.load_state_dict(self.q_net.state_dict())
        return loss.item(), current_q.mean().item()

    def evaluate(self, env: gym.Env, episodes: int) -> float:
        """Mean return of `episodes` greedy episodes (no exploration, no learning)."""
        return float(np.mean([greedy_episode(env, self.greedy)[0] for _ in range(episodes)]))

    def after_evaluation(self, eval_avg_reward: float) -> None:
        """Pause learning while the latest evaluation is perfect, resume when one is not."""
        # Trained on a buffer of nothing but perfect episodes, DQN forgets how to recover.
        solved = self.config.solved_reward > 0 and eval_avg_reward >= self.config.solved_reward
        self.learning = not solved

    def save_model(self, path: Path) -> None:
        """Save q_net's weights as a plain state_dict, replacing the old file only when whole."""
        weights = io.BytesIO()  # a full disk then fails in Python's write, with a clear reason
        torch.save(self.q_net.state_dict(), weights)
        save_atomically(path, lambda f: f.write(weights.getvalue()))


def decay_epsilon(epsilon: float, config: Config) -> float:
    """After each episode explore a little less: early on the Q-values are noise, later they
    are worth trusting. ε never goes below epsilon_end, so the agent keeps exploring a bit."""
    return max(config.epsilon_end, epsilon * config.epsilon_decay)


def train_episode(
    env: gym.Env, agent: DQNAgent, stop: "StopRequest | None" = None
) -> tuple[float, int, list[tuple[float, float]]]:
    """One ε-greedy episode, learning at every step; returns its reward, its length and what
    each gradient step returned (loss, mean Q-value)."""
    state, _ = env.reset()
    total_reward, steps, updates = 0.0, 0, []
    while True:
        action = agent.choose_action(state)
        next_state, reward, terminated, truncated, _ = env.step(action)
        agent.store_experience(state, action, reward, next_state, terminated)
        if (update := agent.train()) is not None:
            updates.append(update)
        total_reward += float(reward)
        steps += 1
        state = next_state
        # An episode ends when the pole falls (terminated) or the time limit hits (truncated).
        if terminated or truncated or (stop and stop.requested):
            return total_reward, steps, updates


def greedy_episode(env: gym.Env, policy: Callable[[np.ndarray], int]) -> tuple[float, int]:
    """One episode acting with `policy`, learning nothing; returns its reward and length."""
    state, _ = env.reset()
    total_reward, steps = 0.0, 0
    while True:
        state, reward, terminated, truncated, _ = env.step(policy(state))
        total_reward += float(reward)
        steps += 1
        if terminated or truncated:
            return total_reward, steps


# ==== 六、The training loop: episodes of ε-greedy play, one gradient step per environment step, a
# greedy evaluation every eval_every episodes, and the best evaluated model kept on disk.
def set_seed(seed: int) -> None:
    """Seed Python, NumPy and PyTorch, as the tutorial does: the same seed, the same run."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_env(seed: int, **kwargs) -> gym.Env:
    # CartPole-v1 keeps its standard 500-step limit here, so returns compare with published ones.
    env = gym.make("CartPole-v1", **kwargs)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    return env


@dataclass
class EpisodeStats:
    """One episode's numbers: a row of metrics.csv, a point on the dashboard, a console line."""

    episode: int
    env_steps: int
    wall_time_s: float
    train_reward: float
    episode_length: int
    epsilon: float
    loss: float | None = None  # None: no gradient step in this episode
    # Q(s, a) of the actions taken in the training batches: it grows toward the discounted
    # return of a pole that never falls, 1 / (1 - γ) = 100, and the TD errors grow with it.
    q_value: float | None = None
    eval_avg_reward: float | None = None  # None: not evaluated after this episode
    best_avg_reward: float | None = None


@dataclass
class Best:
    """The best evaluation so far: what best_model.pth holds."""

    avg_reward: float = float("-inf")
    episode: int | None = None
    step_count: int = -1

    def beaten_by(self, avg_reward: float, step_count: int) -> bool:
        # A tie after more learning counts too: the newer network scores as well and has also
        # learned from the failures seen since. (Tuples compare their first items first.)
        return (avg_reward, step_count) > (self.avg_reward, self.step_count)


def train_agent(
    agent: DQNAgent, env: gym.Env, eval_env: gym.Env, log: "RunLog", stop: "StopRequest"
) -> Best:
    """The training loop; returns the best evaluation, whose network is in best_model.pth."""
    config = agent.config
    output_dir = Path(config.output_dir)
    best, env_steps = Best(), 0
    for episode in range(1, config.episodes + 1):
        reward, length, updates = train_episode(env, agent, stop)
        if stop.requested:
            break  # a cut-short episode is not a result; what came before it is kept
        env_steps += length
        stats = EpisodeStats(
            episode, env_steps, round(time.time() - log.started, 3), reward, length, agent.epsilon
        )
        if updates:
            losses, q_values = zip(*updates, strict=True)
            stats.loss, stats.q_value = float(np.mean(losses)), float(np.mean(q_values))
        agent.epsilon = decay_epsilon(agent.epsilon, config)

        # While learning, a training episode that reaches the solved reward is checked at once:
        # it may be the policy to keep, and ten more episodes of updates can undo it.
        promising = agent.learning and config.solved_reward > 0 and reward >= config.solved_reward
        last = episode == config.episodes  # so that the final network is judged too
        if episode % config.eval_every == 0 or last or promising:
            stats.eval_avg_reward = agent.evaluate(eval_env, config.eval_episodes)
            if best.beaten_by(stats.eval_avg_reward, agent.step_count):
                best = Best(stats.eval_avg_reward, episode, agent.step_count)
                agent.save_model(output_dir / "best_model.pth")
                describe_best_model(output_dir / "best_model.json", config, stats, log.started)
            agent.after_evaluation(stats.eval_avg_reward)
        if best.episode is not None:
            stats.best_avg_reward = best.avg_reward
        log.record(stats, agent.q_net)  # to the console, metrics.csv and the dashboard
    return best


# ==== Test playback: the best saved model plays with a longer time limit, recorded to mp4 by
# gymnasium's RecordVideo, and the first episode goes to the dashboard as a GIF.
VIDEO_PREFIX = "rl-video"


def test_playback(config: Config, q_net: QNetwork, dashboard: "Dashboard") -> None:
    """The best model plays config.test_episodes greedy episodes, recorded unless --no-video."""
    record = not config.no_video
    render_mode = "rgb_array" if record or config.watch else None
    # seed + 2: episodes that neither training nor evaluation has seen.
    env = make_env(
        config.seed + 2, render_mode=render_mode, max_episode_steps=config.max_test_steps
    )
    if record:  # gymnasium's RecordVideo, one mp4 per episode, each frame encoded as it is drawn
        every_episode = dict(episode_trigger=lambda _: True, name_prefix=VIDEO_PREFIX)
        env = recorder = StreamingRecordVideo(env, config.video_dir, **every_episode)
    if config.watch:  # and on the screen, at CartPole's real speed: 50 frames a second
        env = Window(env)
    policy = greedy_policy(q_net)
    with env:  # closing it finishes the last video
        for episode in range(config.test_episodes):
            total_reward, _ = greedy_episode(env, policy)
            print(f"test episode {episode} | reward {total_reward:.0f}", flush=True)
            dashboard.log({"test/reward": total_reward}, episode)
    if record and config.test_episodes:
        finish_videos(recorder, dashboard)  # and a GIF for the dashboard, which shows no mp4


def train_and_test(config: Config, started: float) -> "Outcome":
    """The tutorial's 六、完整代码 from start to end: train, keep the best model, watch it play."""
    env = make_env(config.seed)
    # A separate environment for evaluation, so that evaluating does not disturb training.
    eval_env = make_env(config.seed + 1)
    state_dim, action_dim = env.observation_space.shape[0], env.action_space.n
    env_sizes = {"state_dim": state_dim, "action_dim": action_dim}
    # SwanLab draws each run's colour at random: seeding first would give every run the same.
    with start_swanlab(config, config.experiment_name, env_sizes) as dashboard:
        set_seed(config.seed)
        agent = DQNAgent(state_dim, action_dim, config)
        # closing: the rows since the last evaluation are written however training ends
        with StopRequest() as stop, contextlib.closing(RunLog(config, dashboard, started)) as log:
            best = train_agent(agent, env, eval_env, log, stop)
        outcome = Outcome(dashboard, best, stopped_by=stop.signum)
        if best.episode is not None and not stop.requested:
            model = load_model(Path(config.output_dir) / "best_model.pth", state_dim, action_dim)
            with video_errors_noted(outcome, config):  # a failed video costs no result
                test_playback(config, model.to(config.device), dashboard)
        return outcome


# =============================================================================================
# PLUMBING. The DQN is all above. Below is what makes it a dependable program: the command line,
# files, SwanLab, the console, the GIF, Ctrl-C, exit codes and two speed workarounds.
# =============================================================================================


# ---- The command line: one flag per Config field; a bad value is refused in one line ---------
def checked(kind: type, valid: str | None):
    """An argparse type: converts a flag's text, refuses values `valid` ('> 0', '(0, 1]') bars."""

    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None
        if valid is None:
            return value
        # '>= 1' is '[1, inf]' and '> 0' is '(0, inf]': a bracket includes its end.
        span = valid.replace(">=", "[").replace(">", "(") + ", inf]" if valid[0] == ">" else valid
        low, high = (float(end) for end in span[1:-1].split(","))
        allowed = valid if valid[0] == ">" else f"in {valid}"
        if not math.isfinite(value):  # inf and nan: a learning rate of inf trains to NaN
            raise argparse.ArgumentTypeError(f"must be a finite number {allowed}, got {text}")
        if not ((value > low if span[0] == "(" else value >= low) and value <= high):
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text}")
        return value

    return convert


# The tutorial's own values, for --tutorial-settings: run with and without, compare on SwanLab.
TUTORIAL_SETTINGS = {"lr": 1e-3, "batch_size": 64, "epsilon_decay": 0.995, "solved_reward": 0.0}


def parse_args(argv: list[str] | None = None) -> Config:
    """Read the command line; reject bad values before any work starts (exit code 2)."""
    parser = argparse.ArgumentParser(
        description="Train a DQN agent on CartPole-v1 and watch it on SwanLab.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    # A bad flag gets one line that names it, not argparse's usage block above that line.
    parser.error = lambda message: parser.exit(2, f"{parser.prog}: error: {message} (see --help)\n")
    for f in fields(Config):
        flag, options = "--" + f.name.replace("_", "-"), dict(f.metadata)
        kind = checked(f.type, options.pop("valid"))
        if f.type is bool:
            parser.add_argument(flag, action="store_true", **options)
        else:
            parser.add_argument(flag, type=kind, default=f.default, **options)
    config = Config(**vars(parser.parse_args(argv)))
    if config.tutorial_settings:  # its values become the defaults, so that a flag still wins
        parser.set_defaults(**TUTORIAL_SETTINGS)
        config = Config(**vars(parser.parse_args(argv)))
        config.experiment_name += "-tutorial-settings"
    if config.batch_size > config.buffer_size:
        batch, buffer = config.batch_size, config.buffer_size
        parser.error(f"--batch-size ({batch}) must be <= --buffer-size ({buffer})")
    if config.epsilon_end > config.epsilon_start:
        start, end = config.epsilon_start, config.epsilon_end
        parser.error(f"--epsilon-end ({end}) must be <= --epsilon-start ({start})")
    if config.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: PyTorch sees no CUDA GPU here; use --device cpu")
    return config


# ---- Files: each is written under a temporary name and then renamed, so that a run stopped at
# any moment leaves the previous file whole.
class InputError(Exception):
    """Something the user gave (a file, a folder) cannot be used; the message says why."""


class WriteError(Exception):
    """A result could not be written (a full disk, a folder gone); the message names the file."""


HELD_LOCKS: dict[Path, io.TextIOWrapper] = {}  # a lock lasts while its file stays open


def claim_folder(path: Path, flag: str) -> None:
    """Create `path` and hold it for this run; refuse a folder that another running run holds.
    The operating system drops the lock when its process ends, however it ends."""
    if path.resolve() in HELD_LOCKS:
        return
    try:
        path.mkdir(parents=True, exist_ok=True)
        lock = open(
            path / ".lock", "a+", encoding="utf-8"
        )  # this proves that the folder can be written to
    except OSError as error:
        reason = "it is a file" if path.is_file() else (error.strerror or str(error))
        raise InputError(f"{flag} {path}: cannot write there ({reason})") from None
    try:
        import fcntl  # Windows has none: there, two runs may share a folder (README)

        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:
        pass
    except OSError:
        lock.seek(0)
        pid = lock.read().strip() or "unknown"
        raise InputError(
            f"{flag} {path}: in use by another run (pid {pid}); let it finish, "
            f"or give this run another {flag}"
        ) from None
    lock.truncate(0)
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    HELD_LOCKS[path.resolve()] = lock


def save_atomically(path: Path, write, mode: str = "wb") -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        text = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}  # "\n" as written
        with open(tmp, mode, **text) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as error:  # a full disk, most often: the previous file is still whole
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise WriteError(f"cannot write {path}: {error.strerror or error}") from None


METRIC_COLUMNS = [f.name for f in fields(EpisodeStats)]


def write_metrics(path: Path, rows: list[dict]) -> None:
    def write(f):
        writer = csv.DictWriter(f, fieldnames=METRIC_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)  # None becomes an empty cell

    save_atomically(path, write, mode="w")


def describe_best_model(path: Path, config: Config, stats: EpisodeStats, started: float) -> None:
    """best_model.json: when the saved model was evaluated, how well, and every setting."""
    info = {"episode": stats.episode, "eval_avg_reward": stats.eval_avg_reward}
    info |= {"env_steps": stats.env_steps, "seed": config.seed, "run_started_at": started}
    info |= {"config": asdict(config), "versions": library_versions()}
    save_atomically(path, lambda f: json.dump(info, f, indent=2), "w")


def library_versions() -> dict[str, str]:
    modules = {"torch": torch, "gymnasium": gym, "numpy": np, "swanlab": swanlab}
    return {"python": platform.python_version()} | {k: m.__version__ for k, m in modules.items()}


def load_model(path: Path, state_dim: int, action_dim: int) -> QNetwork:
    """Rebuild a QNetwork from a saved state_dict, or raise InputError saying what is wrong."""
    if not path.is_file() or path.stat().st_size == 0:
        raise InputError(f"{path}: {'the file is empty' if path.is_file() else 'no such file'}")
    try:
        # SAFETY: weights_only refuses anything but tensors. A plain pickle can run any code
        # when loaded, and a "pretrained model" from a stranger is exactly such a file.
        with warnings.catch_warnings():  # its warnings would bury the one line that matters
            warnings.simplefilter("ignore")
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        problem = "not a PyTorch model file, or a damaged copy of one"
        if "GLOBAL" in str(error):  # how PyTorch names the function the file wanted to call
            problem = "refused: the file asks to run code, not just load weights"
        raise InputError(f"{path}: {problem}") from None
    q_net = QNetwork(state_dim, action_dim)
    if problem := state_dict_mismatch(state_dict, q_net.state_dict()):
        raise InputError(f"{path}: not a CartPole QNetwork: {problem}")
    q_net.load_state_dict(state_dict)
    return q_net.eval()


def state_dict_mismatch(found: dict, expected: dict) -> str | None:
    """The first way the `found` state_dict differs from the `expected` one, in words."""
    if not isinstance(found, dict):
        return f"it holds a {type(found).__name__}, not a state_dict"
    for key, tensor in expected.items():
        if not isinstance(found.get(key), torch.Tensor):
            return f"{key} is missing"
        if found[key].shape != tensor.shape:
            return f"{key} has shape {tuple(found[key].shape)}, expected {tuple(tensor.shape)}"
    extra = sorted(set(found) - set(expected))
    return f"unexpected entries {extra}" if extra else None


# ---- SwanLab: a mode that never asks for a login, since learners may have no account ---------
def resolve_swanlab_mode(requested: str, settings: "swanlab.Settings") -> str:
    """Map --swanlab-mode to a SwanLab mode; `auto` uses the cloud only with a saved login."""
    if requested != "auto":
        return "online" if requested == "cloud" else requested
    # swanlab.Settings reads SWANLAB_MODE, SWANLAB_API_KEY and the key saved by `swanlab login`.
    if os.environ.get("SWANLAB_MODE"):
        return settings.mode
    return "online" if settings.api_key else "local"


def start_swanlab(config: Config, experiment_name: str, extra_config: dict) -> "Dashboard":
    """The SwanLab run, or none: SwanLab failing costs one warning, never the training."""
    try:
        # The library versions go in the config; SwanLab's own listing of every installed
        # package runs `pip list` first, ~0.35 s before the first episode.
        settings = swanlab.Settings(probe={"requirements": False})
        mode = resolve_swanlab_mode(config.swanlab_mode, settings)
        if mode == "disabled":
            return Dashboard(None)
        options = dict(project=config.project, experiment_name=experiment_name, settings=settings)
        options["config"] = {**asdict(config), **extra_config, "versions": library_versions()}
        options["description"] = "DQN on CartPole-v1 (dqn_cartpole.py)"
        if mode == "online":
            try:  # first a 3 s check that the host answers: SwanLab itself retries for ~15 s
                # With requests, as SwanLab's own client: through HTTPS_PROXY or ALL_PROXY if set.
                requests.head(settings.api_host, timeout=3)
                return Dashboard(swanlab.init(mode=mode, **options))
            except Exception as error:
                # No network or a bad key: keep the run, and its curves, on this machine instead.
                why = (
                    type(error).__name__ if isinstance(error, requests.RequestException) else error
                )
                warn(f"SwanLab cloud unavailable ({why}); logging locally instead.")
                mode = "local"
        return Dashboard(swanlab.init(mode=mode, reinit=True, **options))
    except Exception as error:  # e.g. a file named swanlog, or a folder that cannot be written
        reason = (
            error.errors()[0]["msg"] if hasattr(error, "errors") else " ".join(str(error).split())
        )
        warn(f"SwanLab could not start ({reason}); no dashboard, metrics.csv has every value.")
        return Dashboard(None)


class Dashboard:
    """The SwanLab run, if any. A SwanLab failure costs one warning, never the training."""

    def __init__(self, run: "swanlab.Run | None"):
        self.run, self.broken = run, False

    def log(self, data: dict, step: int) -> None:
        if self.run is None or self.broken:
            return
        try:  # a value given as a function is made here, where its failure costs one warning
            self.run.log({k: v() if callable(v) else v for k, v in data.items()}, step=step)
        except Exception as error:
            self.broken = True
            warn(f"SwanLab stopped logging ({error}); training goes on, metrics.csv has it all.")

    def finish(self, state: str = "success", error: str | None = None) -> None:
        if self.run is not None:
            with contextlib.suppress(Exception):
                self.run.finish(state=state, error=error)

    def __enter__(self) -> "Dashboard":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is not None:  # a second signal, a full disk: the run ends, marked as it ended
            if issubclass(kind, KeyboardInterrupt):
                self.finish("aborted")
            else:
                self.finish("crashed", f"{kind.__name__}: {error}")

    def where(self) -> str:
        if self.run is None:
            return "SwanLab: disabled"
        if self.run.mode == "online":
            return f"SwanLab: {self.run.url}"
        if self.run.mode == "local":
            swanlab_cli = (
                ["swanlab"] if shutil.which("swanlab") else [python_command(), "-m", "swanlab"]
            )
            return "Dashboard: " + shell_command(
                [*swanlab_cli, "watch", str(Path(self.run.dir).parent)]
            )
        return f"SwanLab run saved offline in {self.run.dir} (upload it with `swanlab sync`)"


# ---- The console and metrics.csv ---------------------------------------------------------------
# The dashboard's name of each number; the eval/ ones are logged only when there was one.
CHARTS = {
    "train_reward": "train/reward",
    "episode_length": "train/episode_length",
    "epsilon": "train/epsilon",
    "loss": "train/loss",
    "q_value": "train/q_value",
    "eval_avg_reward": "eval/avg_reward",
    "best_avg_reward": "eval/best_avg_reward",
}


class RunLog:
    """Each episode's numbers, to the console, metrics.csv and the dashboard."""

    def __init__(self, config: Config, dashboard: Dashboard, started: float):
        self.csv_path, self.dashboard = Path(config.output_dir) / "metrics.csv", dashboard
        self.started, self.rows, self.last_eval = started, [], None
        # On a terminal, a live bar with a line kept above it at each evaluation. In a log file,
        # CI or a notebook's captured output, the evaluation lines alone, without any "\r".
        look = "episode {n_fmt}/{total_fmt} {bar:20} {desc}"
        self.bar = tqdm(total=config.episodes, bar_format=look, disable=not sys.stdout.isatty())
        # perf_counter: on Windows before Python 3.13, time.time() and time.monotonic() advance
        # in steps of 15.6 ms, longer than the first episodes take, and a rate would be x / 0.
        self.bar_started = time.perf_counter()

    def record(self, stats: EpisodeStats, q_net: QNetwork) -> None:
        self.rows.append(row := asdict(stats))
        charts = {name: row[key] for key, name in CHARTS.items() if row[key] is not None}
        if stats.eval_avg_reward is None:  # the best so far is charted at evaluations only
            charts = {name: value for name, value in charts.items() if name.startswith("train/")}
        else:
            write_metrics(self.csv_path, self.rows)  # kept safe at every evaluation
            self.last_eval = stats.eval_avg_reward
            # What the greedy agent does, state by state; drawn only if the dashboard logs it.
            caption = f"episode {stats.episode}"
            charts["eval/policy"] = lambda: swanlab.Image(policy_image(q_net), caption=caption)
            tqdm.write(progress_line(stats), file=sys.stdout)
            sys.stdout.flush()
        self.dashboard.log(charts, stats.episode)
        line = f"steps {stats.env_steps} | reward {stats.train_reward:.0f} | ε {stats.epsilon:.3f}"
        if self.last_eval is not None:
            line += f" | eval {self.last_eval:.1f} | best {stats.best_avg_reward:.1f}"
        rate = stats.env_steps / (time.perf_counter() - self.bar_started)
        self.bar.set_description_str(f"{line} | {rate:.0f} steps/s", refresh=False)
        self.bar.update()

    def close(self) -> None:
        self.bar.close()
        if self.rows:
            write_metrics(self.csv_path, self.rows)


def progress_line(stats: EpisodeStats) -> str:
    line = f"episode {stats.episode:4d} | steps {stats.env_steps:7d} "
    line += f"| reward {stats.train_reward:5.0f} | ε {stats.epsilon:.3f}"
    if stats.loss is not None:
        line += f" | loss {stats.loss:7.4f} | Q {stats.q_value:6.2f}"
    if stats.eval_avg_reward is not None:
        line += f" | eval {stats.eval_avg_reward:5.1f} | best {stats.best_avg_reward:5.1f}"
    return line


LEFT, RIGHT = (0, 114, 178), (230, 159, 0)  # blue and orange: told apart in colour blindness too


def policy_image(q_net: QNetwork, angle: float = 0.21, spin: float = 2.0, cells: int = 64):
    """The greedy action over pole angle × angular velocity, the cart at rest at the centre,
    as a small PIL image: at ±0.21 rad the episode ends."""
    from PIL import ImageDraw, ImageFont

    grid = (np.arange(cells) + 0.5) / cells * 2 - 1  # cell centres, from -1 to 1
    angles, spins = np.meshgrid(grid * angle, -grid * spin)  # the top row spins fastest right
    states = np.zeros((cells * cells, 4), np.float32)
    states[:, 2], states[:, 3] = angles.ravel(), spins.ravel()
    with torch.no_grad():  # one batched forward pass for the whole grid
        q = q_net(torch.from_numpy(states).to(q_net.fc[0].weight.device)).cpu().numpy()
    pushes_right = (q.argmax(axis=1) == 1).reshape(cells, cells, 1)
    font, f, ink, size = ImageFont.load_default(size=16), 16, (30, 30, 30), 3 * cells
    x0, y0, mid = 2 * f + 12, f + 10, size // 2  # the map's corner leaves room for the labels
    image = Image.new("RGB", (x0 + size + 2 * f + 90, y0 + size + 2 * f + 12), "white")
    colours = Image.fromarray(np.where(pushes_right, RIGHT, LEFT).astype(np.uint8))
    image.paste(colours.resize((size, size), Image.Resampling.NEAREST), (x0, y0))
    draw = ImageDraw.Draw(image)
    draw.line([(x0 + mid, y0), (x0 + mid, y0 + size - 1)], "white")  # the pole upright
    draw.line([(x0, y0 + mid), (x0 + size - 1, y0 + mid)], "white")  # the pole still
    draw.text((image.width // 2, 4), "greedy action, cart at rest", ink, font, anchor="mt")
    for at, side, value in ((0, "l", -angle), (mid, "m", 0), (size, "r", angle)):
        draw.text((x0 + at, y0 + size + 3), f"{value:g}", ink, font, anchor=side + "t")
    for at, side, value in ((0, "a", spin), (mid, "m", 0), (size, "d", -spin)):
        draw.text((x0 - 4, y0 + at), f"{value:g}", ink, font, anchor="r" + side)
    draw.text((x0 + mid, y0 + size + f + 7), "pole angle (rad)", ink, font, anchor="mt")
    label = Image.new("RGB", (size + 2 * f, f + 4), "white")  # Pillow writes level: turn it
    ImageDraw.Draw(label).text(
        (mid + f, f // 2 + 2), "angular velocity (rad/s)", ink, font, anchor="mm"
    )
    image.paste(label.rotate(90, expand=True), (2, y0 - f))
    for row, (name, colour) in enumerate((("push left", LEFT), ("push right", RIGHT))):
        x, y = x0 + size + 10, y0 + mid + (row - 1) * (f + 8)
        draw.rectangle([x, y, x + f - 2, y + f - 2], fill=colour)
        draw.text((x + f + 4, y + f // 2 - 1), name, ink, font, anchor="lm")
    return image


def shell_command(args: list[str]) -> str:
    """`args` as a line to paste into a shell: quoted for sh, bash and zsh, or on Windows with
    the double quotes that cmd and PowerShell both read."""
    return subprocess.list2cmdline(args) if os.name == "nt" else shlex.join(args)


def python_command() -> str:
    """The Python running this script, as the user can type it: its name if that is what the
    PATH finds (python, python3), else its whole path (a virtual environment not activated)."""
    found = shutil.which(Path(sys.executable).name)
    if found and os.path.samefile(found, sys.executable):
        return Path(sys.executable).name
    return sys.executable


def videos_hint(model: Path) -> str:
    # The script as the user named it (python dqn_cartpole.py, or a path to it), else in full.
    script = sys.argv[0] if Path(sys.argv[0]).name == Path(__file__).name else __file__
    return " To record the videos: " + shell_command(
        [python_command(), script, "--play", str(model)]
    )


def warn(message: str) -> None:
    tqdm.write(f"warning: {message}", file=sys.stderr)  # above the progress bar, if there is one


# ---- The videos and the GIF ------------------------------------------------------------------
@contextlib.contextmanager
def video_errors_noted(outcome: "Outcome", config: Config):
    """A video that cannot be made is noted in `outcome` (exit code 3), the results kept."""
    try:
        yield
    except WindowClosed:
        print("The window was closed: no more test episodes.", flush=True)
    except Exception as error:
        if config.no_video or isinstance(error, WriteError):
            raise
        outcome.video_error = (
            f"the test video could not be made ({type(error).__name__}: {error}). "
            "Reinstall with `pip install -r requirements.txt` (moviepy, pygame), or use --no-video."
        )


class StreamingRecordVideo(RecordVideo):
    """RecordVideo that hands each frame to ffmpeg as it is drawn. RecordVideo keeps a whole
    episode in memory (1500 frames: 1 GB) and encodes it at the end; here memory stays flat and
    ffmpeg encodes on the other core while pygame draws. It also keeps the GIF's frames."""

    GIF_STEP, GIF_SECONDS, GIF_SIZE = 3, 10, (240, 160)  # 50 fps / 3: 16.7 fps, 2/5 the size

    def __init__(self, env: gym.Env, video_folder: str, **options):
        if any(Path(video_folder).glob(f"{options['name_prefix']}-*")):
            print(f"Replacing the videos in {video_folder}/", flush=True)
        with warnings.catch_warnings():  # its own "overwriting" notice, said above in plain words
            warnings.simplefilter("ignore")
            super().__init__(env, video_folder, **options)
        self.folder, self.ffmpeg, self.episode_over = Path(video_folder), None, False
        self.gif_frames, self.keep_gif = [], True

    def reset(self, **options):
        self.episode_over = False
        return super().reset(**options)

    def step(self, action):
        result = super().step(action)
        self.episode_over = result[2] or result[3]  # terminated or truncated
        return result

    def close(self) -> None:
        if self.recording and not self.episode_over and self.ffmpeg is not None:
            self._abandon()  # stopped mid-episode: the earlier video stays as it was
        super().close()

    def _paths(self) -> tuple[Path, Path]:
        # Written under a temporary name: a video cut short never replaces a whole one.
        name = self._video_name
        return self.folder / f".{name}.tmp.mp4", self.folder / f"{name}.mp4"

    def _capture_frame(self) -> None:
        frame, size = draw_cartpole(self.env.unwrapped)
        self.recorded_frames.append(None)  # RecordVideo counts them against video_length
        number = len(self.recorded_frames) - 1
        if self.ffmpeg is None:
            self.ffmpeg = start_ffmpeg(self._paths()[0], size, self.frames_per_sec)
        try:
            self.ffmpeg.stdin.write(frame)
        except OSError:  # ffmpeg has stopped: its own message says why
            raise self._abandon() from None
        if self.keep_gif and number < self.GIF_SECONDS * self.frames_per_sec:
            if number % self.GIF_STEP == 0:  # CartPole has a handful of colours: 8 will do
                small = Image.frombytes("RGB", size, frame).resize(self.GIF_SIZE)
                self.gif_frames.append(small.quantize(8))

    def stop_recording(self) -> None:
        if self.ffmpeg is not None:
            with contextlib.suppress(OSError):
                self.ffmpeg.stdin.close()  # ffmpeg encodes what it still holds, ends the file
            if self.ffmpeg.wait() != 0:
                raise self._abandon()
            os.replace(*self._paths())
            self.ffmpeg = None
        self.keep_gif = False  # the GIF is the start of the first video only
        self.recorded_frames, self.recording, self._video_name = [], False, None

    def _abandon(self) -> "WriteError":
        """Stop ffmpeg and remove the unfinished file; say why it failed, in ffmpeg's words."""
        self.ffmpeg.kill()
        self.ffmpeg.wait()
        self.ffmpeg.log.seek(0)
        said = self.ffmpeg.log.read().decode(errors="replace").splitlines()
        reason = said[0].rsplit(": ", 1)[-1] if said else "the encoder stopped"  # the first cause
        tmp, path = self._paths()
        tmp.unlink(missing_ok=True)
        self.ffmpeg, self.recorded_frames, self.recording = None, [], False
        return WriteError(f"cannot write {path}: {reason}")


def draw_cartpole(cartpole: gym.Env) -> tuple[bytes, tuple[int, int]]:
    """CartPole's own drawing of the current state, as raw RGB bytes, and the frame's size."""
    import pygame

    # WHY: render() spends 2.2 of its 2.9 ms a frame copying pygame's pixels into a NumPy array
    # element by element. In any other mode than "rgb_array" or "human" it only draws; pygame
    # then gives the same pixels, row by row, in a single copy (tested against render()).
    cartpole.render_mode = "draw only"
    try:
        cartpole.render()
    finally:
        cartpole.render_mode = "rgb_array"
    return pygame.image.tobytes(cartpole.screen, "RGB"), cartpole.screen.get_size()


class WindowClosed(Exception):
    """The learner closed the window that --watch opened."""


class Window(gym.Wrapper):
    """Shows each frame in a window at the environment's own pace (CartPole: 50 frames a
    second), as gymnasium's HumanRendering does, and ends playback when the window is closed.
    (HumanRendering cannot sit beside RecordVideo: each refuses the other's render mode.)"""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        import pygame

        self.pygame, self.window, self.clock = pygame, None, pygame.time.Clock()

    def reset(self, **options):
        result = super().reset(**options)
        self.show()
        return result

    def step(self, action):
        result = super().step(action)
        self.show()
        return result

    def show(self) -> None:
        pygame = self.pygame
        frame, size = draw_cartpole(self.env.unwrapped)
        if self.window is None:
            pygame.display.init()
            self.window = pygame.display.set_mode(size)
            pygame.display.set_caption("CartPole-v1 · dqn_cartpole.py")
        self.window.blit(pygame.image.frombuffer(frame, size, "RGB"), (0, 0))
        pygame.display.flip()
        if pygame.event.get(pygame.QUIT):
            raise WindowClosed
        self.clock.tick(self.metadata["render_fps"])

    def close(self) -> None:
        if self.window is not None:
            self.pygame.display.quit()
        super().close()


def check_screen() -> None:
    """Raise InputError unless a window can be shown: SDL would quietly draw off-screen."""
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        driver = None  # no X or Wayland: asking SDL prints its own complaints first
    else:
        import pygame

        pygame.display.init()
        driver = pygame.display.get_driver()
        pygame.display.quit()
    if driver in (None, "offscreen", "dummy") and "SDL_VIDEODRIVER" not in os.environ:
        raise InputError(
            "--watch: no screen to open a window on here (no DISPLAY: over SSH, say); "
            "without --watch the test episodes are still recorded"
        )


def start_ffmpeg(path: Path, size: tuple[int, int], fps: int) -> subprocess.Popen:
    """ffmpeg, reading raw RGB frames on its stdin, writing H.264 as RecordVideo's moviepy does."""
    import imageio_ffmpeg  # the ffmpeg that moviepy installs

    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", "-f", "rawvideo"]
    command += ["-pix_fmt", "rgb24", "-s", "{}x{}".format(*size), "-r", str(fps), "-i", "-"]
    # ultrafast, one thread: a third of the CPU of x264's defaults (larger files, ~70 KB per
    # 1000 frames, that look the same), so ffmpeg keeps pace with pygame on the other core.
    command += ["-c:v", "libx264", "-preset", "ultrafast", "-threads", "1"]
    command += ["-pix_fmt", "yuv420p", str(path)]
    log = tempfile.TemporaryFile()  # ffmpeg's messages: a file, which never fills up as a pipe can
    # Its own session (on Windows, process group): Ctrl-C reaches this script, which decides,
    # and not ffmpeg.
    alone = dict(
        start_new_session=True, creationflags=getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
    )
    ffmpeg = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=log, **alone)
    ffmpeg.log = log
    return ffmpeg


def finish_videos(recorder: StreamingRecordVideo, dashboard: Dashboard) -> None:
    """Remove the videos of an earlier, longer run; put a GIF of the first on the dashboard."""
    folder, recorded = recorder.folder, recorder.episode_id + 1
    for old in folder.glob(f"{VIDEO_PREFIX}-episode-*.mp4"):
        if int(old.stem.rsplit("-", 1)[1]) >= recorded:
            old.unlink()
    gif = folder / f"{VIDEO_PREFIX}-episode-0.gif"
    try:
        save_gif(recorder.gif_frames, gif, 1000 * recorder.GIF_STEP // recorder.frames_per_sec)
        dashboard.log({"test/video": swanlab.Video(str(gif), caption="test episode 0")}, 0)
    except Exception as error:  # the mp4 files are there; the GIF is a bonus
        warn(f"no GIF for the dashboard ({type(error).__name__}: {error})")


def save_gif(frames: list, path: Path, delay_ms: int) -> None:
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=delay_ms, loop=0)


# ---- Ctrl-C, SIGTERM, SIGHUP: while training, finish the step, keep what was learned, stop ----
def signal_name(signum: int) -> str:
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


def stop_at_once(signum: int, frame) -> None:
    raise KeyboardInterrupt(signum)  # as Ctrl-C does, with the signal's number


# What `timeout`, `kill`, `docker stop`, a scheduler or a closed terminal send, and Ctrl-C.
STOP_SIGNALS = [
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
]


def handled_signals() -> list[int]:
    """The stop signals less those ignored: `nohup` starts the script with SIGHUP ignored, a
    shell's background job with SIGINT ignored, and a signal ignored then stays ignored."""
    return [s for s in STOP_SIGNALS if signal.getsignal(s) is not signal.SIG_IGN]


class StopRequest:
    requested, signum = False, None

    def __enter__(self):
        self.previous = {s: signal.signal(s, self._on_signal) for s in handled_signals()}
        return self

    def _on_signal(self, signum: int, frame) -> None:
        self.requested, self.signum = True, signum
        for s in handled_signals():  # the next one stops at once
            signal.signal(s, stop_at_once)
        tqdm.write(f"\n{signal_name(signum)}: stopping after this step (again to quit at once).")

    def __exit__(self, *exc_info) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)


# ---- Speed workarounds, each measured (README, "How fast") -----------------------------------
def greedy_policy(q_net: QNetwork) -> Callable[[np.ndarray], int]:
    """q_net(state).argmax() for one state, computed with NumPy on q_net's own weights."""
    if (device := q_net.fc[0].weight.device).type != "cpu":  # a GPU's memory has no NumPy view
        return torch.no_grad()(
            lambda state: int(q_net(torch.as_tensor(state, device=device)).argmax())
        )
    # WHY NUMPY: acting is one state at a time, hundreds of thousands of times a run. For that,
    # PyTorch spends ~30-60 µs per call on bookkeeping around under 1 µs of arithmetic; NumPy
    # does the same products in ~6 µs, and a default run takes ~14 s less.
    # CORRECTNESS: .numpy() gives views of q_net's own memory, not copies. Adam and
    # load_state_dict update the weights in place, so the policy always acts on the latest ones.
    if not all(isinstance(layer, nn.Linear | nn.ReLU) for layer in q_net.fc):
        raise TypeError(f"greedy_policy knows Linear and ReLU layers, not {q_net.fc}")
    # [weight, bias] for a Linear layer, [] for a ReLU, which has no parameters
    layers = [[p.detach().numpy() for p in layer.parameters()] for layer in q_net.fc]

    def act(state: np.ndarray) -> int:
        x = state
        for weights in layers:
            x = weights[0] @ x + weights[1] if weights else np.maximum(x, 0)
        return int(x.argmax())

    return act


class FusedAdam:
    """Adam as torch.optim.Adam(params, lr, fused=True) does it, bit for bit (tested)."""

    # WHY NOT torch.optim.Adam: its first use imports PyTorch's compiler (~0.9 s), and each step
    # passes through compiler guards (~80 µs, a sixth of a gradient step). Seed 5 reached its
    # first perfect evaluation 1.5 s sooner without them. PyTorch's functional Adam has neither.
    DEFAULTS = dict(beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False)

    def __init__(self, params, lr: float):
        self.params, self.lr = list(params), lr
        # Adam's state per weight tensor: running means of the gradient and of its square,
        # and the step count for their bias correction.
        self.moments = [[torch.zeros_like(p) for p in self.params] for _ in range(2)]
        self.steps = [torch.zeros((), device=p.device) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        grads = [p.grad for p in self.params]
        # fused: one kernel for all six tensors instead of a few small operations per tensor.
        args = dict(fused=True, lr=self.lr, maximize=False, **self.DEFAULTS)
        adam_update(self.params, grads, *self.moments, [], self.steps, **args)


# ---- main(): the only entry point ------------------------------------------------------------
@dataclass
class Outcome:
    """How a run ended, for its closing lines and its exit code."""

    dashboard: Dashboard
    best: Best | None = None  # None: --play, nothing was trained
    stopped_by: int | None = None  # the signal that ended training early
    video_error: str | None = None


def play_saved_model(config: Config) -> Outcome:
    q_net = load_model(Path(config.play), state_dim=4, action_dim=2).to(config.device)
    with start_swanlab(config, f"{config.experiment_name}-play", {}) as dashboard:
        outcome = Outcome(dashboard)
        with video_errors_noted(outcome, config):
            test_playback(config, q_net, dashboard)
        return outcome


def report(config: Config, outcome: Outcome, started: float) -> int:
    """Print the closing lines; return the exit code (see main)."""
    outcome.dashboard.finish("aborted" if outcome.stopped_by else "success")
    model_path = Path(config.output_dir) / "best_model.pth"
    saved = outcome.best is not None and outcome.best.episode is not None
    if (best := outcome.best) is not None:
        if saved:
            print(f"\nBest evaluation: {best.avg_reward:.1f} (episode {best.episode})")
            print(f"Model:   {model_path}")
        else:  # stopped before the first evaluation
            print("\nNo evaluation yet, so no model was saved.")
        if (metrics := Path(config.output_dir) / "metrics.csv").exists():
            print(f"Metrics: {metrics}")
        print(f"Total time: {time.time() - started:.1f} s")
    if outcome.stopped_by:
        hint = videos_hint(model_path) if saved else ""
        print(f"Stopped by {signal_name(outcome.stopped_by)}.{hint}")
        print(outcome.dashboard.where())
        return 128 + outcome.stopped_by
    if not config.no_video and config.test_episodes and not outcome.video_error:
        print(f"Videos:  {config.video_dir}/")
    print(outcome.dashboard.where())
    if outcome.video_error:
        print(f"error: {outcome.video_error}", file=sys.stderr)
        return 3
    return 0


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done, 2 bad input, 3 finished without a video, 4 a result could not be
    written (a full disk), 128 + the signal's number when stopped (130 Ctrl-C, 143 SIGTERM)."""
    started = time.time()
    config = parse_args(argv)
    for stream in sys.stdout, sys.stderr:  # a console that lacks "ε" prints "?" instead
        with contextlib.suppress(AttributeError):
            stream.reconfigure(errors="replace")
    torch.set_num_threads(1)  # the network is tiny: a second thread costs more than it saves
    if not config.watch:
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame draws frames with no display
    # SIGTERM and SIGHUP stop at once, as Ctrl-C does, until training asks for more patience.
    others = [s for s in handled_signals() if s != signal.SIGINT]
    previous = {s: signal.signal(s, stop_at_once) for s in others}
    try:
        if config.watch:
            check_screen()
        if not config.play:
            claim_folder(Path(config.output_dir), "--output-dir")
        if not config.no_video:
            claim_folder(Path(config.video_dir), "--video-dir")
        outcome = play_saved_model(config) if config.play else train_and_test(config, started)
        return report(config, outcome, started)
    except InputError as error:
        print(f"dqn_cartpole.py: error: {error}", file=sys.stderr)
        return 2
    except WriteError as error:
        print(f"dqn_cartpole.py: error: {error}", file=sys.stderr)
        return 4
    except KeyboardInterrupt as stop:  # a second signal, or one outside the training loop
        signum = stop.args[0] if stop.args else signal.SIGINT
        model = Path(config.output_dir) / "best_model.pth"
        saved = not config.play and model.exists() and model.stat().st_mtime >= started
        hint = videos_hint(model) if saved else ""
        print(f"\nStopped by {signal_name(signum)}.{hint}", file=sys.stderr)
        return 128 + signum
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


if __name__ == "__main__":
    sys.exit(main())
