"""The same results on every Python: the test suite and a default run, once per interpreter.

For each Python given (default: every CPython 3.10 and newer that pyenv has), makes a virtual
environment, installs both requirement files, runs `python -m pytest -q`, then the default
command `python dqn_cartpole.py` (SwanLab off) in an empty folder, and prints a markdown table:
the suite's result, the run's time, and a digest of what the run left: best_model.pth,
metrics.csv without its wall-clock column, and the videos. Equal digests: the same run.

    python benchmarks/pythons.py                          # every pyenv CPython >= 3.10
    python benchmarks/pythons.py --venvs ~/venvs python3.12 /usr/bin/python3.13
    python benchmarks/pythons.py -- --constraint .ci/constraints.txt   # args after -- go to pip

A venv that already exists under --venvs is reused (torch is a large download on Linux).
"""

import argparse
import csv
import hashlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def pyenv_pythons() -> list[str]:
    """pyenv's CPython 3.10 and newer, by path (a 3.14-dev or pypy folder is left out)."""
    root = subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip()
    found = {}
    for python in Path(root, "versions").glob("3.*/bin/python3") if root else []:
        release = python.parts[-3].split(".")  # versions/3.12.1/bin/python3
        if len(release) == 3 and all(part.isdigit() for part in release):
            found[tuple(map(int, release))] = str(python)
    return [path for release, path in sorted(found.items()) if release >= (3, 10)]


def first_perfect_evaluation(metrics: Path) -> str:
    """The episode of the first evaluation at 500 (seed 42: 26), or "-"."""
    with open(metrics, newline="") as f:
        for row in csv.DictReader(f):
            if row["eval_avg_reward"] and float(row["eval_avg_reward"]) >= 500:
                return row["episode"]
    return "-"


def digest(run_dir: Path) -> str:
    """What a run learned and recorded, minus its timings: 12 hex digits."""
    h = hashlib.sha256((run_dir / "output" / "best_model.pth").read_bytes())
    with open(run_dir / "output" / "metrics.csv", newline="") as f:
        rows = [{k: v for k, v in row.items() if k != "wall_time_s"} for row in csv.DictReader(f)]
    h.update(repr(rows).encode())
    for video in sorted((run_dir / "dqn_videos").glob("*.mp4")):
        h.update(video.read_bytes())
    return h.hexdigest()[:12]


def check(python: str, venvs: Path, pip_args: list[str]) -> dict:
    """Install into this Python's venv, run the suite, then a default run in an empty folder."""
    version = subprocess.run([python, "--version"], capture_output=True, text=True).stdout.split()[
        1
    ]
    row = dict(python=version, torch="-", suite="not installed", suite_s=0, run="-", run_s=0)
    row |= dict(first="-", ok=False)
    venv = venvs / version.rsplit(".", 1)[0]  # e.g. venvs/3.12
    if not (venv / "bin" / "python").exists():
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    requirements = ["-r", str(REPO / "requirements.txt"), "-r", str(REPO / "requirements-dev.txt")]
    pip = [py, "-m", "pip", "install", "-q", *requirements, *pip_args]
    if (installed := subprocess.run(pip, capture_output=True, text=True)).returncode != 0:
        print(f"{python}: pip install failed:\n{installed.stderr}", file=sys.stderr)
        return row  # pip's own message says why; its warnings otherwise are noise
    row["torch"] = subprocess.run(
        [py, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True
    ).stdout.strip()

    started = time.perf_counter()
    pytest = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    suite = subprocess.run(pytest, cwd=REPO, capture_output=True, text=True)
    row["suite_s"] = time.perf_counter() - started
    row["suite"] = (suite.stdout.strip().splitlines() or ["no output"])[-1].strip("= ")

    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        default = [py, str(REPO / "dqn_cartpole.py"), "--swanlab-mode", "disabled"]
        run = subprocess.run(default, cwd=folder, capture_output=True, stdin=subprocess.DEVNULL)
        row["run_s"] = time.perf_counter() - started
        if run.returncode == 0:
            row["run"] = digest(Path(folder))
            row["first"] = first_perfect_evaluation(Path(folder, "output", "metrics.csv"))
        else:
            row["run"] = f"exit {run.returncode}"
    row["ok"] = suite.returncode == 0 == run.returncode
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pythons", nargs="*", help="interpreters (default: pyenv's >= 3.10)")
    parser.add_argument("--venvs", type=Path, default=Path(tempfile.gettempdir()) / "dqn-venvs")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args, pip_args = parser.parse_args(argv[:split]), argv[split + 1 :]
    rows = [check(p, args.venvs, pip_args) for p in args.pythons or pyenv_pythons()]
    print(
        "| Python | torch | test suite | suite time | default run: digest | first 500 | run time |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['python']} | {r['torch']} | {r['suite']} | {r['suite_s']:.0f} s | "
            f"`{r['run']}` | episode {r['first']} | {r['run_s']:.1f} s |"
        )
    same = len({r["run"] for r in rows}) == 1
    print(f"\nThe default runs are {'identical' if same else 'NOT identical'} on every Python.")
    return 0 if same and all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
