"""Nothing lost, round 3 (issue 28): an empty or impossible path is refused in one line before
anything is touched; output/ never holds two runs' files; earlier videos stay until the new ones
are whole; the console cannot end a run; a model file is judged in the right words."""

import errno
import io
import json
import math
import os
import shlex
import signal
import sys

import pytest
import torch

import dqn_cartpole as dqn
from conftest import SCRIPT, balancing_model, read_metrics, run_command

QUICK = ["--swanlab-mode", "disabled", "--no-video"]
SHORT_VIDEOS = ["--test-episodes", "1", "--max-test-steps", "10", "--swanlab-mode", "disabled"]
NAMES = ("best_model.pth", "best_model.json", "metrics.csv")
EARLIER_VIDEOS = [f"rl-video-episode-{n}.mp4" for n in range(3)] + ["rl-video-episode-0.gif"]


def main_without_traceback(argv: list[str]) -> int:
    """dqn.main(argv); an exception out of it (a traceback for the learner) fails the test."""
    try:
        return dqn.main(argv)
    except Exception as error:
        pytest.fail(f"a traceback, not one line: {type(error).__name__}: {error}")


def one_error_line(capsys) -> str:
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("dqn_cartpole.py: error: "), line
    return line


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory) -> dict[str, bytes]:
    """The three files a short real run leaves in its output folder."""
    folder = tmp_path_factory.mktemp("earlier") / "output"
    assert dqn.main(["--episode", "20", "--output-dir", str(folder), *QUICK]) == 0
    return {name: (folder / name).read_bytes() for name in NAMES}


