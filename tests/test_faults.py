"""Faults: bad model files, unwritable folders, missing video libraries, SwanLab errors,
Ctrl-C and a killed process. Each gives one clear line, and nothing the user had is lost."""

import os
import shlex
import signal
import sqlite3
import subprocess
import sys

import pytest
import torch

import dqn_cartpole as dqn
from conftest import (
    REPO,
    SCRIPT,
    balancing_model,
    clean_env,
    default_stop_signals,
    read_metrics,
    read_until,
    run_script,
    start_script,
)

NO_EXTRAS = ["--swanlab-mode", "disabled", "--no-video"]


class RunsCode:
    """Unpickling this calls os.system: what a malicious "pretrained model" would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def good_model(path):
    dqn.DQNAgent(4, 2, dqn.Config()).save_model(path)
    return path


def make_bad_model(kind: str, tmp_path):
    path = tmp_path / f"{kind}.pth"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(os.urandom(4096))
    elif kind == "truncated":
        data = good_model(tmp_path / "good.pth").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "wrong-shape":
        torch.save(dqn.QNetwork(8, 3).state_dict(), path)
    elif kind == "runs-code":
        torch.save({"fc.0.weight": RunsCode(tmp_path / "pwned")}, path)
    return path


@pytest.mark.parametrize(
    "kind, problem",
    [
        ("missing", "no such file"),
        ("empty", "the file is empty"),
        ("random", "not a PyTorch model file"),
        ("truncated", "not a PyTorch model file"),
        ("wrong-shape", "not a CartPole QNetwork: size mismatch for fc.0.weight: copying a param"),
        ("runs-code", "refused: the file asks to run code"),
    ],
)
def test_a_bad_model_file_gives_one_line_naming_the_file_and_the_problem(
    tmp_path, capsys, kind, problem
):
    path = make_bad_model(kind, tmp_path)
    assert dqn.main(["--play", str(path), *NO_EXTRAS]) == 2
    out, err = capsys.readouterr()
    (line,) = err.strip().splitlines()
    assert line.startswith(f"dqn_cartpole.py: error: {path}: ") and problem in line
    assert "test episode" not in out
    assert not (tmp_path / "pwned").exists(), "the file's code ran"


def test_play_given_a_runs_folder_plays_its_best_model(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "output").mkdir()
    balancing_model(tmp_path / "output" / "best_model.pth")
    assert dqn.main(["--play", "output", "--test-episodes", "1", *NO_EXTRAS]) == 0
    assert "test episode 0 | reward" in capsys.readouterr().out  # today: "no such file"


def test_play_given_a_folder_without_a_model_names_the_file_to_give(tmp_path, capsys):
    assert dqn.main(["--play", str(tmp_path), *NO_EXTRAS]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (
        f"dqn_cartpole.py: error: --play {tmp_path}: a folder with no best_model.pth; give a file"
    )


def test_the_code_in_a_crafted_model_file_would_run_without_weights_only(tmp_path):
    # Proves the test above can fail: the same file, loaded unsafely, runs its code.
    path = make_bad_model("runs-code", tmp_path)
    torch.load(path, weights_only=False)
    assert (tmp_path / "pwned").exists()


@pytest.mark.parametrize("flag", ["--output-dir", "--video-dir"])
@pytest.mark.parametrize("where", ["is-a-file", "under-a-file"])
def test_an_unwritable_folder_fails_before_training(tmp_path, capsys, flag, where):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    target = blocker if where == "is-a-file" else blocker / "sub"
    argv = ["--swanlab-mode", "disabled", flag, str(target)]
    if flag == "--output-dir":
        argv += ["--video-dir", str(tmp_path / "videos")]
    assert dqn.main(argv) == 2
    out, err = capsys.readouterr()
    (line,) = err.strip().splitlines()
    assert line.startswith(f"dqn_cartpole.py: error: {flag} {target}: cannot write there")
    assert "episode" not in out


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders")
def test_a_read_only_output_folder_fails_before_training(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert dqn.main(["--output-dir", str(locked / "out"), *NO_EXTRAS]) == 2
    finally:
        locked.chmod(0o700)
    assert "cannot write there" in capsys.readouterr().err


def test_a_missing_video_library_keeps_the_training_results_and_exits_3(tmp_path):
    # A moviepy that cannot be imported, as on a machine where it was never installed.
    fake = tmp_path / "fake"
    (fake / "moviepy").mkdir(parents=True)
    (fake / "moviepy" / "__init__.py").write_text("raise ImportError('no moviepy here')\n")
    result = run_script(
        tmp_path, "--episode", "2", "--swanlab-mode", "disabled", PYTHONPATH=str(fake)
    )
    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: the test video could not be made") and "moviepy" in line
    assert dqn.load_model(tmp_path / "output" / "best_model.pth", 4, 2)
    assert len(read_metrics(tmp_path / "output" / "metrics.csv")) == 2


def test_swanlab_failing_mid_run_costs_one_warning_and_no_metrics(
    tmp_path, no_swanlab_login, monkeypatch, capsys
):
    calls = []

    def flaky_log(self, data, step=None):
        calls.append(step)
        if len(calls) > 3:
            raise ConnectionError("SwanLab went away")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(dqn.swanlab.Run, "log", flaky_log)
    argv = ["--episode", "12", "--eval-every", "2", "--no-video", "--swanlab-mode", "local"]
    assert dqn.main(argv) == 0
    err = capsys.readouterr().err
    assert err.count("SwanLab stopped logging") == 1
    assert len(calls) == 4  # after the failure SwanLab is left alone
    rows = read_metrics(tmp_path / "output" / "metrics.csv")
    assert [int(r["episode"]) for r in rows] == list(range(1, 13))
    assert sum(1 for r in rows if r["eval_avg_reward"]) == 6


def swanlab_run_is_closed(swanlog) -> bool:
    """True once the local SwanLab run is no longer 'running' (status 0) in its database."""
    db = sqlite3.connect(swanlog / "runs.swanlab")
    return db.execute("SELECT status FROM experiment").fetchone()[0] != 0


@pytest.mark.parametrize(
    "signum, name",
    [(signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM"), (signal.SIGHUP, "SIGHUP")],
)
def test_a_stop_signal_keeps_the_model_and_metrics_closes_swanlab_and_exits_128_plus_n(
    tmp_path, signum, name
):
    process = start_script(tmp_path, "--episode", "100000", "--eval-every", "2")
    lines = read_until(process, "episode   20 ")  # some evaluations have happened
    process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    out = "".join(lines) + out
    assert process.returncode == 128 + signum, err
    assert "Traceback" not in err
    assert f"{name}: stopping after this step" in out
    (stopped,) = [line for line in out.splitlines() if line.startswith(f"Stopped by {name}.")]
    assert " To record the videos: " in stopped and stopped.endswith(
        " --play output/best_model.pth"
    )
    assert "swanlab watch" in out
    assert dqn.load_model(tmp_path / "output" / "best_model.pth", 4, 2)
    rows = read_metrics(tmp_path / "output" / "metrics.csv")
    assert len(rows) >= 20 and all(r["train_reward"] for r in rows)
    assert not list((tmp_path / "dqn_videos").glob("rl-video-*"))  # no video was recorded
    assert swanlab_run_is_closed(tmp_path / "swanlog")


def test_a_second_signal_stops_at_once():
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    default_stop_signals()  # as a terminal gives them, even to a suite started with nohup
    try:
        with dqn.stop_signals_handled():
            os.kill(os.getpid(), signal.SIGTERM)
            assert dqn.stop_requested() and dqn.stop_signal == signal.SIGTERM  # the first asks
            with pytest.raises(KeyboardInterrupt) as second:
                os.kill(os.getpid(), signal.SIGHUP)
        assert second.value.args == (signal.SIGHUP,)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # put back as it was
        assert not dqn.stop_requested()
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def test_a_signal_during_the_test_videos_stops_at_once_and_closes_swanlab(tmp_path):
    process = start_script(tmp_path, "--episode", "20")
    read_until(process, "test episode 0 ")
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 143
    assert "test episode 2 " not in out  # it did not wait for the other episodes
    (line,) = err.strip().splitlines()
    assert line.startswith("Stopped by SIGTERM. To record the videos: ")
    assert line.endswith(f"{shlex.quote(str(SCRIPT))} --play output/best_model.pth")
    assert dqn.load_model(tmp_path / "output" / "best_model.pth", 4, 2)
    assert swanlab_run_is_closed(tmp_path / "swanlog")


DIE_WHILE_SAVING = """
import os, signal, sys
sys.path.insert(0, {repo!r})
from pathlib import Path
import dqn_cartpole as dqn
agent = dqn.DQNAgent(4, 2, dqn.Config())
agent.save_model(Path("best_model.pth"))
rows = [dict.fromkeys(dqn.METRIC_COLUMNS, 1)] * 5
dqn.save_atomically({{Path("metrics.csv"): dqn.metrics_csv(rows)}})

