"""--watch: the test episodes in a window, at CartPole's real speed, as on a learner's laptop.
The real window is tested under Xvfb, a virtual screen (`apt-get install xvfb`)."""

import shutil
import signal
import subprocess
import time

import numpy as np
import pytest

import dqn_cartpole as dqn
from conftest import balancing_model, read_until, run_script, start_script

TITLE = "CartPole-v1 · dqn_cartpole.py"


def test_watch_with_no_screen_says_so_in_one_line_before_any_work(tmp_path):
    model = balancing_model(tmp_path / "model.pth")
    result = run_script(tmp_path, "--play", str(model), "--watch")  # no DISPLAY: as over SSH
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("dqn_cartpole.py: error: --watch: no screen to open a window on")
    assert not (tmp_path / "dqn_videos").exists() and "test episode" not in result.stdout


def test_closing_the_window_ends_the_playback_and_keeps_the_earlier_video(
    tmp_path, monkeypatch, capsys
):
    # SDL's "dummy" screen takes the window; the close comes as pygame's QUIT event.
    import pygame

    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setenv("DISPLAY", ":0")  # a screen, as far as the script can tell
    monkeypatch.chdir(tmp_path)
    earlier = tmp_path / "dqn_videos" / "rl-video-episode-0.mp4"
    earlier.parent.mkdir()
    earlier.write_bytes(b"the earlier video")
    frames = []
    show = dqn.Window._render_frame

    def close_after_30_frames(self):
        frames.append(time.perf_counter())
        if len(frames) == 30:
            pygame.event.post(pygame.event.Event(pygame.QUIT))
        show(self)

    monkeypatch.setattr(dqn.Window, "_render_frame", close_after_30_frames)
    model = balancing_model(tmp_path / "model.pth")
    assert dqn.main(["--play", str(model), "--watch", "--swanlab-mode", "disabled"]) == 0
    out = capsys.readouterr().out
    assert "The window was closed: no more test episodes." in out
    assert "test episode 0" not in out and len(frames) == 30
    assert earlier.read_bytes() == b"the earlier video"  # the cut-short video replaced nothing
    assert frames[-1] - frames[0] > 29 / 50 * 0.9  # shown at 50 frames a second


