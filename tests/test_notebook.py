"""In a notebook: a real ipykernel (what Jupyter, JupyterHub and Colab run), driven headless by
nbclient, one cell per way a learner runs the script. One kernel runs them all, in order, as a
learner's notebook would: each run must leave the kernel fit for the next."""

import json
import shutil
import sys

import pytest

from conftest import SCRIPT, clean_env

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

QUICK = ["--episode", "3", "--eval-every", "1", "--test-episodes", "1", "--max-test-steps", "50"]
NO_DASHBOARD = ["--swanlab-mode", "disabled"]


def pasted_file() -> str:
    """The whole script as pasted into a cell, its defaults shortened so that the test is quick."""
    text = SCRIPT.read_text()
    for old, new in [
        ("    episode: int = 600  #", "    episode: int = 3  #"),
        ("    test_episodes: int = 3  #", "    test_episodes: int = 1  #"),
        ("    max_test_steps: int = 1500  #", "    max_test_steps: int = 50  #"),
    ]:
        assert old in text, old
        text = text.replace(old, new)
    return text


def stop_cell(main: str, folder: str) -> str:
    """A run of `main` that the stop button stops once its first model is saved; then the
    command its closing line suggests, run in a cell as the learner would paste it."""
    return f"""
import os, signal, threading, time
from pathlib import Path
from IPython.utils.capture import capture_output

kernels_own = signal.getsignal(signal.SIGINT)

def press_stop():  # what the stop button sends the kernel
    while not Path("{folder}/best_model.pth").exists():
        time.sleep(0.02)
    os.kill(os.getpid(), signal.SIGINT)

threading.Thread(target=press_stop, daemon=True).start()
with capture_output() as said:
    code = {main}(["--episode", "100000", "--eval-every", "1", "--output-dir", "{folder}",
                   "--swanlab-mode", "disabled"])
print(said.stdout + said.stderr)
print("returned", code, "| the kernel's handler back:", signal.getsignal(2) is kernels_own)
hint = next(line for line in said.stdout.splitlines() if line.startswith("Stopped by"))
suggested = hint.split("To record the videos: ")[1]
extra = " --test-episodes 1 --max-test-steps 20 --swanlab-mode disabled --video-dir {folder}"
get_ipython().run_cell(suggested + extra)
"""


def cells() -> dict[str, str]:
    """Each way in, named; run in this order in one kernel."""
    quick, off = repr(QUICK), repr(NO_DASHBOARD)
    play = "--test-episodes 1 --max-test-steps 20 --swanlab-mode disabled"  # dqn_videos/
    return {
        # a learner who pasted the file into a cell has it beside the notebook too
        "pasted": pasted_file() + "\npasted_main = main  # %run below defines its own main\n",
        "run": f"%run {SCRIPT} {' '.join(QUICK)} --output-dir ran",
        "run again": f"%run {SCRIPT} {' '.join(QUICK)} --output-dir ran",
        "main": (
            f"import sys; sys.path.insert(0, {str(SCRIPT.parent)!r})\n"
            f"import dqn_cartpole\nQUICK, NO_DASHBOARD = {quick}, {off}\n"
            "print('returned', dqn_cartpole.main([*QUICK, '--output-dir', 'called']))\n"
            "print('returned', dqn_cartpole.main([*QUICK, '--output-dir', 'called']))"
        ),
        "suggested play": f"!{sys.executable} {SCRIPT} --play called/best_model.pth {play}",
        "stop": stop_cell("dqn_cartpole.main", "stopped"),
        "stop pasted": stop_cell("pasted_main", "stopped-pasted"),
        "bad flag": "print('returned', dqn_cartpole.main(['--episodes', '0']))",
        "pasted help": "print('returned', pasted_main(['--help']))",
    }


def kernel_manager(folder):
    """A kernel running this test's Python (CI's fresh virtual environment, say), whatever
    kernels this machine's Jupyter knows of."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    spec = folder / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "language": "python"}))
    specs = KernelSpecManager(kernel_dirs=[str(folder / "kernels")])
    return AsyncKernelManager(kernel_name="python3", kernel_spec_manager=specs)


@pytest.fixture(scope="module")
def notebook(tmp_path_factory):
    """The cells run in one fresh kernel, as "Run all" runs them; errors are kept, not raised.
    Returns the folder it ran in and each cell's outputs, by name."""
    cwd = tmp_path_factory.mktemp("notebook")
    named = cells()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in named.values()])
    client = nbclient.NotebookClient(
        nb,
        km=kernel_manager(tmp_path_factory.mktemp("jupyter")),
        timeout=120,
        allow_errors=True,
        resources={"metadata": {"path": str(cwd)}},
    )
    shutil.copy(SCRIPT, cwd)  # uploaded beside the notebook, as the README's first cell says
    client.execute(env=clean_env(cwd))
    return cwd, {name: cell.outputs for name, cell in zip(named, nb.cells, strict=True)}


