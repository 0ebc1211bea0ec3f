"""How fast and how reliably dqn_cartpole.py learns, over several seeds.

Runs the real script once per seed (in parallel, one core each), then reads what each run
left in output/ and tests its best model: 100 fresh episodes of CartPole-v1's 500 steps, the
script's own 3 test episodes of 1500 steps (the videos' episodes, replayed without video),
and 5 fresh episodes of 20,000 steps (how long it holds the pole). Prints a markdown table.

    python benchmarks/seeds.py                         # seeds 0-9, the default command line
    python benchmarks/seeds.py --seeds 0 1 -- --episode 100 --no-video   # args after -- go
                                                                           # to the script
"""

import argparse
import csv
import json
import os
import platform
import queue
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import dqn_cartpole as dqn  # noqa: E402  (needs the repo on the path first)

SOLVED = 500.0  # CartPole-v1's maximum return: the 500-step time limit
TEST_STEPS, LONG_STEPS = 1500, 20_000  # the test videos' limit, and a long check of our own
# The cores this process may use. macOS cannot pin a process to a core: there runs share them.
PINNING = hasattr(os, "sched_setaffinity")
CORES = sorted(os.sched_getaffinity(0)) if PINNING else list(range(os.cpu_count() or 1))


def run_seed(seed: int, workdir: Path, script: Path, script_args: list[str], cores) -> dict:
    """Run the script for one seed in its own folder, with no SwanLab login, on one free core.

    Pinned to its core, the run's own video encoder (ffmpeg starts several threads) cannot
    slow down the run training beside it.
    """
    cwd = workdir / f"seed-{seed}"
    cwd.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWANLAB_")}
    env.update(HOME=str(cwd), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    core = cores.get()
    launched = time.time()
    with open(cwd / "console.log", "w") as log:
        process = subprocess.run(
            [sys.executable, str(script), "--seed", str(seed), *script_args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=(lambda: os.sched_setaffinity(0, {core})) if PINNING else None,
        )
    cores.put(core)
    return {"seed": seed, "cwd": cwd, "launched": launched, "wall_s": time.time() - launched,
            "returncode": process.returncode}  # fmt: skip


def summarize(run: dict, eval_episodes: int) -> dict:
    """Read one run's metrics and best model; evaluate that model on fresh episodes."""
    output = run["cwd"] / "output"
    with open(output / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    evals = [row for row in rows if row["eval_avg_reward"]]
    info = json.loads((output / "best_model.json").read_text())
    first = next((i for i, r in enumerate(evals) if float(r["eval_avg_reward"]) >= SOLVED), None)
    result = dict(run, solved=first is not None, time_to_solve=None, steps_to_solve=None)
    result["stayed"] = None
    # How the values learned behave: a pole that never falls is worth 1 / (1 - γ) = 100.
    for column in ("q_value", "loss"):
        values = [float(r[column]) for r in rows if r[column]]
        result[f"peak_{column}"] = max(values) if values else None
    if first is not None:
        # Seconds from process start: the script's clock starts in main(), after its imports.
        startup = info["run_started_at"] - run["launched"]
        result["time_to_solve"] = startup + float(evals[first]["wall_time_s"])
        result["steps_to_solve"] = int(evals[first]["env_steps"])
        later = [float(r["eval_avg_reward"]) >= SOLVED for r in evals[first + 1 :]]
        result["stayed"] = sum(later) / len(later) if later else 1.0

    policy = dqn.Faster.greedy(dqn.load_model(output / "best_model.pth", 4, 2))
    env = dqn.make_env(seed=10_000 + run["seed"])  # episodes the agent has never seen
    returns = [dqn.greedy_episode(env, policy)[0] for _ in range(eval_episodes)]
    result["best_model_mean"] = statistics.mean(returns)
    # The test playback's episodes: the same seed and limit as the script gives them.
    test = dqn.make_env(seed=run["seed"] + 2, max_episode_steps=TEST_STEPS)
    result["tests_held"] = sum(dqn.greedy_episode(test, policy)[1] == TEST_STEPS for _ in range(3))
    long = dqn.make_env(seed=20_000 + run["seed"], max_episode_steps=LONG_STEPS)
    result["long_held"] = sum(dqn.greedy_episode(long, policy)[1] == LONG_STEPS for _ in range(5))
    return result


def fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def median(results: list[dict], key: str):
    values = [r[key] for r in results if r[key] is not None]
    return statistics.median(values) if values else None


def table(results: list[dict], eval_episodes: int) -> str:
    lines = [
        "| seed | solved | time to solve (s) | steps to solve | later evals at 500 "
        f"| whole run (s) | best model, {eval_episodes}-episode mean "
        "| test episodes held to 1500 | 20,000-step episodes held | peak Q | peak loss |",
        "|---:|:---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['seed']} | {'yes' if r['solved'] else 'no'} | {fmt(r['time_to_solve'], '.1f')} "
            f"| {fmt(r['steps_to_solve'], 'd')} | {fmt(r['stayed'], '.0%')} "
            f"| {r['wall_s']:.1f} | {r['best_model_mean']:.1f} "
            f"| {r['tests_held']}/3 | {r['long_held']}/5 "
            f"| {fmt(r['peak_q_value'], '.1f')} | {fmt(r['peak_loss'], '.1f')} |"
        )
    solved = sum(r["solved"] for r in results)
    perfect = sum(r["best_model_mean"] == SOLVED for r in results)
    steps = median(results, "steps_to_solve")
    cells = [
        "median",
        f"{solved}/{len(results)}",
        fmt(median(results, "time_to_solve"), ".1f"),
        fmt(steps and round(steps), "d"),
        fmt(median(results, "stayed"), ".0%"),
        f"{median(results, 'wall_s'):.1f}",
        f"{perfect}/{len(results)} at 500",
        f"{sum(r['tests_held'] for r in results)}/{3 * len(results)}",
        f"{sum(r['long_held'] for r in results)}/{5 * len(results)}",
        fmt(median(results, "peak_q_value"), ".1f"),
        fmt(median(results, "peak_loss"), ".1f"),
    ]
    lines.append("| " + " | ".join(f"**{c}**" for c in cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--jobs", type=int, default=len(CORES), help="runs at once, one per core")
    parser.add_argument("--eval-episodes", type=int, default=100, help="to test each best model")
    parser.add_argument("--workdir", type=Path, help="keep each run's files here (default: temp)")
    parser.add_argument("--script", type=Path, default=REPO / "dqn_cartpole.py", help="to compare")
    parser.add_argument("script_args", nargs="*", help="after --: arguments for the script")
    args = parser.parse_args()
    if not 1 <= args.jobs <= len(CORES):
        parser.error(f"--jobs must be between 1 and {len(CORES)}, the cores this process may use")

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dqn-seeds-"))
    started = time.time()
    cores = queue.Queue()
    for core in CORES[: args.jobs]:
        cores.put(core)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        runs = list(
            pool.map(
                lambda s: run_seed(s, workdir, args.script, args.script_args, cores), args.seeds
            )
        )
    failed = [r for r in runs if r["returncode"] != 0]
    for r in failed:
        print(f"seed {r['seed']} failed (exit {r['returncode']}): see {r['cwd'] / 'console.log'}")
    results = [summarize(r, args.eval_episodes) for r in runs if r["returncode"] == 0]

    command = " ".join(["python dqn_cartpole.py", *args.script_args]).strip()
    print(
        f"`{command}`, seeds {args.seeds[0]}–{args.seeds[-1]}, {args.jobs} at a time, "
        f"{time.strftime('%Y-%m-%d')}, {platform.machine()} with {os.cpu_count()} cores, "
        f"benchmark took {time.time() - started:.0f} s; runs in {workdir}\n"
    )
    if results:
        print(table(results, args.eval_episodes))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