@pytest.fixture
def screen():
    """A virtual X screen of 800 × 600, and an X client of it (python-xlib)."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb): the real window is untested")
    from Xlib import display

    server = subprocess.Popen(
        ["Xvfb", "-displayfd", "1", "-screen", "0", "800x600x24", "-nolisten", "tcp"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        name = ":" + server.stdout.readline().strip()
        client = display.Display(name)
        yield name, client
        client.close()
    finally:
        server.terminate()
        server.wait(timeout=10)


def wait_for_window(client, process, timeout: float = 30):
    from Xlib.error import XError

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for window in client.screen().root.query_tree().children:
            try:  # a window may go between the listing and the look (SDL makes short-lived ones)
                name = window.get_full_property(client.intern_atom("_NET_WM_NAME"), 0)
                shown = name and name.value.decode() == TITLE and window.get_attributes().map_state
            except XError:
                continue
            if shown:
                return window
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise AssertionError("no window appeared")


def pixels(window) -> np.ndarray:
    geometry = window.get_geometry()
    image = window.get_image(0, 0, geometry.width, geometry.height, 2, 0xFFFFFFFF)  # ZPixmap
    bgrx = np.frombuffer(image.data, np.uint8).reshape(geometry.height, geometry.width, 4)
    return bgrx[:, :, 2::-1]  # RGB


def ask_to_close(client, window) -> None:
    """What a window manager sends when the close button is clicked: WM_DELETE_WINDOW."""
    from Xlib import X
    from Xlib.protocol import event

    protocols, delete = client.intern_atom("WM_PROTOCOLS"), client.intern_atom("WM_DELETE_WINDOW")
    message = event.ClientMessage(
        window=window, client_type=protocols, data=(32, [delete, X.CurrentTime, 0, 0, 0])
    )
    window.send_event(message, event_mask=X.NoEventMask)
    client.flush()


def test_watch_shows_cartpole_in_a_window_in_real_time_and_records_it_too(tmp_path, screen):
    name, client = screen
    model = balancing_model(tmp_path / "model.pth")
    args = ["--play", str(model), "--watch", "--test-episodes", "1", "--max-test-steps", "150"]
    process = start_script(tmp_path, *args, "--swanlab-mode", "disabled", DISPLAY=name)
    window = wait_for_window(client, process)
    appeared = time.monotonic()
    time.sleep(1)
    shown = pixels(window)
    read_until(process, "test episode 0 | reward 150")
    playing = time.monotonic() - appeared
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert shown.shape == (400, 600, 3)
    colours = {tuple(c) for c in shown.reshape(-1, 3)}
    assert {(255, 255, 255), (0, 0, 0), (202, 152, 101)} <= colours  # sky, cart, pole
    assert playing > 150 / 50 * 0.9, f"151 frames in {playing:.1f} s: faster than 50 per second"
    assert (tmp_path / "dqn_videos" / "rl-video-episode-0.mp4").stat().st_size > 1000


@pytest.mark.parametrize("how", ["close button", "killed", "Ctrl-C"])
def test_closing_the_window_or_ctrl_c_ends_the_playback_cleanly(tmp_path, screen, how):
    name, client = screen
    model = balancing_model(tmp_path / "model.pth")
    process = start_script(tmp_path, "--play", str(model), "--watch", DISPLAY=name)
    window = wait_for_window(client, process)
    time.sleep(1)
    if how == "close button":
        ask_to_close(client, window)
    elif how == "killed":  # as xkill does: the X server cuts the window's connection
        window.kill_client()
        client.flush()
    else:
        process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert "Traceback" not in err
    assert "test episode 0" not in out  # it did not play on to the end of the episode
    assert not list((tmp_path / "dqn_videos").glob("*.mp4"))  # nor keep a cut-short video
    if how != "Ctrl-C":
        assert process.returncode == 0, err
        assert "The window was closed: no more test episodes." in out
        assert "swanlab watch" in out and "Videos:" not in out  # none of this run's kept
    else:
        assert process.returncode == 130
        assert err.strip() == "Stopped by Ctrl-C."


def test_a_window_sdl_cannot_open_gives_one_line_naming_watch_and_keeps_the_model(
    tmp_path, monkeypatch, capsys
):
    import pygame

    def refused(size):  # as SDL_VIDEODRIVER=wayland on an X session, or an 8-bit screen
        raise pygame.error("wayland not available")

    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")  # a screen for SDL; set_mode refuses it
    monkeypatch.setattr(pygame.display, "set_mode", refused)
    monkeypatch.chdir(tmp_path)
    argv = ["--episode", "10", "--watch", "--swanlab-mode", "disabled"]
    assert dqn.main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("dqn_cartpole.py: error: --watch: SDL could not open a window (")
    assert "wayland not available" in line and "without --watch" in line
    assert dqn.load_model(tmp_path / "output" / "best_model.pth", 4, 2)


def test_videos_are_drawn_off_screen_whatever_sdl_videodriver_says(tmp_path, monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "wayland")  # on an X session, or with no screen
    monkeypatch.chdir(tmp_path)
    model = balancing_model(tmp_path / "model.pth")
    argv = ["--play", str(model), "--test-episodes", "1", "--max-test-steps", "20"]
    assert dqn.main([*argv, "--swanlab-mode", "disabled"]) == 0
    assert (tmp_path / "dqn_videos" / "rl-video-episode-0.mp4").stat().st_size > 0


def test_xlibs_handlers_are_set_only_for_an_x11_window(monkeypatch):
    import ctypes

    import pygame

    monkeypatch.setattr(pygame.display, "get_driver", lambda: "wayland")
    monkeypatch.setattr(ctypes, "CDLL", lambda *args: pytest.fail("Xlib loaded for Wayland"))
    window = dqn.Window.__new__(dqn.Window)  # its handlers would read a Wayland display as X's
    window.outlive_a_kill()
    assert not hasattr(window, "handlers")


def test_a_display_nobody_answers_gives_the_watch_line_and_keeps_the_earlier_videos(tmp_path):
    # A DISPLAY left from an SSH session that has ended: SDL draws off-screen (or fails, in an
    # older pygame), and the learner would see no window, or a video error that says reinstall.
    model = balancing_model(tmp_path / "model.pth")
    earlier = tmp_path / "dqn_videos" / "rl-video-episode-0.mp4"
    earlier.parent.mkdir()
    earlier.write_bytes(b"the earlier video")
    result = run_script(tmp_path, "--play", str(model), "--watch", "--swanlab-mode", "disabled",
                        DISPLAY=":97")  # fmt: skip
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert line.startswith("dqn_cartpole.py: error: --watch: SDL could not open a window (")
    assert "Traceback" not in result.stderr and "test episode" not in result.stdout
    assert earlier.read_bytes() == b"the earlier video"


def test_a_new_window_forgets_a_window_killed_in_an_earlier_run(monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")  # a notebook's kernel runs the script again
    monkeypatch.setattr(dqn.Window, "killed", [0x1234])
    window = dqn.Window(dqn.make_env(0, render_mode="rgb_array"))
    assert window.killed == [] == dqn.Window.killed  # else its first frame would end playback
    window.close()
