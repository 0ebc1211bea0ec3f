"""The learner's own machine, imitated here: Windows (a coarse clock, a code page without ε,
text files that end lines with CRLF, no fcntl, no SIGHUP), a lab server under nohup, paths
with spaces and Chinese characters, and a network that goes out through a proxy."""

import shlex
import signal
import socket
import sys
import threading
import time

import pytest

import dqn_cartpole as dqn
from conftest import (
    REPO,
    balancing_model,
    read_metrics,
    read_until,
    run_command,
    run_script,
    start_script,
)

NO_EXTRAS = ["--no-video", "--swanlab-mode", "disabled"]

# Each imitation runs in the script's process before dqn_cartpole is imported.
IMITATIONS = {
    # Windows before Python 3.13: time.time() and time.monotonic() advance in 1/64 s steps.
    "coarse clock": """
import math, time
for name in ("time", "monotonic"):
    setattr(time, name, lambda real=getattr(time, name): math.floor(real() * 64) / 64)
""",
    "no fcntl": "import sys; sys.modules['fcntl'] = None  # import fcntl fails\n",
    "no SIGHUP": "import signal; del signal.SIGHUP\n",
    # Windows' text mode: a "\n" written to a file opened without newline="" becomes "\r\n".
    "windows text files": """
import builtins
real_open = builtins.open
def windows_open(file, mode="r", buffering=-1, encoding=None, errors=None, newline=None, *a):
    if "b" not in mode and newline is None and any(c in mode for c in "wax+"):
        newline = "\\r\\n"
    return real_open(file, mode, buffering, encoding, errors, newline, *a)
builtins.open = windows_open
""",
}


def run_imitating(cwd, imitations: list[str], *args: str, **env: str):
    """The script's main(args), in a process that imitates another machine."""
    code = "".join(IMITATIONS[name] for name in imitations)
    code += f"import sys; sys.path.insert(0, {str(REPO)!r}); import dqn_cartpole\n"
    code += "sys.exit(dqn_cartpole.main(sys.argv[1:]))\n"
    return run_command(cwd, [sys.executable, "-c", code, *args], **env)


def test_a_clock_that_advances_in_steps_of_15_ms_does_not_stop_the_run(tmp_path):
    # The first episodes take well under 15.6 ms: on Windows, time.time() has not moved yet.
    args = ["--episode", "12", "--eval-every", "4", *NO_EXTRAS]
    result = run_imitating(tmp_path, ["coarse clock"], *args)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert len(read_metrics(tmp_path / "output" / "metrics.csv")) == 12


def test_a_console_whose_code_page_lacks_epsilon_prints_a_replacement(tmp_path):
    # Output redirected to a file on a Western-European Windows: code page 1252, no "ε".
    result = run_script(tmp_path, "--episode", "10", *NO_EXTRAS, PYTHONIOENCODING="cp1252")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("episode ")]
    epsilon = dqn.Config().epsilon_decay ** 9  # the ε episode 10 explored with
    assert f"| ? {epsilon:.3f} |" in line and "| eval " in line  # ε became "?", the rest is there
    assert "Best evaluation:" in result.stdout


def test_metrics_csv_has_one_line_ending_per_row_when_text_files_end_lines_with_crlf(tmp_path):
    args = ["--episode", "4", "--eval-every", "2", *NO_EXTRAS]
    result = run_imitating(tmp_path, ["windows text files"], *args)
    assert result.returncode == 0, result.stderr
    data = (tmp_path / "output" / "metrics.csv").read_bytes()
    assert b"\r\r\n" not in data  # which spreadsheets show as an empty row after each one
    assert data.count(b"\r\n") == 5 and len(read_metrics(tmp_path / "output" / "metrics.csv")) == 4


def test_without_fcntl_and_sighup_as_on_windows_a_run_trains_and_records(tmp_path):
    args = ["--episode", "3", "--eval-every", "1", "--test-episodes", "1"]
    args += ["--max-test-steps", "20", "--swanlab-mode", "disabled"]
    result = run_imitating(tmp_path, ["no fcntl", "no SIGHUP"], *args)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "dqn_videos" / "rl-video-episode-0.mp4").stat().st_size > 0
    assert dqn.load_model(tmp_path / "output" / "best_model.pth", 4, 2)


def ignoring(signum: int):
    """What `nohup` (SIGHUP) or a shell's background job (SIGINT) leaves the process with."""
    return lambda: signal.signal(signum, signal.SIG_IGN)


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGINT])
def test_a_signal_ignored_when_the_script_starts_stays_ignored(tmp_path, signum):
    args = ["--episode", "40", "--eval-every", "10", *NO_EXTRAS]
    process = start_script(tmp_path, *args, preexec_fn=ignoring(signum))
    read_until(process, "episode   10 ")
    process.send_signal(signum)  # the SSH session ends, or Ctrl-C in the terminal it left
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "stopping" not in out + err
    assert len(read_metrics(tmp_path / "output" / "metrics.csv")) == 40


