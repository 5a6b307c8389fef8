"""Baseline bots over seeded episodes (thin CLI over prospector_game.bot_eval.evaluate_bots).

    .venv/bin/python bench/bots.py --rules v2 --episodes 200 --json runs/bots_v2.json
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from prospector_game.bot_eval import evaluate_bots  # noqa: E402
from prospector_game.bots import BOTS  # noqa: E402

_JSON_KEYS = ("return_mean", "return_median", "survival_rate", "net_profit_mean",
              "profit_per_tick_mean", "ticks_mean", "endings")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rules", default="v2", choices=["v1", "v2"])
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--seed0", type=int, default=0, help="episode seeds seed0..seed0+episodes-1")
    ap.add_argument("--time-max", type=int, default=20000)
    ap.add_argument("--bots", default=",".join(BOTS), help="comma-separated bot names")
    ap.add_argument("--json", default=None, help="write {name: metrics} to this path")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    res = evaluate_bots(args.bots.split(","), episodes=args.episodes, seed0=args.seed0,
                        rules=args.rules, time_max=args.time_max)
    el = time.perf_counter() - t0
    print(f"rules {args.rules}, {args.episodes} episodes (seeds {args.seed0}.."
          f"{args.seed0 + args.episodes - 1}), time_max {args.time_max}, {el:.0f} s")
    print(f"{'bot':<17} {'return':>9} {'median':>9} {'survival':>8} {'net profit':>11} "
          f"{'profit/tick':>11} {'ticks':>7}  endings D/S/C/T")
    for name, m in res.items():
        e = m["endings"]
        print(f"{name:<17} {m['return_mean']:>9.2f} {m['return_median']:>9.2f} "
              f"{m['survival_rate']:>8.2f} {m['net_profit_mean']:>11.0f} "
              f"{m['profit_per_tick_mean']:>11.3f} {m['ticks_mean']:>7.0f}  "
              f"{e['destroyed']}/{e['stranded']}/{e['cashed_out']}/{e['time_limit']}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({n: {k: m[k] for k in _JSON_KEYS} for n, m in res.items()}, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
