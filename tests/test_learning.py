"""A cheap check that the default settings still learn: a regression here fails CI."""

import dqn_cartpole as dqn
from conftest import read_metrics


def test_fifty_episodes_with_the_defaults_learn_far_beyond_random_play(tmp_path):
    # Random play lasts about 20 steps, and greedy play of an untrained net about 10.
    argv = ["--episode", "50", "--seed", "0", "--output-dir", str(tmp_path)]
    assert (
        dqn.main([*argv, "--no-video", "--test-episodes", "0", "--swanlab-mode", "disabled"]) == 0
    )
    rows = read_metrics(tmp_path / "metrics.csv")
    evals = [float(r["eval_avg_reward"]) for r in rows if r["eval_avg_reward"]]
    assert max(evals) >= 150, evals