def test_a_stop_during_a_test_video_keeps_the_whole_earlier_video(tmp_path):
    model = balancing_model(tmp_path / "model.pth")
    videos = tmp_path / "dqn_videos"
    videos.mkdir()
    earlier = {
        videos / f"rl-video-episode-{i}.mp4": f"earlier video {i}".encode() for i in range(3)
    }
    for path, data in earlier.items():
        path.write_bytes(data)
    process = start_script(tmp_path, "--play", str(model), "--swanlab-mode", "disabled")
    read_until(process, "Replacing the videos in")
    time.sleep(1.0)  # a balancing model's first episode takes 1501 frames: ~3 s
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert {path: path.read_bytes() for path in earlier} == earlier
    assert not list(videos.glob(".*.tmp.mp4"))


def test_printed_commands_work_when_pasted_into_a_shell_on_a_path_with_spaces(tmp_path):
    cwd = tmp_path / "课程 DQN"
    cwd.mkdir()
    args = ["--episode", "100000", "--eval-every", "2", "--output-dir", "我的 输出"]
    process = start_script(cwd, *args, "--no-video")
    read_until(process, "episode   10 ")
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    hint = next(line for line in out.splitlines() if line.startswith("Stopped by SIGTERM."))
    command = hint.split("To record the videos: ", 1)[1]
    extra = " --test-episodes 1 --max-test-steps 5 --no-video --swanlab-mode disabled"
    pasted = run_command(cwd, ["bash", "-c", command + extra], timeout=60)
    assert pasted.returncode == 0, command + "\n" + pasted.stderr
    assert "test episode 0 | reward" in pasted.stdout
    dashboard = next(line for line in out.splitlines() if line.startswith("Dashboard: "))
    *program, folder = shlex.split(dashboard.removeprefix("Dashboard: "))
    assert program[-2:] == ["swanlab", "watch"] and folder == str(cwd / "swanlog")


def test_commands_for_windows_are_quoted_as_cmd_and_powershell_read_them(monkeypatch):
    with monkeypatch.context() as windows:  # undone before pytest, which reads os.name, reports
        windows.setattr(dqn.os, "name", "nt")
        line = dqn.shell_command(["swanlab", "watch", r"C:\Users\李 雷\swanlog"])
    assert line == r'swanlab watch "C:\Users\李 雷\swanlog"'


class RecordingProxy:
    """An HTTP proxy on 127.0.0.1 that records the first line of each request it gets and
    answers 403, or, if `silent`, accepts connections and never answers."""

    def __init__(self, silent: bool = False):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.requests, self.silent, self.held = [], silent, []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.held.append(connection)
            if self.silent:
                continue
            with connection:
                self.requests.append(connection.recv(65536).split(b"\r\n", 1)[0].decode())
                connection.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")

    def environment(self) -> dict[str, str]:
        names = ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"]
        return {name: self.url for name in names + [n.lower() for n in names]} | {
            "NO_PROXY": "",
            "no_proxy": "",
        }

    def close(self) -> None:
        self.server.close()
        for connection in self.held:
            connection.close()


def test_the_cloud_check_goes_through_the_proxy_as_swanlabs_own_requests_do(tmp_path):
    proxy = RecordingProxy()
    try:
        result = run_script(
            tmp_path,
            *["--episode", "1", "--test-episodes", "0", "--no-video"],
            SWANLAB_API_KEY="k" * 21,
            SWANLAB_API_HOST="http://swanlab.invalid",  # a name that no DNS resolves
            **proxy.environment(),
        )
    finally:
        proxy.close()
    assert result.returncode == 0, result.stderr
    assert any("swanlab.invalid" in line for line in proxy.requests), proxy.requests
    assert "logging locally instead" in result.stderr
    assert "Dashboard: " in result.stdout


def test_a_proxy_that_never_answers_costs_a_few_seconds_then_a_local_run(tmp_path):
    proxy = RecordingProxy(silent=True)
    try:
        started = time.monotonic()
        result = run_script(
            tmp_path,
            *["--episode", "1", "--test-episodes", "0", "--no-video"],
            SWANLAB_API_KEY="k" * 21,
            SWANLAB_API_HOST="http://swanlab.invalid",
            **proxy.environment(),
        )
        elapsed = time.monotonic() - started
    finally:
        proxy.close()
    assert result.returncode == 0, result.stderr
    (warning,) = [line for line in result.stderr.splitlines() if "SwanLab" in line]
    assert "logging locally instead" in warning
    assert elapsed < 30, f"{elapsed:.0f} s: SwanLab's own retries would take minutes"
