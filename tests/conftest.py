import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "dqn_cartpole.py"


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a new user: no SwanLab login, no SwanLab settings, no display."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWANLAB_")}
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER"):  # set by main() in tests
        env.pop(name, None)
    env.update({"HOME": str(home), "PYTHONUNBUFFERED": "1", **extra})
    return env


def run_command(cwd: Path, command: list[str], timeout: float = 120, **env: str):
    """Run `command` in `cwd` as a new user would (see clean_env), with stdin closed."""
    return subprocess.run(
        command,
        cwd=cwd,
        env=clean_env(cwd, **env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_script(cwd: Path, *args: str, timeout: float = 120, **env: str):
    """Run the real command as a learner would, with stdin closed."""
    return run_command(cwd, [sys.executable, str(SCRIPT), *args], timeout, **env)


def default_stop_signals() -> None:
    """Ctrl-C, SIGTERM and SIGHUP as a terminal gives them. A suite started under `nohup` or as
    a background job (`pytest &`) ignores SIGHUP or SIGINT, and its children would inherit that."""
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)


def start_script(cwd: Path, *args: str, preexec_fn=None, **env: str) -> subprocess.Popen:
    """The real command in the background, its stdout and stderr read as text; `preexec_fn`
    runs in the new process, after its stop signals are set as a terminal sets them."""
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        cwd=cwd,
        env=clean_env(cwd, **env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: (default_stop_signals(), preexec_fn and preexec_fn()),
    )


def read_until(process: subprocess.Popen, start: str) -> list[str]:
    """The lines of stdout up to and including the first that starts with `start`."""
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith(start):
            return lines
    raise AssertionError(f"no line starting with {start!r} in {lines}")


def balancing_model(path: Path) -> Path:
    """A QNetwork that never drops the pole: it pushes right when 0.1·x + 0.5·v + 10·θ + 2·ω > 0,
    a linear controller that balances for 20,000 steps and more. Saved as a trained model is."""
    import torch

    import dqn_cartpole as dqn

    net = dqn.QNetwork(4, 2)
    gains = torch.tensor([0.1, 0.5, 10.0, 2.0])
    with torch.no_grad():
        for layer in (net.fc[0], net.fc[2], net.fc[4]):
            layer.weight.zero_()
            layer.bias.zero_()
        net.fc[0].weight[0], net.fc[0].weight[1] = gains, -gains  # relu(g·s), relu(-g·s)
        net.fc[2].weight[0, 0], net.fc[2].weight[1, 1] = 1.0, 1.0
        net.fc[4].weight[1, 0], net.fc[4].weight[0, 1] = 1.0, 1.0  # Q(right), Q(left)
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture
def no_swanlab_login(tmp_path, monkeypatch):
    """A HOME with no saved `swanlab login` and no SWANLAB_* variables."""
    for key in list(os.environ):
        if key.startswith("SWANLAB_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def read_metrics(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def swanlab_entries(swanlog: Path, name: str, run: int = 0) -> list[dict]:
    """What was logged under `name` in a local SwanLab folder (its `run`-th run, oldest first):
    one dict per step, with the value under "data" and a media's caption under "more"."""
    db = sqlite3.connect(swanlog / "runs.swanlab")
    (folder,) = db.execute("SELECT folder FROM tag WHERE name = ?", (name,)).fetchone()
    run_dir = sorted(p for p in swanlog.iterdir() if p.is_dir())[run]
    entries = []
    for log in sorted((run_dir / "logs" / folder).glob("*.log")):
        entries += [json.loads(line) for line in log.read_text().splitlines()]
    return entries


def swanlab_charts(swanlog: Path) -> set[str]:
    """The names of the charts in a local SwanLab folder."""
    return {
        name
        for (name,) in sqlite3.connect(swanlog / "runs.swanlab").execute("SELECT name FROM tag")
    }


def swanlab_metric(swanlog: Path, name: str, run: int = 0) -> list:
    """The values logged under `name`, one per step."""
    return [entry["data"] for entry in swanlab_entries(swanlog, name, run)]


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """One short real run with no SwanLab login and stdin closed, shared by many checks."""
    # A folder with a space and Chinese characters in its name, as many learners' folders have.
    cwd = tmp_path_factory.mktemp("我的 run")
    args = ["--episode", "3", "--eval-every", "1", "--test-episodes", "2"]
    args += ["--batch-size", "16"]  # so that a loss is logged too
    result = run_script(cwd, *args, "--max-test-steps", "50")
    assert result.returncode == 0, result.stdout + result.stderr
    return cwd, result
