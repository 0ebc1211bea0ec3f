"""The environment a learner brings: libraries older or newer than the script was run with, an
older PyTorch's missing features, SwanLab without its dashboard, SwanLab's own signal handler."""

import re
import signal
import sys

import pytest
import torch
from torch import nn

import dqn_cartpole as dqn
from conftest import REPO, read_metrics, read_until, run_command, start_script


def run_with_versions(cwd, fake: dict[str, str | None], *args: str, before: str = ""):
    """The script's main(args), in a process where importlib.metadata reports `fake` versions
    (None: not installed), as it would in an environment left over from another course."""
    code = f"""
import importlib.metadata as metadata
real, fake = metadata.version, {fake!r}
def version(name):
    if name not in fake:
        return real(name)
    if fake[name] is None:
        raise metadata.PackageNotFoundError(name)
    return fake[name]
metadata.version = version
{before}
import sys; sys.path.insert(0, {str(REPO)!r}); import dqn_cartpole
sys.exit(dqn_cartpole.main(sys.argv[1:]))
"""
    return run_command(cwd, [sys.executable, "-c", code, *args])


def requirement(name: str) -> str:
    low, high = dqn.SUPPORTED[name]
    return f"{name}{dqn.EXTRAS.get(name, '')}>={low}" + (f",<{high}" if high else "")


def test_each_library_outside_its_range_gets_one_line_with_the_fix_and_nothing_is_written(
    tmp_path,
):
    # The versions of many courses' notebooks, and a moviepy that was never installed.
    fake = {"gymnasium": "0.29.1", "swanlab": "0.5.9", "moviepy": None}
    result = run_with_versions(tmp_path, fake)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3, result.stderr
    for line, (name, found) in zip(lines, fake.items(), strict=True):
        low, high = dqn.SUPPORTED[name]
        has = f"{name} {found} is installed" if found else f"{name} is not installed"
        assert line.startswith(f"dqn_cartpole.py: error: {has}; this script needs {low}"), line
        assert line.endswith(f'pip install "{requirement(name)}"'), line
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "nothing may be written"


def test_every_library_at_its_lowest_supported_version_passes():
    lowest = {name: low for name, (low, _) in dqn.SUPPORTED.items()}
    assert dqn.version_problems(lowest | {"torch": "2.2.2+cpu"}) == []


@pytest.mark.parametrize("name", list(dqn.SUPPORTED))
def test_the_first_unchecked_version_and_the_one_below_the_range_are_refused(name):
    installed = dqn.installed_versions()
    assert dqn.version_problems(installed) == []
    low, high = dqn.SUPPORTED[name]
    below = ".".join(map(str, dqn.version_tuple(low)[:-1] + (dqn.version_tuple(low)[-1] - 1,)))
    for version in [below] + ([high + ".0"] if high else []):
        problems = dqn.version_problems(installed | {name: version})
        assert problems[0].startswith(f"{name} {version} is installed"), problems


def test_torch_before_2_3_with_numpy_2_is_refused_with_the_numpy_that_fits():
    installed = dqn.installed_versions() | {"torch": "2.2.2", "numpy": "2.1.3"}
    (problem,) = dqn.version_problems(installed)
    assert problem.startswith("numpy 2.1.3 is installed; torch 2.2.2 needs NumPy 1")
    assert dqn.version_problems(installed | {"numpy": "1.26.4"}) == []


def test_requirements_txt_asks_for_the_ranges_the_script_checks():
    lines = (REPO / "requirements.txt").read_text().splitlines()
    for name in dqn.SUPPORTED:
        low, high = dqn.SUPPORTED[name]
        asked = [line for line in lines if re.match(rf"{name}(\[[\w-]+\])?[<>=]", line)]
        assert asked, f"requirements.txt does not name {name}"
        for line in asked:  # a line for one platform may ask for less, never for more
            spec = line.split(";")[0]
            assert release(re.search(r">=([\d.]+)", spec)[1]) == release(low), line
            top = re.search(r"<([\d.]+)", spec)
            assert (top is None) == (high is None), line
            if top:
                assert release(top[1]) <= release(high), line


