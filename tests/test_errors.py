"""Mistakes a learner makes get one clear line and a non-zero exit, and lose nothing."""

import pytest
import torch

import dqn_cartpole as dqn
from conftest import run_script

BAD_FLAGS = [
    (["--episode", "0"], "--episode", ">= 1"),
    (["--episode", "-5"], "--episode", ">= 1"),
    (["--episode", "ten"], "--episode", "invalid int value"),  # argparse's own words
    (["--eval-every", "0"], "--eval-every", ">= 1"),
    (["--test-episodes", "-1"], "--test-episodes", ">= 0"),
    (["--batch-size", "2.5"], "--batch-size", "invalid int value"),
    (
        ["--batch-size", "128", "--replay-buffer-size", "100"],
        "--batch-size",
        "--replay-buffer-size",
    ),
    (["--epsilon-start", "1.5"], "--epsilon-start", "[0, 1]"),
    (["--epsilon-end", "-0.1"], "--epsilon-end", "[0, 1]"),
    (["--epsilon-start", "0.2", "--epsilon-end", "0.5"], "--epsilon-end", "--epsilon-start"),
    (["--epsilon-decay", "0"], "--epsilon-decay", "(0, 1]"),
    (["--epsilon-decay", "1.01"], "--epsilon-decay", "(0, 1]"),
    (["--gamma", "1.1"], "--gamma", "[0, 1]"),
    (["--learning-rate", "0"], "--learning-rate", "> 0"),
    (["--learning-rate", "-0.001"], "--learning-rate", "> 0"),
    (["--learning-rate", "nan"], "--learning-rate", "> 0"),
    (["--learning-rate", "inf"], "--learning-rate", "> 0"),  # it would train to NaN
    (["--lr", "0"], "--learning-rate", "> 0"),  # the flag's earlier name, understood
    (["--solved-reward", "inf"], "--solved-reward", ">= 0"),
    (["--device", "tpu"], "--device", "cpu"),
    (["--swanlab-mode", "online"], "--swanlab-mode", "local"),
]


@pytest.mark.parametrize("argv, flag, allowed", BAD_FLAGS)
def test_bad_flag_is_rejected_in_one_line_naming_the_flag(capsys, argv, flag, allowed):
    with pytest.raises(SystemExit) as exit_info:
        dqn.parse_args(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert flag in err and allowed in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_rejected(capsys):
    with pytest.raises(SystemExit) as exit_info:
        dqn.parse_args(["--device", "cuda"])
    assert exit_info.value.code == 2
    assert "--device cuda" in capsys.readouterr().err


def test_bad_flag_stops_the_real_command_before_any_work(tmp_path):
    result = run_script(tmp_path, "--episode", "0", timeout=60)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "dqn_cartpole.py: error: argument --episode: must be >= 1, got 0 (see --help)"
    ]
    assert list(tmp_path.iterdir()) == []  # no output/, no swanlog/, nothing