def half_then_die(f):  # the worst moment: half of the new bytes written, then SIGKILL
    f.write(b"x" * 1000)
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)

dqn.save_atomically({{Path({name!r}): half_then_die}})
"""


@pytest.mark.parametrize("name", ["best_model.pth", "metrics.csv"])
def test_a_process_killed_in_the_middle_of_a_save_leaves_the_previous_file(tmp_path, name):
    process = subprocess.run(
        [sys.executable, "-c", DIE_WHILE_SAVING.format(repo=str(REPO), name=name)],
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
    )
    assert process.returncode == -signal.SIGKILL, process.stderr
    assert dqn.load_model(tmp_path / "best_model.pth", 4, 2)
    assert len(read_metrics(tmp_path / "metrics.csv")) == 5


def test_a_run_killed_while_saving_often_leaves_loadable_files(tmp_path):
    argv = ["--episode", "100000", "--eval-every", "1", "--eval-episodes", "1"]
    process = subprocess.Popen(
        [sys.executable, str(REPO / "dqn_cartpole.py"), *argv, *NO_EXTRAS],
        cwd=tmp_path,
        env=clean_env(tmp_path),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    for line in process.stdout:
        if line.startswith("episode   40 "):
            break
    process.kill()
    process.wait()
    assert dqn.load_model(tmp_path / "output" / "best_model.pth", 4, 2)
    rows = read_metrics(tmp_path / "output" / "metrics.csv")
    assert len(rows) >= 39 and all(r["best_avg_reward"] for r in rows)


def test_a_full_disk_while_saving_keeps_the_previous_file_and_removes_the_temporary(tmp_path):
    target = good_model(tmp_path / "best_model.pth")
    before = target.read_bytes()
    tmp = tmp_path / ".best_model.pth.tmp"
    tmp.symlink_to("/dev/full")  # every write to /dev/full fails with ENOSPC, as a full disk
    with pytest.raises(dqn.WriteError) as error:
        dqn.save_atomically({target: dqn.DQNAgent(4, 2, dqn.Config()).save_model})
    assert str(error.value) == f"cannot write {target}: No space left on device"
    assert target.read_bytes() == before
    assert not tmp.exists() and not tmp.is_symlink()


@pytest.mark.parametrize("name", ["best_model.pth", "best_model.json", "metrics.csv"])
def test_a_full_disk_during_training_gives_one_line_exit_4_and_loses_nothing(tmp_path, name):
    output = tmp_path / "output"
    output.mkdir()
    previous = good_model(output / "best_model.pth").read_bytes()  # the user's earlier model
    (output / f".{name}.tmp").symlink_to("/dev/full")
    result = run_script(tmp_path, "--episode", "3", "--eval-every", "1", "--no-video")
    assert result.returncode == 4, result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [
        f"dqn_cartpole.py: error: cannot write output/{name}: No space left on device"
    ]
    assert not (output / f".{name}.tmp").is_symlink()
    if name == "best_model.pth":
        assert (output / name).read_bytes() == previous
    else:  # the model was saved whole before the failing file
        assert dqn.load_model(output / "best_model.pth", 4, 2)
    assert swanlab_run_is_closed(tmp_path / "swanlog")


HOLD_FOLDER = """
import sys, time
sys.path.insert(0, {repo!r})
from pathlib import Path
import dqn_cartpole as dqn
dqn.claim_folder(Path({folder!r}), "--output-dir")
print("holding", flush=True)
time.sleep(120)
"""


def hold(cwd, folder: str) -> subprocess.Popen:
    """Another process that holds `folder` as a running training run would."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD_FOLDER.format(repo=str(REPO), folder=folder)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline() == "holding\n"
    return process


