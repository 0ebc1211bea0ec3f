"""The environment a learner brings: libraries older or newer than the script was run with, an
older PyTorch's missing features, SwanLab without its dashboard, SwanLab's own signal handler."""

import signal
import sys

import pytest
import torch
from test_agent import assert_fused_adam_moves_the_weights_as

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


# The versions just below each range, as the README's table names them, and pip's own reading
# of versions: a pre-release of a floor is below it, a shorter spelling of it is it.
REFUSED = [("gymnasium", "0.29.1"), ("swanlab", "0.8.1"), ("pillow", "10.0.1"), ("tqdm", "4.34.0")]
REFUSED += [("gymnasium", "1.0.0a1"), ("torch", "2.16.0rc1"), ("torch", "2.16.0.dev20260101")]
REFUSED += [("gymnasium", "1.5.0"), ("numpy", "3.0.0"), ("swanlab", "0.11.0")]
ACCEPTED = [("gymnasium", "1.0"), ("imageio-ffmpeg", "0.2"), ("torch", "2.15.1+cpu")]
ACCEPTED += [("tqdm", "4.35.0.post1"), ("numpy", "2.5.5"), ("pillow", "13.0.0")]


@pytest.mark.parametrize("name, version", REFUSED)
def test_a_version_outside_the_range_is_refused(name, version):
    problems = dqn.version_problems(dqn.installed_versions() | {name: version})
    assert problems[0].startswith(f"{name} {version} is installed; this script needs "), problems


@pytest.mark.parametrize("name, version", ACCEPTED)
def test_a_version_inside_the_range_is_accepted(name, version):
    installed = dqn.installed_versions() | {"torch": "2.13.0"}  # NumPy 2 needs torch 2.3 or newer
    assert dqn.version_problems(installed | {name: version}) == []


def test_the_line_is_the_one_the_troubleshooting_page_shows():
    (line,) = dqn.version_problems(dqn.installed_versions() | {"gymnasium": "0.29.1"})
    for page in ("troubleshooting.md", "troubleshooting.zh-CN.md"):
        assert f"dqn_cartpole.py: error: {line}\n" in (REPO / "docs" / page).read_text()


def test_torch_before_2_3_with_numpy_2_is_refused_with_the_numpy_that_fits():
    installed = dqn.installed_versions() | {"torch": "2.2.2", "numpy": "2.1.3"}
    (problem,) = dqn.version_problems(installed)
    assert problem.startswith("numpy 2.1.3 is installed; torch 2.2.2 needs NumPy 1")
    assert dqn.version_problems(installed | {"numpy": "1.26.4"}) == []


def test_requirements_txt_asks_for_the_ranges_and_extras_the_script_checks():
    from packaging.requirements import Requirement  # pytest's own dependency

    lines = (REPO / "requirements.txt").read_text().splitlines()
    asked = [Requirement(line) for line in lines if line and not line.startswith("#")]
    for name, (low, high) in dqn.SUPPORTED.items():
        mine = [r for r in asked if r.name == name]
        assert mine, f"requirements.txt does not name {name}"
        for requirement in mine:  # a line for one platform may ask for less, never for more
            specs = {s.operator: s.version for s in requirement.specifier}
            assert dqn.Version(specs[">="]) == low, requirement
            assert ("<" in specs) == (high is not None), requirement
            assert high is None or dqn.Version(specs["<"]) <= high, requirement
            assert requirement.extras == set(dqn.EXTRAS.get(name, "[]")[1:-1].split(",")) - {""}


def test_adam_without_fusing_as_before_torch_2_4_moves_the_weights_as_torch_optim_adam_does(
    monkeypatch,
):
    monkeypatch.setattr(dqn.Faster, "FUSED", False)
    assert_fused_adam_moves_the_weights_as(foreach=False)


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
    args = ["--episode", "3", "--eval-every", "1", "--no-video"]
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
    args = ["--episode", "40", "--eval-every", "10", "--no-video", "--swanlab-mode", "local"]
    ignore = lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)  # noqa: E731
    process = start_script(tmp_path, *args, preexec_fn=ignore)
    read_until(process, "episode   10 ")
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "stopping" not in out + err and "KeyboardInterrupt" not in out + err, out + err
    assert len(read_metrics(tmp_path / "output" / "metrics.csv")) == 40


def test_in_a_notebook_the_fix_is_a_pip_magic_that_installs_into_the_kernel(monkeypatch, capsys):
    monkeypatch.setattr(dqn, "in_notebook", lambda: True)
    monkeypatch.setattr(dqn, "installed_versions", lambda: {"gymnasium": "0.29.1"})
    assert dqn.main(["--no-video", "--swanlab-mode", "disabled"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and all(' %pip install "' in line for line in lines), lines
