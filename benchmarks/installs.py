"""Whether `pip install -r requirements.txt` needs a compiler on any machine we promise it runs on.

For each platform and CPython below, uv resolves the requirements as that machine would (its
markers and wheel tags, not this machine's): first as pip does, taking the newest release that
fits, wheel or not; then those very releases again, wheels only. A release that fails there is
one pip would build: the cell fails, unless it is a pure-Python package that ships no wheel
(SDIST_ONLY). Prints a markdown table, one row per platform: the torch and NumPy that machine
gets, or ✗ and what has no wheel. Needs uv (`pip install uv`) and the package index, not the
other machines; exits 1 if a required cell fails. Takes 2-4 minutes.

    python benchmarks/installs.py                     # requirements.txt
    python benchmarks/installs.py other.txt --uv ~/.local/bin/uv
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHONS = ["3.10", "3.11", "3.12", "3.13", "3.14", "3.15"]
# name: (uv's --python-platform, MACOSX_DEPLOYMENT_TARGET, the Pythons that must pass).
# Linux is glibc 2.28 or newer (manylinux_2_28, the tag of torch's wheels since 2.6). Two cells
# of 3.15 cannot pass today, whatever we ask for (README, "Which versions"): SwanLab needs orjson,
# whose cp315 Linux wheels need glibc 2.39; and torch 2.15, the first for 3.15, has Mac wheels
# for macOS 14 and later only.
PLATFORMS = {
    "Windows x86-64": ("x86_64-pc-windows-msvc", None, PYTHONS),
    "Linux x86-64": ("x86_64-manylinux_2_28", None, PYTHONS[:5]),
    "Linux x86-64, glibc 2.39+": ("x86_64-manylinux_2_39", None, PYTHONS),
    "Linux aarch64": ("aarch64-manylinux_2_28", None, PYTHONS[:5]),
    "Linux aarch64, glibc 2.39+": ("aarch64-manylinux_2_39", None, PYTHONS),
    "macOS 14+ arm64": ("aarch64-apple-darwin", "14.0", PYTHONS),
    "macOS 13 arm64": ("aarch64-apple-darwin", "13.0", PYTHONS[:5]),
    "macOS 12 arm64": ("aarch64-apple-darwin", "12.0", PYTHONS[:5]),
    # torch stopped at 2.2.2 on Intel Macs, and 2.2.2 has wheels up to cp312 only.
    "macOS 12+ x86-64": ("x86_64-apple-darwin", "12.0", PYTHONS[:3]),
}
# Published as a source archive only, and pure Python: pip makes the wheel by copying files,
# with no compiler. pwinput (SwanLab's password prompt) is one .py file; moviepy 1.0.3 (the one
# for Python 3.15, requirements.txt says why) is a py3-none-any package. Under --only-binary
# :all:, uv's --no-binary NAME lifts the ban for NAME alone: it is passed only once uv has said
# that the very version pip picked has no wheel, so a release that has one is never exempted.
SDIST_ONLY = {"pwinput", "moviepy"}
NO_WHEEL = re.compile(r"([A-Za-z0-9][\w.-]*?)(?:[=<>!~][^ ]*)? has no (?:usable )?wheels")


def compile_(
    uv: str,
    source: str,
    platform: str,
    macos: str | None,
    python: str,
    extra: list[str],
    stdin: str = "",
) -> tuple[dict[str, str], str]:
    """uv's resolution for that machine: {package: version}, or {} and uv's error."""
    env = dict(os.environ, UV_PYTHON_DOWNLOADS="never")  # a build for metadata runs on this one
    env.pop("MACOSX_DEPLOYMENT_TARGET", None)
    if macos:
        env["MACOSX_DEPLOYMENT_TARGET"] = macos  # uv takes the macOS version from it
    argv = [
        uv,
        "pip",
        "compile",
        source,
        "--python-version",
        python,
        "--python-platform",
        platform,
        "--no-header",
        "--no-annotate",
        *extra,
    ]
    done = subprocess.run(argv, env=env, input=stdin, capture_output=True, text=True)
    if done.returncode != 0:
        return {}, done.stderr
    pins = (line.strip().split("==") for line in done.stdout.splitlines())
    return {p[0]: p[1] for p in pins if len(p) == 2}, ""


def cell(uv: str, requirements: Path, platform: str, macos: str | None, python: str):
    """("torch / np", [pure-Python builds]) if pip would install wheels only there, else "✗ ..."."""
    # First as pip resolves: the newest release that fits, whether it has a wheel or not.
    picks, error = compile_(uv, str(requirements), platform, macos, python, [])
    pinned = "".join(f"{name}=={version}\n" for name, version in picks.items())
    built: list[str] = []
    # Then those very releases (all of them: no dependencies to add), wheels only.
    while picks:
        options = ["--only-binary", ":all:", "--no-deps"]
        options += [arg for name in built for arg in ("--no-binary", name)]
        _, error = compile_(uv, "-", platform, macos, python, options, pinned)
        if not error:
            torch, numpy = picks.get("torch", "-"), picks.get("numpy", "-")
            return f"{torch} / np {numpy}", [f"{name} {picks[name]}" for name in built]
        exempt = [n for n in NO_WHEEL.findall(error) if n in SDIST_ONLY and n not in built]
        if not exempt:
            break
        built += dict.fromkeys(exempt)
    names = dict.fromkeys(NO_WHEEL.findall(error))
    if not names:
        print(f"--- {platform} {macos or ''} {python}:\n{error}", file=sys.stderr)
    return "✗ " + (", ".join(f"{n} {picks.get(n, '')}".strip() for n in names) or "see stderr"), []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("requirements", nargs="?", type=Path, default=REPO / "requirements.txt")
    parser.add_argument("--uv", default=shutil.which("uv"), help="the uv to use (default: PATH)")
    parser.add_argument("--jobs", type=int, default=4, help="cells resolved at once")
    args = parser.parse_args()
    if not args.uv:
        parser.error("no uv on PATH: `pip install uv`, or give --uv")

    started = time.time()
    cells = [(name, py) for name in PLATFORMS for py in PYTHONS]
    with ThreadPoolExecutor(args.jobs) as pool:  # mostly waiting on the index: threads suffice
        jobs = {
            c: pool.submit(cell, args.uv, args.requirements.resolve(), *PLATFORMS[c[0]][:2], c[1])
            for c in cells
        }
        results = {c: job.result() for c, job in jobs.items()}

    print(
        f"`pip install -r {args.requirements}` as each machine would resolve it, "
        f"{time.strftime('%Y-%m-%d')}, {time.time() - started:.0f} s. torch / NumPy, or ✗ and "
        "what has no wheel there; (in brackets): not required.\n"
    )
    print("| platform | " + " | ".join(PYTHONS) + " |")
    print("|---|" + "---|" * len(PYTHONS))
    failed, passed, sdists = [], 0, {}
    for name, (_, _, required) in PLATFORMS.items():
        row = []
        for py in PYTHONS:
            text, built = results[name, py]
            passed += not text.startswith("✗")
            for sdist in built:
                sdists.setdefault(sdist, []).append(f"{name} {py}")
            if text.startswith("✗") and py in required:
                failed.append(f"{name} {py}")
            row.append(text if py in required else f"({text})")
        print(f"| {name} | " + " | ".join(row) + " |")
    print("\nBuilt from source, pure Python (no compiler):")
    for sdist, where in sdists.items():
        print(
            f"- {sdist}: "
            + ("every cell that passes" if len(where) == passed else ", ".join(where))
        )
    if failed:
        print(f"\nRequired, failing: {', '.join(failed)}.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
