"""The test videos: streamed to the encoder frame by frame, the GIF made in passing, each file
written whole or not at all, and a full disk said in one line."""

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from PIL import Image

import dqn_cartpole as dqn
from conftest import run_script


def recorder(folder, steps: int) -> dqn.StreamingRecordVideo:
    env = dqn.make_env(0, render_mode="rgb_array", max_episode_steps=steps)
    return dqn.StreamingRecordVideo(env, str(folder), dqn.RunLog(dqn.Config(), started=0.0))


def test_frames_go_to_the_encoder_as_they_are_drawn_not_into_memory(tmp_path, monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    env = recorder(tmp_path, steps=60)
    held, steps = [], 0
    with env:
        env.reset()
        terminated = truncated = False
        while not (terminated or truncated):
            _, _, terminated, truncated, _ = env.step(steps % 2)
            held.append(sum(frame is not None for frame in env.recorded_frames))
            steps += 1
    assert steps > 5 and max(held) == 0  # each frame left for ffmpeg as soon as it was drawn
    video = tmp_path / "rl-video-episode-0.mp4"
    frames, seconds = imageio_ffmpeg.count_frames_and_secs(str(video))
    assert frames == steps + 1 and seconds == pytest.approx((steps + 1) / 50, abs=0.03)
    assert not list(tmp_path.glob(".*.tmp.mp4"))


def test_the_video_shows_each_frame_as_drawn_in_its_own_colours(tmp_path, monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    env, drawn = recorder(tmp_path, steps=5), dqn.make_env(0, render_mode="rgb_array")
    with env:
        dqn.greedy_episode(env, lambda state: 0)
    drawn.reset()  # seeded alike: the recorded episode's first state
    expected = drawn.render()
    frames = imageio_ffmpeg.read_frames(str(tmp_path / "rl-video-episode-0.mp4"))
    size = next(frames)["size"]
    first = np.frombuffer(next(frames), np.uint8).reshape(size[1], size[0], 3)
    assert first.shape == expected.shape
    pole = (expected == (202, 152, 101)).all(axis=2)  # the pole's brown, not its blue mirror
    assert pole.sum() > 500
    assert np.abs(first[pole].mean(axis=0) - (202, 152, 101)).max() < 12
    assert np.abs(first.astype(int) - expected).mean() < 1  # H.264 is lossy: a little


def test_the_gif_keeps_every_third_frame_of_the_first_ten_seconds_of_the_first_video(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    env = recorder(tmp_path, steps=600)
    torch.manual_seed(0)
    policy = dqn.Faster.greedy(dqn.QNetwork(4, 2))
    with env:
        dqn.greedy_episode(env, policy)
        first = len(env.gif_frames)
        dqn.greedy_episode(env, policy)  # the second video adds nothing to the GIF
    assert 1 <= first == len(env.gif_frames) <= 10 * 50 // 3 + 1
    gif = tmp_path / "test.gif"
    dqn.save_gif(env.gif_frames, gif, 60)
    with Image.open(gif) as image:
        assert image.size == (240, 160)
        durations = []  # Pillow merges repeated frames into one longer frame
        for index in range(image.n_frames):
            image.seek(index)
            durations.append(image.info["duration"])
    assert sum(durations) == 60 * first  # 3 video frames of 20 ms each: it plays in real time


def test_a_full_disk_while_recording_exits_4_and_keeps_the_previous_video(tmp_path):
    videos = tmp_path / "dqn_videos"
    videos.mkdir()
    previous = videos / "rl-video-episode-0.mp4"
    previous.write_bytes(b"the user's earlier video")
    later = videos / "rl-video-episode-1.mp4"  # from an earlier, longer run: a failed run keeps it
    later.write_bytes(b"an earlier run's second video")
    (videos / ".rl-video-episode-0.tmp.mp4").symlink_to("/dev/full")
    args = ["--episode", "2", "--test-episodes", "1", "--max-test-steps", "200"]
    result = run_script(tmp_path, *args, "--swanlab-mode", "disabled")
    assert result.returncode == 4, result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [
        "dqn_cartpole.py: error: cannot write dqn_videos/rl-video-episode-0.mp4: "
        "No space left on device"
    ]
    assert previous.read_bytes() == b"the user's earlier video"
    assert later.exists() and not (videos / "rl-video-episode-0.gif").exists()
    assert not (videos / ".rl-video-episode-0.tmp.mp4").is_symlink()
    assert dqn.load_model(tmp_path / "output" / "best_model.pth", 4, 2)  # training is kept


def test_a_shorter_replay_removes_the_videos_of_a_longer_earlier_one(tmp_path):
    args = ["--episode", "2", "--max-test-steps", "20", "--swanlab-mode", "disabled"]
    assert run_script(tmp_path, *args, "--test-episodes", "3").returncode == 0
    model = str(tmp_path / "output" / "best_model.pth")
    result = run_script(tmp_path, "--play", model, *args[2:], "--test-episodes", "1")
    assert result.returncode == 0, result.stderr
    assert "Replacing the videos in dqn_videos/" in result.stdout
    names = sorted(p.name for p in (tmp_path / "dqn_videos").glob("rl-video-*"))
    assert names == ["rl-video-episode-0.gif", "rl-video-episode-0.mp4"]


def test_the_fast_drawing_gives_exactly_the_frames_gymnasium_renders(monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    env = dqn.make_env(3, render_mode="rgb_array")
    env.reset()
    # An episode's frames, then carts at and beyond the screen's edges (shapes that pygame clips)
    # with poles at every angle, each drawn over the one before it.
    states = [np.array([x, 0, angle, 0]) for x in (-2.7, -2.41, 0.03, 2.38, 2.55) for angle in
              np.linspace(-np.pi, np.pi, 29)]  # fmt: skip
    for step in range(40 + len(states)):
        if step >= 40:
            env.unwrapped.state = states[step - 40]
        expected = env.render()
        frame, size = dqn.draw_cartpole(env.unwrapped)
        assert size == (expected.shape[1], expected.shape[0])
        rgb = bytes(frame)
        assert rgb == expected.tobytes(), f"frame {step} differs"
        if step < 40 and env.step(step % 3 == 0)[2]:  # frames of a moving cart and a falling pole
            env.reset()


def test_a_users_own_file_beside_the_videos_is_left_alone(tmp_path):
    videos = tmp_path / "dqn_videos"
    videos.mkdir()
    mine = videos / "rl-video-episode-0-copy.mp4"  # a name the sweep of old videos must not read
    mine.write_bytes(b"a copy the learner made")
    args = ["--episode", "1", "--test-episodes", "1", "--max-test-steps", "10"]
    result = run_script(tmp_path, *args, "--swanlab-mode", "disabled")
    assert result.returncode == 0, result.stderr
    assert mine.read_bytes() == b"a copy the learner made"
    assert (videos / "rl-video-episode-0.mp4").stat().st_size > 0


def test_a_video_that_cannot_be_renamed_into_place_exits_4_not_3(tmp_path):
    videos = tmp_path / "dqn_videos"
    (videos / "rl-video-episode-0.mp4").mkdir(parents=True)  # a folder where the video goes
    args = ["--episode", "1", "--test-episodes", "1", "--max-test-steps", "10"]
    result = run_script(tmp_path, *args, "--swanlab-mode", "disabled")
    assert result.returncode == 4, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("dqn_cartpole.py: error: cannot write dqn_videos/rl-video-episode-0.mp4")
    assert not list(videos.glob(".*.tmp.mp4"))