def text(outputs) -> str:
    """What the cell printed, and its error's traceback if it raised."""
    said = [o.get("text", "") for o in outputs if o.output_type == "stream"]
    said += [f"{o.ename}: {o.evalue}" for o in outputs if o.output_type == "error"]
    return "".join(said)


def errors(outputs) -> list[str]:
    return [f"{o.ename}: {o.evalue}" for o in outputs if o.output_type == "error"]


def test_the_whole_file_pasted_into_a_cell_trains_with_its_defaults_and_ends_cleanly(notebook):
    cwd, outputs = notebook
    out = outputs["pasted"]
    assert not errors(out), text(out)  # today: SystemExit: 2 (the kernel's -f), or SystemExit: 0
    assert "Best evaluation:" in text(out) and (cwd / "output" / "best_model.pth").is_file()
    assert "unrecognized arguments" not in text(out)


def test_run_magic_takes_its_flags_and_works_twice_in_a_row(notebook):
    cwd, outputs = notebook
    for cell in "run", "run again":
        assert not errors(outputs[cell]), text(outputs[cell])
        assert "Best evaluation:" in text(outputs[cell])
        assert "in use by another run" not in text(outputs[cell])  # today: the second run
    assert len((cwd / "ran" / "metrics.csv").read_text().splitlines()) == 1 + 3


def test_main_runs_again_and_again_and_the_command_it_suggests_is_not_refused(notebook):
    _, outputs = notebook
    assert text(outputs["main"]).count("returned 0") == 2, text(outputs["main"])
    played = text(outputs["suggested play"])
    assert "in use by another run" not in played  # today: the kernel holds dqn_videos/
    assert "test episode 0 | reward" in played, played


@pytest.mark.parametrize("cell, folder", [("stop", "stopped"), ("stop pasted", "stopped-pasted")])
def test_the_stop_button_stops_in_notebook_words_and_its_suggested_command_runs(
    notebook, cell, folder
):
    cwd, outputs = notebook
    out = text(outputs[cell])
    assert not errors(outputs[cell]), out  # pasted, today: NameError: name '__file__'
    assert "The stop button: stopping after this step" in out and "Ctrl-C" not in out
    assert "returned 130 | the kernel's handler back: True" in out
    hint = next(line for line in out.splitlines() if line.startswith("Stopped by"))
    assert hint.startswith("Stopped by the stop button. To record the videos: !")
    assert (cwd / folder / "rl-video-episode-0.mp4").is_file(), out  # the `!` line, run


def test_the_dashboard_command_in_a_notebook_has_its_bang_and_says_where_the_charts_are(notebook):
    _, outputs = notebook
    lines = text(outputs["run"]).splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("Dashboard: "))
    assert lines[i].startswith("Dashboard: !") and lines[i].endswith("swanlog")
    assert "click DQN-CartPole-v1" in lines[i + 1]
    assert text(outputs["run"]).count("swanlab watch") == 1  # once, in our words


def test_a_notebook_shows_a_live_bar_and_plays_the_first_test_video_in_the_output(notebook):
    _, outputs = notebook
    for cell in "pasted", "run", "main":
        shown = [o.data for o in outputs[cell] if o.output_type == "display_data"]
        assert any("application/vnd.jupyter.widget-view+json" in d for d in shown), cell
        videos = [d["text/html"] for d in shown if "<video" in d.get("text/html", "")]
        assert videos and "data:video/mp4;base64," in videos[0], cell  # embedded: Colab too


def test_a_bad_flag_in_a_notebook_is_one_line_and_a_returned_code_not_system_exit(notebook):
    _, outputs = notebook
    out = outputs["bad flag"]
    assert not errors(out), text(out)
    assert "argument --episode: must be >= 1" in text(out) and "returned 2" in text(out)


def test_the_pasted_files_help_reads_each_settings_comment_from_the_cell(notebook):
    _, outputs = notebook
    said = " ".join(text(outputs["pasted help"]).split())
    assert "Adam's step size (tutorial: 0.001) (default: 0.003)" in said, said
    assert "returned 0" in said
