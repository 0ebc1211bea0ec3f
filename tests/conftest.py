import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "dqn_cartpole.py"


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a new user: no SwanLab login, no SwanLab settings, no display."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWANLAB_")}
    env.pop("DISPLAY", None)
    env.update(HOME=str(home), PYTHONUNBUFFERED="1", **extra)
    return env


def run_script(cwd: Path, *args: str, timeout: float = 120, **env: str):
    """Run the real command as a learner would, with stdin closed."""
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=cwd,
        env=clean_env(cwd, **env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def no_swanlab_login(tmp_path, monkeypatch):
    """A HOME with no saved `swanlab login` and no SWANLAB_* variables."""
    for key in list(os.environ):
        if key.startswith("SWANLAB_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path
