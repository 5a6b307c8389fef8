"""Environment throughput on one core: decisions/s and game ticks/s for several batch sizes.

    .venv/bin/python bench/env_speed.py                 # N in 1, 64, 1024, 4096, random ids
    .venv/bin/python bench/env_speed.py --policy greedy_miner --sizes 4096
    .venv/bin/python bench/env_speed.py --policy random_valid --sizes 4096

Actions are drawn uniformly from 0..68 (every id is in range; many are invalid in context and
play as HOLD, as for an untrained policy) and generated before timing; with --policy a bot
chooses the actions and only env.step is timed. ``--policy random_valid`` draws uniformly among
the actions that can act in the observed state (``prospector_game.policies.action_mask``, the
prospector policy's mask: invalid ids and no-op sales excluded); only env.step is timed. Each
size runs --blocks timed blocks; the best block is reported (and the median), since other
processes on a shared machine slow some blocks. Thread pools are limited to one thread before
NumPy is imported, and the process is pinned to one CPU where possible.
"""

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from prospector_game.bots import make_bots  # noqa: E402
from prospector_game.env import ProspectorEnv  # noqa: E402


def random_valid(rules: str, seed: int):
    """obs (B, 260) -> a uniform draw among each env's valid actions (torch only for the mask)."""
    import torch

    from prospector_game.consts import N_ACTIONS
    from prospector_game.policies import ActionMask

    torch.set_num_threads(1)
    mask, gen = ActionMask(rules), torch.Generator().manual_seed(seed)

    def act(obs):
        u = torch.rand(obs.shape[0], N_ACTIONS, generator=gen)
        return u.masked_fill(~mask(torch.from_numpy(obs)), -1.0).argmax(1).numpy()

    return act


def measure(n, rules, seconds, policy, blocks=5, seed=0):
    """Time `blocks` blocks of steps; report the best and the median block. The machine this
    runs on may be shared, and the best block is the least disturbed by other processes."""
    env = ProspectorEnv(num_envs=n, seed=seed, rules=rules)
    obs, _ = env.reset()
    rng = np.random.default_rng(seed)
    if policy == "random":
        bot = None
    elif policy == "random_valid":
        bot = random_valid(rules, seed)
    else:
        bot = make_bots(rules)[policy]
    pool = rng.integers(0, 69, (64, n))
    for i in range(20):  # warm up (allocator, world queue)
        env.step(pool[i % 64] if bot is None else bot(obs))
    rates, tick_rates, cpu_rates = [], [], []
    steps = 0
    for _ in range(blocks):
        block_steps = ticks = 0
        wall = cpu = 0.0
        t_end = time.perf_counter() + seconds / blocks
        while time.perf_counter() < t_end or block_steps < 3:
            a = pool[steps % 64] if bot is None else bot(obs)  # policy time is not counted
            t0, c0 = time.perf_counter(), time.process_time()
            obs, *_ = env.step(a)
            wall += time.perf_counter() - t0
            cpu += time.process_time() - c0
            ticks += int(env.sim.last_dt.sum())
            block_steps += 1
            steps += 1
        rates.append(block_steps * n / wall)
        tick_rates.append(ticks / wall)
        cpu_rates.append(block_steps * n / max(cpu, 1e-9))
    best = int(np.argmax(rates))
    return {"n": n, "steps": steps, "decisions_per_s": rates[best],
            "decisions_per_s_median": float(np.median(rates)), "ticks_per_s": tick_rates[best],
            "cpu_decisions_per_s": cpu_rates[best], "ms_per_step": 1e3 * n / rates[best]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="1,64,1024,4096")
    ap.add_argument("--rules", default="v2", choices=["v1", "v2"])
    ap.add_argument("--seconds", type=float, default=5.0, help="timed seconds per size")
    ap.add_argument("--blocks", type=int, default=5, help="timed blocks per size (best reported)")
    ap.add_argument("--policy", default="random",
                    help="random, random_valid or a bot name (the policy's time is excluded)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin to one CPU")
    args = ap.parse_args(argv)
    if not args.no_pin and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    print(f"rules {args.rules}, policy {args.policy}, {args.seconds:.0f} s per size, one core")
    print(f"load average before: {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "")
    print(f"{'N':>6} {'decisions/s':>13} {'(median)':>11} {'ticks/s':>13} {'cpu dec/s':>13} "
          f"{'ms/step':>9}")
    for n in [int(x) for x in args.sizes.split(",")]:
        r = measure(n, args.rules, args.seconds, args.policy, args.blocks)
        print(f"{n:>6} {r['decisions_per_s']:>13,.0f} {r['decisions_per_s_median']:>11,.0f} "
              f"{r['ticks_per_s']:>13,.0f} {r['cpu_decisions_per_s']:>13,.0f} "
              f"{r['ms_per_step']:>9.3f}")


if __name__ == "__main__":
    main()
