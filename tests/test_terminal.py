"""The screen a new user sees at the end of a run, in a real terminal of 80 columns: tmux runs
the script as a terminal would and then gives back what its screen shows."""

import re
import shlex
import shutil
import subprocess
import sys
import time

import pytest

from conftest import SCRIPT, clean_env

pytestmark = pytest.mark.skipif(
    shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)"
)


def screen_at_the_end(cwd, *args: str, columns: int = 80) -> list[str]:
    """Run the script in a tmux window `columns` wide; its screen once the script has ended,
    each line as the terminal shows it, a line wrapped at the edge joined again."""
    socket, done = f"dqn-test-{time.monotonic_ns()}", cwd / "exit-code"
    command = shlex.join([sys.executable, str(SCRIPT), *args])
    tmux = ["tmux", "-L", socket, "-f", "/dev/null"]
    start = [*tmux, "new-session", "-d", "-x", str(columns), "-y", "60"]
    script = f"cd {shlex.quote(str(cwd))} && {command}; echo $? > exit-code; sleep 600"
    env = clean_env(cwd)
    subprocess.run([*start, script], env=env, check=True, timeout=30)
    try:
        deadline = time.monotonic() + 120
        while not done.exists():
            assert time.monotonic() < deadline, "the run did not end in 120 s"
            time.sleep(0.2)
        time.sleep(0.3)  # the terminal draws the last bytes
        assert done.read_text().strip() == "0"
        shown = subprocess.run(
            [*tmux, "capture-pane", "-p", "-J", "-S", "-200"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
    finally:
        subprocess.run([*tmux, "kill-server"], env=env, timeout=30)
    return shown.stdout.rstrip("\n").splitlines()


def test_the_end_of_a_run_in_an_80_column_terminal_is_clean(tmp_path):
    videos = tmp_path / "dqn_videos"
    videos.mkdir()
    (videos / "rl-video-episode-0.mp4").write_bytes(b"an earlier run's")  # to be replaced
    args = ["--episode", "12", "--test-episodes", "2", "--max-test-steps", "50"]
    lines = screen_at_the_end(tmp_path, *args)
    text = "\n".join(lines)
    # The bar, drawn once at the end of training, is closed before the test episodes; each
    # line after it starts a line of its own (today: "... steps/stest episode 0 | reward").
    bars = [i for i, line in enumerate(lines) if line.startswith("episode 12/12 ")]
    assert len(bars) == 1, text
    after = lines[bars[0] + 1 :]
    assert after[0] == "Replacing the videos in dqn_videos/", text
    for n, line in enumerate(after[1:3]):
        assert re.fullmatch(rf"test episode {n} \| reward \d+", line), text
    assert not any("episode 12/12" in line for line in after), text  # not drawn again
    # At 80 columns the bar still shows the last evaluation and the best.
    assert re.search(r"eval +[\d.]+ \| best +[\d.]+", lines[bars[0]]), lines[bars[0]]
    # The dashboard, said once, in our words, with what to do once it opens.
    assert text.count("swanlab watch") == 1, text
    assert not any(line.startswith("swanlab:") for line in lines), text
    (dashboard,) = [i for i, line in enumerate(lines) if line.startswith("Dashboard: ")]
    assert "click DQN-CartPole-v1" in lines[dashboard + 1], text