@pytest.fixture
def output(tmp_path, monkeypatch, earlier_run):
    """tmp_path as the working folder, its output/ holding the earlier run's three files."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "output").mkdir()
    for name, data in earlier_run.items():
        (tmp_path / "output" / name).write_bytes(data)
    return tmp_path / "output"


def unchanged(output, earlier_run) -> dict[str, bool]:
    return {name: (output / name).read_bytes() == earlier_run[name] for name in NAMES}


# ---- 1. An empty path, as an unset shell variable gives, is refused before anything is touched
@pytest.mark.parametrize("flag", ["--play", "--output-dir", "--video-dir"])
def test_an_empty_path_is_refused_in_one_line_and_output_is_untouched(
    output, earlier_run, capsys, flag
):
    assert dqn.main(["--episode", "1", *SHORT_VIDEOS, flag, ""]) == 2  # today: it trains
    assert flag in one_error_line(capsys)
    assert all(unchanged(output, earlier_run).values())


# ---- 2. output/ never holds two runs' files
def test_a_stop_before_the_first_evaluation_leaves_the_earlier_runs_three_files(
    output, earlier_run, monkeypatch
):
    real_episode, episodes = dqn.train_episode, []

    def ctrl_c_in_the_third_episode(env, agent):
        episodes.append(real_episode(env, agent))
        if len(episodes) == 3:
            dqn.stop_signal = signal.SIGINT  # reset to None as main() returns
        return episodes[-1]

    monkeypatch.setattr(dqn, "train_episode", ctrl_c_in_the_third_episode)
    assert dqn.main(["--episode", "20", "--eval-every", "10", *QUICK]) == 130
    assert unchanged(output, earlier_run) == dict.fromkeys(NAMES, True)  # today: metrics.csv


@pytest.mark.parametrize("failing", ["best_model.pth", "best_model.json"])
def test_a_full_disk_at_the_first_save_never_leaves_two_runs_files_mixed(
    output, earlier_run, failing
):
    (output / f".{failing}.tmp").symlink_to("/dev/full")  # its write fails with ENOSPC
    assert dqn.main(["--episode", "3", "--eval-every", "1", *QUICK]) == 4
    same = unchanged(output, earlier_run)
    if failing == "best_model.pth":  # no model saved: the earlier run's three, as they were
        assert same == dict.fromkeys(NAMES, True)
    elif not all(same.values()):  # else all three are this second run's, and agree
        assert same == dict.fromkeys(NAMES, False), f"two runs' files mixed: {same}"
        info = json.loads((output / "best_model.json").read_text())
        rows = {int(row["episode"]): row for row in read_metrics(output / "metrics.csv")}
        assert float(rows[info["episode"]]["eval_avg_reward"]) == info["eval_avg_reward"]
        assert dqn.load_model(output / "best_model.pth", 4, 2)


# ---- 3. Earlier videos stay until the new ones are whole
@pytest.fixture
def earlier_videos(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    videos = tmp_path / "dqn_videos"
    videos.mkdir()
    for name in EARLIER_VIDEOS:
        (videos / name).write_bytes(f"the learner's earlier {name}".encode())
    return videos


def assert_earlier_videos_kept(videos):
    for name in EARLIER_VIDEOS:
        earlier = f"the learner's earlier {name}".encode()
        assert (videos / name).exists() and (videos / name).read_bytes() == earlier, name
    assert [p.name for p in videos.glob("*.gif")] == ["rl-video-episode-0.gif"]


def replay(tmp_path) -> int:
    model = balancing_model(tmp_path / "model.pth")
    args = ["--test-episodes", "3", "--max-test-steps", "20", "--swanlab-mode", "disabled"]
    return dqn.main(["--play", str(model), *args])


def test_a_replay_whose_encoder_fails_at_its_first_video_keeps_the_earlier_videos(
    tmp_path, earlier_videos, monkeypatch
):
    ffmpeg = tmp_path / "ffmpeg"  # an encoder that refuses to start, as a broken install does
    ffmpeg.write_text("#!/bin/sh\necho \"ffmpeg: Unknown encoder 'libx264'\" >&2\nexit 1\n")
    ffmpeg.chmod(0o755)
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(ffmpeg))
    assert replay(tmp_path) != 0
    assert_earlier_videos_kept(earlier_videos)  # today: episode-1 and -2 are removed


def test_a_stop_during_the_replays_videos_keeps_the_earlier_videos(
    tmp_path, earlier_videos, monkeypatch
):
    real_episode, calls = dqn.greedy_episode, []

    def ctrl_c_once_the_first_video_is_whole(env, policy):
        calls.append(env)
        if len(calls) == 2:
            dqn.stop_signal = signal.SIGINT
        return real_episode(env, policy)

    monkeypatch.setattr(dqn, "greedy_episode", ctrl_c_once_the_first_video_is_whole)
    assert replay(tmp_path) == 130
    assert_earlier_videos_kept(earlier_videos)  # today: episode-0.mp4 is the new one


# ---- 4. The console cannot end a run
class BrokenConsole:
    """A stdout whose every write fails: a pipe whose reader has gone, or a full disk."""

    encoding = "utf-8"

    def __init__(self, code: int):
        self.code = code

    def write(self, text=""):
        raise OSError(self.code, os.strerror(self.code))  # EPIPE: a BrokenPipeError

    flush = write

    def isatty(self):
        return False

    def fileno(self):
        raise io.UnsupportedOperation("fileno")


@pytest.mark.parametrize("code", [errno.EPIPE, errno.ENOSPC], ids=["broken-pipe", "full-disk"])
def test_a_console_that_cannot_be_written_does_not_end_the_training(tmp_path, monkeypatch, code):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "stdout", BrokenConsole(code))
    main_without_traceback(["--episode", "5", "--eval-every", "1", *QUICK])
    assert dqn.load_model(tmp_path / "output" / "best_model.pth", 4, 2)
    assert len(read_metrics(tmp_path / "output" / "metrics.csv")) == 5


@pytest.mark.parametrize("redirect", ["| head -1", ">&-"], ids=["piped-to-head", "stdout-closed"])
def test_a_console_that_goes_away_gives_no_traceback_and_the_run_goes_on(tmp_path, redirect):
    command = shlex.join([sys.executable, str(SCRIPT), "--episode", "20", "--eval-every", "1"])
    result = run_command(tmp_path, ["bash", "-c", f"{command} {' '.join(QUICK)} {redirect}"])
    assert "Traceback" not in result.stderr, result.stderr
    assert dqn.load_model(tmp_path / "output" / "best_model.pth", 4, 2)
    assert len(read_metrics(tmp_path / "output" / "metrics.csv")) == 20


# ---- 5. A path that cannot be a folder or a file: one line, exit 2, no traceback
@pytest.mark.parametrize(
    "flag, kind",
    [
        ("--output-dir", "symlink-loop"),
        ("--video-dir", "symlink-loop"),
        ("--output-dir", "name-too-long"),
        ("--video-dir", "name-too-long"),
        ("--play", "name-too-long"),
    ],
)
def test_an_impossible_path_is_refused_in_one_line_naming_the_flag(
    tmp_path, monkeypatch, capsys, flag, kind
):
    monkeypatch.chdir(tmp_path)
    if kind == "symlink-loop":
        (tmp_path / "a").symlink_to("b")
        (tmp_path / "b").symlink_to("a")
        path = "a"
    else:
        path = str(tmp_path / ("x" * 300))  # most file systems allow 255 bytes a name
    assert main_without_traceback(["--episode", "1", *SHORT_VIDEOS, flag, path]) == 2
    line = one_error_line(capsys)
    assert flag in line or flag == "--play", line  # --play's lines name the model's path


# ---- 6. The right words about a model file
def test_play_of_a_device_file_says_it_is_not_a_regular_file(capsys):
    assert dqn.main(["--play", "/dev/null", *QUICK]) == 2
    line = one_error_line(capsys)
    assert "no such file" not in line and "not a regular file" in line, line


def test_a_model_saved_in_pytorchs_older_format_is_played(tmp_path, capsys):
    weights = torch.load(balancing_model(tmp_path / "new.pth"), weights_only=True)
    path = tmp_path / "old.pth"
    with open(path, "wb") as f:
        torch.save(weights, f, _use_new_zipfile_serialization=False)
    argv = ["--play", str(path), "--test-episodes", "1", "--max-test-steps", "50", *QUICK]
    assert dqn.main(argv) == 0, capsys.readouterr().err
    assert "test episode 0 | reward 50" in capsys.readouterr().out


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_model_with_non_finite_weights_is_refused_in_one_line(tmp_path, capsys, value):
    net = dqn.QNetwork(4, 2)
    with torch.no_grad():
        net.fc[2].weight[3, 7] = value
    path = tmp_path / "weights.pth"
    torch.save(net.state_dict(), path)
    argv = ["--play", str(path), "--test-episodes", "1", "--max-test-steps", "10", *QUICK]
    assert dqn.main(argv) == 2  # today: it plays
    line = one_error_line(capsys)
    assert str(path) in line and any(w in line for w in ("non-finite", "NaN", "not finite"))


# ---- 4. Values the flags accept but the libraries or the machine cannot: one line, exit 2
@pytest.mark.parametrize(
    "argv, says",
    [
        (["--seed", str(2**32)], "argument --seed: must be in [0, 4294967295]"),
        (["--replay-buffer-size", str(10**13)], "not enough memory for --replay-buffer-size"),
    ],
)
def test_a_value_the_machine_cannot_take_is_refused_in_one_line(tmp_path, capsys, argv, says):
    assert main_without_traceback([*argv, "--output-dir", str(tmp_path), *QUICK]) == 2
    assert says in one_error_line(capsys)
    assert not (tmp_path / "best_model.pth").exists()