@pytest.mark.parametrize("flag, folder", [("--output-dir", "output"), ("--video-dir", "videos")])
def test_a_folder_in_use_by_another_run_is_refused_before_any_work(tmp_path, flag, folder):
    other = hold(tmp_path, folder)
    try:
        args = ["--episode", "2", "--swanlab-mode", "disabled", "--video-dir", "videos"]
        result = run_script(tmp_path, *args)
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            f"dqn_cartpole.py: error: {flag} {folder}: in use by another run (pid {other.pid}); "
            f"let it finish, or give this run another {flag}"
        ]
        assert not (tmp_path / "output" / "metrics.csv").exists()
        assert other.poll() is None  # the first run goes on undisturbed
    finally:
        other.kill()
        other.wait()
    # A killed run leaves no lock behind: the next run may use the folder.
    assert run_script(tmp_path, *args, "--no-video").returncode == 0


def test_play_refuses_a_video_folder_in_use(tmp_path):
    model = good_model(tmp_path / "model.pth")
    other = hold(tmp_path, "dqn_videos")
    try:
        result = run_script(tmp_path, "--play", str(model), "--swanlab-mode", "disabled")
    finally:
        other.kill()
        other.wait()
    assert result.returncode == 2
    assert f"--video-dir dqn_videos: in use by another run (pid {other.pid})" in result.stderr


def test_one_folder_for_both_the_model_and_the_videos_is_not_a_conflict(tmp_path):
    args = ["--episode", "1", "--test-episodes", "1", "--max-test-steps", "10"]
    result = run_script(tmp_path, *args, "--output-dir", "out", "--video-dir", "out")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "rl-video-episode-0.mp4").exists()


