"""PuffeRL's LSTM on positions-only CartPole, with the settings of this trainer's cartpole_positions
preset, for docs/BENCHMARKS.md ("Recurrent policies"): window returns every 20k steps.

    .venv/bin/python bench/recurrent_puffer.py --seed 0 --steps 400000

Same env (``training.envs.partial.cartpole_positions`` behind PufferLib's emulation, with
``EpisodeStats`` so PuffeRL sees episode returns), same network (``MLPPolicy`` 64,64 reading a
64-unit LSTM, wrapped by ``pufferlib.models.LSTMWrapper``), same batch (16 envs x 64 steps, BPTT
over the 64 steps, 4 minibatches of 4 segments, 8 epochs, lr 1e-3 annealed, gamma 0.99, lambda
0.95, entropy 0). What differs is each trainer's own: PuffeRL starts every training segment from a
zero state and does not reset it where an episode ends inside the segment; it has no observation
normalisation (docs/BENCHMARKS.md also gives this trainer's run without it, ``--no-ppo-norm-obs``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=400_000)
    args = p.parse_args(argv)

    import torch
    from pufferlib.models import LSTMWrapper

    from bench._bench_puffer import _import_pufferl, puffer_config, stats_vecenv
    from training.envs.partial import cartpole_positions
    from training.policy import MLPPolicy

    _, QuietPuffeRL = _import_pufferl()
    torch.manual_seed(args.seed)
    vecenv = stats_vecenv(cartpole_positions, 16, args.seed)
    env = vecenv.driver_env
    policy = LSTMWrapper(env, MLPPolicy(env, hidden=(64, 64), core_size=64), input_size=2, hidden_size=64)
    spec = dict(env_spec="cartpole_positions", seed=args.seed, num_envs=16, rollout=64, minibatches=4, epochs=8)
    hp = dict(lr=1e-3, gamma=0.99, gae_lambda=0.95, clip=0.2, vf_clip=0.2, vf_coef=0.5, ent_coef=0.0,
              max_grad_norm=0.5)
    config = puffer_config(spec, hp, args.steps, tempfile.mkdtemp(prefix="puffer_lstm_"))
    config["use_rnn"] = True
    trainer = QuietPuffeRL(config, vecenv, policy)
    start, window, edge, seen, returns, rows = time.time(), 20_000, 20_000, 0, [], []
    try:
        while trainer.global_step < args.steps:
            stats = trainer.evaluate()
            got = list(stats.get("episode_return", []))
            returns += got[seen:]
            seen = len(got)
            if trainer.train() is not None:  # PuffeRL averaged and cleared its stats
                seen = 0
            if trainer.global_step >= edge:
                mean = sum(returns) / len(returns) if returns else float("nan")
                rows.append(mean)
                print(f"{trainer.global_step:,} env steps, {time.time() - start:.0f} s, return_mean {mean:.1f}",
                      flush=True)
                returns, edge = [], edge + window
    finally:
        trainer.utilization.stop()  # PuffeRL's monitor thread is not a daemon
    first = next((i for i, r in enumerate(rows) if r >= 475), None)
    print(f"PuffeRL LSTM, seed {args.seed}: window returns {', '.join(f'{r:.0f}' for r in rows)}; first >= 475: "
          f"{'none' if first is None else f'{(first + 1) * 20}k'}; {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
