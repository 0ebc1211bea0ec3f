"""How long the test videos and a whole default run take, and their peak memory.

    python benchmarks/video.py                    # --play (the video phase alone), then a whole
                                                  # default run; 3 runs of each, alternating
    python benchmarks/video.py --tutorial         # and the tutorial's own script beside them
    python benchmarks/video.py --model output/best_model.pth --runs 5
    python benchmarks/video.py --runs 1 -- --max-test-steps 100   # args after -- go to the script

Every run starts in a folder of its own, with HOME there and no SWANLAB_* variables: no SwanLab
login, as on a learner's first run (the tutorial's script gets SWANLAB_MODE=offline, as it
would ask for a login otherwise). Without --model, a model is trained first (200 episodes, no
video, not timed). Prints a markdown table: wall time per command (min/median/max), the peak
resident memory of its largest process (as `/usr/bin/time -v` counts it: the script or one of
its ffmpeg children, not their sum) and, with --tutorial, each median over the tutorial's. Then
the cost of a video frame: the median --play less the median --play --no-video, over the frames.
"""

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TUTORIAL = REPO.parent / "shared" / "tutorial" / "dqn-cartpole-tutorial.md"
HEADING = "## 六、完整代码"  # "the complete code": the tutorial's whole script follows it


def tutorial_code(markdown: Path) -> str:
    """The first python block after HEADING in the tutorial's markdown, as it is printed there."""
    text = markdown.read_text(encoding="utf-8")
    if HEADING not in text or "```python\n" not in text.split(HEADING, 1)[1]:
        sys.exit(f"{markdown}: no python block under {HEADING!r}")
    return text.split(HEADING, 1)[1].split("```python\n", 1)[1].split("\n```", 1)[0] + "\n"


def run(argv: list[str], cwd: Path, extra_env: dict[str, str]) -> dict:
    """Run one command in a fresh folder; its wall time, exit code and peak memory."""
    cwd.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWANLAB_")}
    # No display here: frames are drawn off-screen (our script would set this itself).
    env.update(HOME=str(cwd), SDL_VIDEODRIVER="dummy", **extra_env)
    with open(cwd / "console.log", "w") as log:
        started = time.perf_counter()
        child = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
        # wait4, not wait: it also gives this child's resource use, its peak memory among it.
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    return {"wall_s": wall, "rss_mb": usage.ru_maxrss / 1024, "returncode": child.returncode,
            "log": cwd / "console.log"}  # fmt: skip


def fmt_row(name: str, runs: list[dict], reference: float | None) -> str:
    walls = [r["wall_s"] for r in runs]
    cells = [name, len(runs), f"{min(walls):.1f}", f"{statistics.median(walls):.1f}",
             f"{max(walls):.1f}", f"{max(r['rss_mb'] for r in runs):.0f}"]  # fmt: skip
    if reference:
        cells.append(f"{statistics.median(walls) / reference:.3f}")
    return "| " + " | ".join(str(c) for c in cells) + " |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each command")
    parser.add_argument("--model", type=Path, help="model to replay (default: train one first)")
    parser.add_argument("--tutorial", action="store_true", help="also time the tutorial's script")
    parser.add_argument("--tutorial-md", type=Path, default=TUTORIAL, help="where its code is")
    parser.add_argument("--workdir", type=Path, help="keep each run's files here (default: temp)")
    parser.add_argument("--script", type=Path, default=REPO / "dqn_cartpole.py", help="to compare")
    parser.add_argument("script_args", nargs="*", help="after --: arguments for the script")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="dqn-video-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    script, python = str(args.script.resolve()), sys.executable

    model = args.model and args.model.resolve()
    if model is None:
        training = [python, script, "--episode", "200", "--no-video", "--swanlab-mode", "disabled"]
        trained = run(training, workdir / "model", {})
        if trained["returncode"] != 0:
            sys.exit(f"training the model failed (exit {trained['returncode']}): {trained['log']}")
        model = workdir / "model" / "output" / "best_model.pth"

    play = [python, script, "--play", str(model), *args.script_args]
    commands = {
        "video phase: `dqn_cartpole.py --play MODEL`": (play, {}),
        "the same without video: `--play MODEL --no-video`": ([*play, "--no-video"], {}),
        "whole run: `dqn_cartpole.py`": ([python, script, *args.script_args], {}),
    }  # fmt: skip
    if args.tutorial:
        (workdir / "tutorial.py").write_text(tutorial_code(args.tutorial_md), encoding="utf-8")
        commands["the tutorial's script"] = (
            [python, str(workdir / "tutorial.py")], {"SWANLAB_MODE": "offline"})  # fmt: skip

    started = time.time()
    results: dict[str, list[dict]] = {name: [] for name in commands}
    for i in range(args.runs):  # run by run, every command once: noise hits them all alike
        for n, (name, (argv, extra_env)) in enumerate(commands.items()):
            results[name].append(run(argv, workdir / f"run{i}-cmd{n}", extra_env))
    failed = [(name, r) for name, rs in results.items() for r in rs if r["returncode"] != 0]
    for name, r in failed:
        print(f"{name} failed (exit {r['returncode']}): see {r['log']}")

    print(
        f"{args.runs} run(s) of each, {time.strftime('%Y-%m-%d')}, {platform.machine()} with "
        f"{os.cpu_count()} cores, benchmark took {time.time() - started:.0f} s; runs in {workdir}\n"
    )
    tutorial = results.get("the tutorial's script")
    reference = statistics.median(r["wall_s"] for r in tutorial) if tutorial else None
    header = "| command | runs | min (s) | median (s) | max (s) | peak RSS (MB) |"
    print(header + (" median ÷ tutorial's |" if reference else ""))
    print("|---|---:|---:|---:|---:|---:|" + ("---:|" if reference else ""))
    for name, runs in results.items():
        print(fmt_row(name, runs, reference))
    video_runs, plain_runs = list(results.values())[:2]
    with_video, without = ([r["wall_s"] for r in rs] for rs in (video_runs, plain_runs))
    # A frame for each step of a test episode, and one for its start.
    console = video_runs[0]["log"].read_text()
    frames = sum(int(r) + 1 for r in re.findall(r"test episode \d+ \| reward (\d+)", console))
    if frames and not failed:
        cost = (statistics.median(with_video) - statistics.median(without)) / frames
        print(f"\nA video frame: {1000 * cost:.2f} ms ({frames} frames a run, medians)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
