"""`prospector eval | plot | replay`: the evaluation and picture subcommands of the main CLI.

ray_app/cli.py owns the parser; it calls ``add_tool_parsers(sub)`` with its subparsers object
(whose parser_class every add_parser call inherits, so usage errors look the same everywhere)
and hands the parsed namespace of these subcommands to ``run_tool(ns)``. Nothing here imports
Ray: the tools run on a laptop against a copied run directory.
"""

from __future__ import annotations

import argparse
import sys

USAGE_ERROR = 2
TOOLS = ("eval", "plot", "replay")
DEFAULT_EVAL_SEED0 = 100_000  # training seeds are small: evaluation never replays them


class ToolError(ValueError):
    """A bad argument or input file; reported as one `error: ...` line, exit code 2."""


def add_tool_parsers(subparsers) -> None:
    ev = subparsers.add_parser("eval", help="evaluate a checkpoint beside the scripted bots",
                               description="Play one episode per seed (seed0 .. seed0+episodes-1) with the "
                                           "checkpoint's policy and, for the prospector, every scripted bot "
                                           "on the same seeds; print one comparison table.")
    ev.add_argument("--checkpoint", required=True, metavar="PATH", help="runs/<id>/checkpoints/ckpt_<n>.pt")
    ev.add_argument("--episodes", type=int, default=200, help="episodes (= seeds) per policy (default 200)")
    ev.add_argument("--stochastic", action="store_true",
                    help="sample actions (seeded) instead of the deterministic argmax")
    ev.add_argument("--temperature", type=float, default=None, metavar="T",
                    help="sample (seeded) at temperature T: logits / T, or the Gaussian's std x T; "
                         "T < 1 is between the argmax and --stochastic (T = 1)")
    ev.add_argument("--seed0", type=int, default=DEFAULT_EVAL_SEED0, help="first seed (default 100000)")
    ev.add_argument("--json", dest="json_path", metavar="PATH", help="also write {name: summary} as JSON")
    ev.add_argument("--time-max", type=int, default=None, metavar="TICKS",
                    help="episode time limit (default: the checkpoint's --env-time-max)")
    ev.add_argument("--no-bots", action="store_true", help="evaluate the policy only")
    ev.set_defaults(tool_command="eval")

    pl = subparsers.add_parser("plot", help="learning curves of a run as a PNG",
                               description="Write <run>/plots/learning_curves.png from metrics/windows.jsonl.")
    pl.add_argument("run_dir", metavar="RUN_DIR", help="runs/<id>")
    pl.add_argument("--out", metavar="PATH", help="PNG path (default <run>/plots/learning_curves.png)")
    pl.add_argument("--bot-episodes", type=int, default=50,
                    help="episodes per bot for the reference lines when <run>/bots.json is absent "
                         "(prospector runs; 0: no lines)")
    pl.set_defaults(tool_command="plot")

    rp = subparsers.add_parser("replay", help="picture of one replayed episode",
                               description="Draw hull, fuel, heat, cargo and credits over one replay.")
    rp.add_argument("replay", metavar="REPLAY", help="runs/<id>/replays/<file>.jsonl.gz")
    rp.add_argument("--out", metavar="PATH", help="PNG path (default: next to the replay, .png)")
    rp.set_defaults(tool_command="replay")


def _user_errors() -> tuple[type[BaseException], ...]:
    from training.envs.env_spec import EnvSpecError
    from training.plots import PlotError
    from training.run_store import CheckpointError, RunStoreError

    return ToolError, PlotError, CheckpointError, RunStoreError, EnvSpecError, OSError


def run_tool(ns: argparse.Namespace) -> int:
    """Run one tool subcommand; -> exit code (0, or 2 after one `error: ...` line on stderr)."""
    name = getattr(ns, "tool_command", None) or getattr(ns, "command", None)
    handlers = {"eval": _run_eval, "plot": _run_plot, "replay": _run_replay}
    try:
        if name not in handlers:
            raise ToolError(f"unknown tool {name!r}; expected one of {', '.join(TOOLS)}")
        return handlers[name](ns)
    except _user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return USAGE_ERROR


def _run_eval(ns) -> int:
    from training.evaluate import (bot_summaries, comparison_table, evaluate_policy, load_policy,
                                   make_act_fn, summarize)
    from training.envs.registry import make_vecenv
    from training.run_store import atomic_write_json

    if ns.episodes < 1:
        raise ToolError(f"--episodes must be >= 1, got {ns.episodes}")
    if ns.time_max is not None and ns.time_max < 1:
        raise ToolError(f"--time-max must be >= 1, got {ns.time_max}")
    if ns.temperature is not None and not ns.temperature > 0:
        raise ToolError(f"--temperature must be > 0, got {ns.temperature}")
    sample = ns.stochastic or ns.temperature is not None
    temperature = 1.0 if ns.temperature is None else ns.temperature
    policy, ckpt = load_policy(ns.checkpoint)
    cfg = ckpt.get("config") or {}
    env = cfg.get("env", "prospector")
    rules = cfg.get("env_rules", "v2")
    time_max = int(ns.time_max or cfg.get("env_time_max", 20000))
    probe = make_vecenv(env, 1, ns.seed0, rules=rules, time_max=time_max)
    space = probe.single_action_space
    probe.close()
    act = make_act_fn(policy, space, deterministic=not sample, seed=ns.seed0, temperature=temperature)
    mode = "deterministic" if not sample else f"stochastic (seeded, temperature {temperature:g})"
    env_text = f"{env} (rules {rules}, time_max {time_max})" if env == "prospector" else env
    print(f"{ns.checkpoint}: window {ckpt.get('window_id')}, {ckpt.get('env_steps_total')} env steps; "
          f"env {env_text}; seeds {ns.seed0}..{ns.seed0 + ns.episodes - 1}; policy {mode}", flush=True)
    results = {"policy": summarize(evaluate_policy(act, env, ns.episodes, ns.seed0, rules, time_max))}
    if env == "prospector" and not ns.no_bots:
        results.update(bot_summaries(ns.episodes, ns.seed0, rules, time_max))
    print(comparison_table(results))
    if ns.json_path:
        try:
            atomic_write_json(ns.json_path, results)
        except OSError as e:
            raise ToolError(f"--json {ns.json_path}: cannot write ({e.strerror or e})") from None
        print(f"wrote {ns.json_path}")
    return 0


def _run_plot(ns) -> int:
    from training.plots import plot_learning_curves

    if ns.bot_episodes < 0:
        raise ToolError(f"--bot-episodes must be >= 0, got {ns.bot_episodes}")
    out = plot_learning_curves(ns.run_dir, out=ns.out, bot_episodes=ns.bot_episodes)
    print(f"wrote {out}")
    return 0


def _run_replay(ns) -> int:
    from training.plots import plot_replay

    out = plot_replay(ns.replay, out=ns.out)
    print(f"wrote {out}")
    return 0
