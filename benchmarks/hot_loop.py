"""Where a training step's time goes: acting, the environment, replay, the gradient step.

    python benchmarks/hot_loop.py            # default settings, 5000 steps
    python benchmarks/hot_loop.py --steps 20000 --batch-size 128
    python benchmarks/hot_loop.py --plain-adam   # Adam as torch before 2.4 runs it (no fused)

Times each part of the script's own training step (one core, one thread) and prints
microseconds per call and environment steps per second.
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dqn_cartpole as dqn  # noqa: E402  (needs the repo on the path first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--epsilon", type=float, default=0.1, help="share of random actions")
    parser.add_argument("--plain-adam", action="store_true", help="Adam without fusing")
    known, script_args = parser.parse_known_args()
    if known.plain_adam:  # what an Intel Mac's torch 2.2.2 runs: no fused Adam on a CPU
        dqn.Faster.FUSED = False
    config = dqn.parse_args(script_args)
    torch.set_num_threads(1)
    torch.manual_seed(config.seed)  # the agent's own generator takes the seed from config

    env = dqn.make_env(config.seed)
    agent = dqn.DQNAgent(4, 2, config)
    agent.epsilon = known.epsilon
    state, _ = env.reset()
    for _ in range(config.batch_size):  # a full batch, so that every step trains
        agent.store_experience(state, 0, 1.0, state, False)

    parts = {"choose_action": 0.0, "env.step": 0.0, "store_experience": 0.0}
    parts |= {"replay sample": 0.0, "gradient step": 0.0}
    clock = time.perf_counter
    started = clock()
    for _ in range(known.steps):
        t0 = clock()
        action = agent.choose_action(state)
        t1 = clock()
        next_state, reward, terminated, truncated, _ = env.step(action)
        t2 = clock()
        agent.store_experience(state, action, reward, next_state, terminated)
        t3 = clock()
        agent.replay_buffer.sample(config.batch_size)  # timed alone; train() samples again
        t4 = clock()
        agent.train()
        t5 = clock()
        parts["choose_action"] += t1 - t0
        parts["env.step"] += t2 - t1
        parts["store_experience"] += t3 - t2
        parts["replay sample"] += t4 - t3
        parts["gradient step"] += t5 - t4 - (t4 - t3)  # train() minus its own sampling
        state = next_state
        if terminated or truncated:
            state, _ = env.reset()
    total = clock() - started - parts["replay sample"]  # the extra sample is not a real cost

    print(f"{known.steps} training steps, batch {config.batch_size}, ε {known.epsilon}")
    print("| part | µs per step | share |\n|---|---:|---:|")
    for name, seconds in parts.items():
        print(f"| {name} | {seconds / known.steps * 1e6:.0f} | {seconds / total:.0%} |")
    print(f"\n{known.steps / total:.0f} environment steps per second with a gradient step on each")


if __name__ == "__main__":
    main()