def release(version: str) -> tuple[int, ...]:
    """1.0 and 1.0.0 alike: the release numbers without trailing zeros."""
    numbers = list(dqn.version_tuple(version))
    while numbers and numbers[-1] == 0:
        numbers.pop()
    return tuple(numbers)


def test_adam_without_fusing_as_before_torch_2_4_moves_the_weights_as_torch_optim_adam_does(
    monkeypatch,
):
    monkeypatch.setattr(dqn.FusedAdam, "FUSED", False)
    torch.manual_seed(0)
    ours, reference = dqn.QNetwork(4, 2), dqn.QNetwork(4, 2)
    reference.load_state_dict(ours.state_dict())
    optimizers = [
        (ours, dqn.FusedAdam(ours.parameters(), lr=3e-3)),
        (reference, torch.optim.Adam(reference.parameters(), lr=3e-3, foreach=False)),
    ]
    states, targets = torch.randn(32, 4), torch.randn(32, 2)
    for _ in range(30):
        for net, optimizer in optimizers:
            optimizer.zero_grad()
            nn.functional.mse_loss(net(states), targets).backward()
            optimizer.step()
    for mine, theirs in zip(ours.parameters(), reference.parameters(), strict=True):
        assert torch.equal(mine, theirs)
    assert not torch.equal(ours.fc[0].weight, dqn.QNetwork(4, 2).fc[0].weight)


@pytest.fixture
def torch_before_2_5(monkeypatch):
    """PyTorch as it was before get_unsafe_globals_in_checkpoint (an Intel Mac's 2.2.2)."""
    monkeypatch.delattr(torch.serialization, "get_unsafe_globals_in_checkpoint", raising=False)


def test_before_torch_2_5_a_good_model_still_loads(tmp_path, torch_before_2_5):
    net = dqn.QNetwork(4, 2)
    torch.save(net.state_dict(), tmp_path / "good.pth")
    loaded = dqn.load_model(tmp_path / "good.pth", 4, 2)
    state = torch.randn(3, 4)
    assert torch.equal(loaded(state), net(state))


def test_before_torch_2_5_a_model_file_that_runs_code_is_still_refused(tmp_path, torch_before_2_5):
    from test_faults import make_bad_model

    path = make_bad_model("runs-code", tmp_path)
    with pytest.raises(dqn.InputError, match="refused: the file asks to run code"):
        dqn.load_model(path, 4, 2)
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(dqn.InputError, match="not a PyTorch model file"):
        dqn.load_model(make_bad_model("random", tmp_path), 4, 2)


def test_swanlab_without_its_dashboard_warns_once_and_the_closing_line_says_how_to_install(
    tmp_path,
):
    # The tutorial's own `pip install swanlab`: SwanLab without swanboard.
    hide = "import sys; sys.modules['swanboard'] = None  # import swanboard fails\n"
    args = ["--episodes", "3", "--eval-every", "1", "--no-video"]
    result = run_with_versions(tmp_path, {}, *args, before=hide)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout + result.stderr
    assert out.count("warning:") == 1 and "dashboard is not installed" in out, out
    assert "ERROR" not in out and "Traceback" not in out, out
    closing = [line for line in result.stdout.splitlines() if line.startswith("Dashboard:")]
    assert closing and dqn.DASHBOARD_FIX in closing[-1], result.stdout
    assert "swanlab watch" not in result.stdout, "a command that fails without swanboard"
    assert len(read_metrics(tmp_path / "output" / "metrics.csv")) == 3


def test_a_sigint_ignored_at_start_stays_ignored_with_swanlab_logging_too(tmp_path):
    # SwanLab installs a SIGINT handler of its own when its run starts.
    args = ["--episodes", "40", "--eval-every", "10", "--no-video", "--swanlab-mode", "local"]
    ignore = lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)  # noqa: E731
    process = start_script(tmp_path, *args, preexec_fn=ignore)
    read_until(process, "episode   10 ")
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "stopping" not in out + err and "KeyboardInterrupt" not in out + err, out + err
    assert len(read_metrics(tmp_path / "output" / "metrics.csv")) == 40