def test_a_swanlog_that_cannot_be_written_costs_the_dashboard_not_the_training(tmp_path):
    (tmp_path / "swanlog").write_text("a file where SwanLab wants its folder")
    result = run_script(tmp_path, "--episode", "3", "--eval-every", "1", "--no-video")
    assert result.returncode == 0, result.stderr
    (warning,) = result.stderr.strip().splitlines()
    assert warning.startswith("warning: SwanLab could not start (") and "swanlog" in warning
    assert warning.endswith("no dashboard, metrics.csv has every value.")
    assert len(read_metrics(tmp_path / "output" / "metrics.csv")) == 3


def test_a_home_folder_that_cannot_be_written_costs_nothing(tmp_path):
    home = tmp_path / "home"
    home.write_text("not a folder: nothing can be written under it")
    result = run_script(tmp_path, "--episode", "2", "--no-video", HOME=str(home))
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and "swanlab watch" in result.stdout


def test_a_stop_before_the_first_evaluation_promises_no_model(tmp_path, capsys, monkeypatch):
    config = dqn.Config(output_dir=str(tmp_path / "output"))
    monkeypatch.setattr(dqn, "stop_signal", signal.SIGTERM)
    assert dqn.report(config, dqn.RunLog(config, started=0.0)) == 143
    out = capsys.readouterr().out
    assert "No evaluation yet, so no model was saved." in out
    assert "-inf" not in out and "--play" not in out and "Metrics:" not in out
    assert "Stopped by SIGTERM." in out


def test_a_policy_image_that_fails_costs_one_warning_not_the_training(
    tmp_path, no_swanlab_login, monkeypatch, capsys
):
    def broken_image(q_net):
        raise ValueError("no font here")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(dqn, "policy_image", broken_image)
    argv = ["--episode", "6", "--eval-every", "2", "--no-video", "--swanlab-mode", "local"]
    assert dqn.main(argv) == 0
    (warning,) = capsys.readouterr().err.strip().splitlines()
    assert warning.startswith("warning: SwanLab stopped logging (") and "no font here" in warning
    assert len(read_metrics(tmp_path / "output" / "metrics.csv")) == 6


def test_rows_after_the_last_evaluation_are_kept_when_a_write_fails(tmp_path, monkeypatch, capsys):
    scores = iter([10.0, 20.0])
    monkeypatch.setattr(dqn.DQNAgent, "evaluate", lambda self, env, episodes: next(scores))
    real_save = dqn.save_atomically
    saves = []

    def disk_full_at_the_second_model(files):
        saves.extend(path.name for path in files)
        if "best_model.pth" in {path.name for path in files} and saves.count("best_model.pth") == 2:
            raise dqn.WriteError("cannot write best_model.pth: No space left on device")
        real_save(files)

    monkeypatch.setattr(dqn, "save_atomically", disk_full_at_the_second_model)
    argv = ["--episode", "20", "--eval-every", "5", "--output-dir", str(tmp_path)]
    assert dqn.main([*argv, "--no-video", "--swanlab-mode", "disabled"]) == 4
    # Episodes 1-5 were saved at the first evaluation; 6-10 were trained after it, the failing
    # save came at episode 10's evaluation.
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [int(r["episode"]) for r in rows] == list(range(1, 11))


def test_a_stop_in_the_middle_of_a_save_leaves_no_temporary_file(tmp_path):
    target = good_model(tmp_path / "best_model.pth")
    before = target.read_bytes()

    def interrupted(f):  # a second Ctrl-C while the bytes are being written
        f.write(b"x" * 100)
        raise KeyboardInterrupt(signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        dqn.save_atomically({target: interrupted})
    assert target.read_bytes() == before
    assert not (tmp_path / ".best_model.pth.tmp").exists()


def test_swanlab_refusing_its_own_variables_costs_one_warning_not_the_training(tmp_path):
    result = run_script(tmp_path, "--episode", "2", "--no-video", SWANLAB_MODE="bogus")
    assert result.returncode == 0, result.stderr
    (warning,) = result.stderr.strip().splitlines()
    assert warning.startswith("warning: SwanLab could not start (")
    assert len(read_metrics(tmp_path / "output" / "metrics.csv")) == 2


def test_a_damaged_model_in_pytorchs_older_format_is_damaged_not_dangerous(tmp_path, capsys):
    path = tmp_path / "old.pth"
    torch.save(dqn.QNetwork(4, 2).state_dict(), path, _use_new_zipfile_serialization=False)
    path.write_bytes(path.read_bytes()[:200])  # cut short inside the pickle
    assert dqn.main(["--play", str(path), *NO_EXTRAS]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "not a PyTorch model file, or a damaged copy" in line, line
