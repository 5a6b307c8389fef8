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
TOOLS = ("eval", "plot", "replay", "envs")
DEFAULT_EVAL_SEED0 = 100_000  # training seeds are small: evaluation never replays them


class ToolError(ValueError):
    """A bad argument or input file; reported as one `error: ...` line, exit code 2."""


def add_tool_parsers(subparsers) -> None:
    ev = subparsers.add_parser("eval", help="evaluate a checkpoint beside the env's baselines",
                               description="Play one episode per seed (seed0 .. seed0+episodes-1) with the "
                                           "checkpoint's policy and the env's baselines, if its plug-in has "
                                           "some (the prospector: every scripted bot), on the same seeds; "
                                           "print one comparison table.")
    ev.add_argument("--checkpoint", required=True, metavar="PATH",
                    help="runs/<id>/checkpoints/ckpt_<n>.pt, or its URI (s3://bucket/runs/<id>/checkpoints/...)")
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
    ev.add_argument("--no-baselines", "--no-bots", dest="no_baselines", action="store_true",
                    help="evaluate the policy only")
    ev.set_defaults(tool_command="eval")

    pl = subparsers.add_parser("plot", help="learning curves of a run as a PNG",
                               description="Write <run>/plots/learning_curves.png from metrics/windows.jsonl.")
    pl.add_argument("run_dir", metavar="RUN_DIR", help="runs/<id>, or its URI (s3://bucket/runs/<id>)")
    pl.add_argument("--out", metavar="PATH", help="PNG path (default <run>/plots/learning_curves.png)")
    pl.add_argument("--reference-episodes", "--bot-episodes", dest="reference_episodes", type=int, default=50,
                    help="episodes per reference line (the env's baselines, e.g. the prospector's bots) when "
                         "<run>/reference_returns.json is absent (0: no lines)")
    pl.set_defaults(tool_command="plot")

    rp = subparsers.add_parser("replay", help="picture of one replayed episode",
                               description="Draw one replayed episode the way its env's plug-in draws it "
                                           "(the prospector: hull, fuel, heat, cargo and credits), else its "
                                           "rewards and running return.")
    rp.add_argument("replay", metavar="REPLAY", help="runs/<id>/replays/<file>.jsonl.gz")
    rp.add_argument("--out", metavar="PATH", help="PNG path (default: next to the replay, .png)")
    rp.add_argument("--env", metavar="ENV", help="the env whose drawing to use (default: the env of the "
                                                 "replay's run, from <run>/config.json)")
    rp.set_defaults(tool_command="replay")

    en = subparsers.add_parser("envs", help="the registered env plug-ins and what each offers",
                               description="List the env plug-ins installed (entry-point group "
                                           "prospector_trainer.envs): their --env name, and the names they "
                                           "offer for --policy, --policy-prior and --kickstart-teacher.")
    en.set_defaults(tool_command="envs")


def _user_errors() -> tuple[type[BaseException], ...]:
    from training.envs.env_spec import EnvSpecError
    from training.envs.plugin import PluginError
    from training.plots import PlotError
    from training.checkpoints import CheckpointError
    from training.run_store import RunStoreError

    return ToolError, PlotError, CheckpointError, RunStoreError, EnvSpecError, PluginError, OSError


def run_tool(ns: argparse.Namespace) -> int:
    """Run one tool subcommand; -> exit code (0, or 2 after one `error: ...` line on stderr)."""
    name = getattr(ns, "tool_command", None) or getattr(ns, "command", None)
    handlers = {"eval": _run_eval, "plot": _run_plot, "replay": _run_replay, "envs": _run_envs}
    try:
        if name not in handlers:
            raise ToolError(f"unknown tool {name!r}; expected one of {', '.join(TOOLS)}")
        return handlers[name](ns)
    except _user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return USAGE_ERROR


def _run_eval(ns) -> int:
    from training.envs.env_spec import env_settings
    from training.envs.plugin import tool
    from training.evaluate import (BASE_COLUMNS, LENGTH_COLUMN, comparison_table, evaluate_policy, load_policy,
                                   make_act_fn, summarize)
    from training.storage import atomic_write_json

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
    env = cfg["env"]
    settings = env_settings(cfg)
    if ns.time_max:
        settings["time_max"] = ns.time_max
    act = make_act_fn(policy, policy.action_space, deterministic=not sample, seed=ns.seed0, temperature=temperature)
    mode = "deterministic" if not sample else f"stochastic (seeded, temperature {temperature:g})"
    shown = ", ".join(f"{k} {v}" for k, v in settings.items() if v is not None)
    print(f"{ns.checkpoint}: window {ckpt.get('window_id')}, {ckpt.get('env_steps_total')} env steps; "
          f"env {env}{f' ({shown})' if shown else ''}; seeds {ns.seed0}..{ns.seed0 + ns.episodes - 1}; "
          f"policy {mode}", flush=True)
    results = {"policy": summarize(evaluate_policy(act, env, ns.episodes, ns.seed0, **settings,
                                                   kwargs=cfg.get("env_kwargs")))}
    baselines = None if ns.no_baselines else tool(env, "baselines")
    if baselines is not None:
        results.update(baselines(ns.episodes, ns.seed0, **settings))
    print(comparison_table(results, BASE_COLUMNS + (tool(env, "eval_columns") or LENGTH_COLUMN)))
    if ns.json_path:
        try:
            atomic_write_json(ns.json_path, results)
        except OSError as e:
            raise ToolError(f"--json {ns.json_path}: cannot write ({e.strerror or e})") from None
        print(f"wrote {ns.json_path}")
    return 0


def _run_plot(ns) -> int:
    from training.plots import plot_learning_curves

    if ns.reference_episodes < 0:
        raise ToolError(f"--reference-episodes must be >= 0, got {ns.reference_episodes}")
    out = plot_learning_curves(ns.run_dir, out=ns.out, reference_episodes=ns.reference_episodes)
    print(f"wrote {out}")
    return 0


def _run_replay(ns) -> int:
    from training.plots import plot_replay

    out = plot_replay(ns.replay, out=ns.out, env=ns.env)
    print(f"wrote {out}")
    return 0


def _run_envs(ns) -> int:
    from training.envs.plugin import BUILTIN_POLICIES, find_plugin, plugin_names

    print(f"--policy names every env has: {', '.join(BUILTIN_POLICIES)}")
    for name in plugin_names():
        plugin = find_plugin(name)
        print(f"--env {name}: {plugin.env}")
        for what, names in (("--policy", plugin.policies), ("--policy-prior / --kickstart-teacher", plugin.behaviours)):
            if names:
                print(f"  {what}: {', '.join(names)}")
        if plugin.preset:
            print("  preset: " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in plugin.preset.items()))
    return 0
