"""`prospector` command line (also `python -m ray_app` and `python training/train_puffer.py`)."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from ray_app.cli_tools import add_tool_parsers, run_tool
from training.config import ConfigError
from training.config_cli import add_train_args, config_text, resolve
from training.storage import discard_partial_writes

USAGE_ERROR = 2


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by the user's input: reported in one line with exit code 2."""
    from training.envs.env_spec import EnvSpecError
    from training.envs.plugin import PluginError
    from training.rollout import EnvOutputError
    from training.checkpoints import CheckpointError
    from training.run_store import RunStoreError

    return ConfigError, EnvSpecError, PluginError, RunStoreError, CheckpointError, EnvOutputError


class OneLineErrorParser(argparse.ArgumentParser):
    """Usage errors in one line (flag named), exit code 2, like every other bad-input error."""

    def error(self, message):
        self.exit(USAGE_ERROR, f"error: {message}\n")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """``argv``: the command line, for ``train --help`` to show the defaults its --env resolves to."""
    parser = OneLineErrorParser(prog="prospector", description="Ray-distributed PPO for PufferLib environments")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineErrorParser)
    train = sub.add_parser("train", usage="prospector train [--env ENV] [--config FILE] [options]", help="train a policy (embedded Ray, or --address / RAY_ADDRESS to join a cluster)",
                           description="Train a policy. Settings come from the env's preset (or the defaults of "
                                       "its action space), then --config, then the flags; --print-config shows "
                                       "the result.")
    add_train_args(train, argv)
    sweep = sub.add_parser("sweep", help="hyperparameter search on Ray Tune (ASHA): every trial a full training run",
                           description="Search the [space] of a sweep file (ray_app/sweep.py documents it) with "
                                       "Ray Tune and ASHA early stopping; print a table of the trials and write "
                                       "the best trial's settings as a --config file.")
    sweep.add_argument("--config", required=True, metavar="FILE", help="the sweep file (TOML, YAML or JSON)")
    sweep.add_argument("--resume", action="store_true", help="continue the sweep after its driver was stopped")
    sweep.add_argument("--address", help="join this Ray cluster (default: RAY_ADDRESS, else an embedded Ray)")
    add_tool_parsers(sub)  # eval, plot, replay, envs
    return parser


def resolve_train_config(ns: argparse.Namespace):
    base = None
    if ns.resume:
        from training.run_store import RunStore

        base = RunStore.open(ns.resume).read_config()
        base["resume"] = ns.resume
    return resolve(ns, base=base)


def run_train(ns: argparse.Namespace) -> int:
    cfg = resolve_train_config(ns)
    if ns.print_config:
        print(config_text(cfg), end="")
        return 0
    if os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") and not cfg.resume and not _is_uri(cfg.run_root) \
            and not os.path.isabs(cfg.run_root):
        # Under `ray job submit` the working directory is Ray's temporary copy of the upload.
        raise ConfigError("--run-root", f"{cfg.run_root!r} is relative; under `ray job submit` it would land in "
                          "Ray's temporary copy of the working directory and be lost: pass an absolute path, or "
                          "a URI (s3://bucket/runs) that outlives the cluster")
    if not (cfg.address or os.environ.get("RAY_ADDRESS")):
        # An embedded Ray serves this process only: keep every socket on loopback. Ray reads this
        # when it is imported (without it, it swaps 127.0.0.1 for the host's address).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    from ray_app.driver import train  # imports Ray: only once the config is known to be valid

    # The run has its own handlers (finish the round, checkpoint; a second signal exits at once) and
    # puts back the ones it found when it ends; this one then catches a signal that lands while the
    # process winds down (Ray's exit hooks take a while): exit 130 at once, not a traceback.
    signal.signal(signal.SIGINT, _exit_interrupted)
    meta = train(cfg)
    return 0 if meta["status"] == "completed" else 130


def _is_uri(run_root: str) -> bool:
    from training.storage import is_uri

    return is_uri(run_root)


def run_sweep_command(ns: argparse.Namespace) -> int:
    from ray_app.sweep import run_sweep  # imports Ray Tune

    table, best = run_sweep(ns.config, resume=ns.resume, address=ns.address)
    print(table)
    print(f"best settings: {best} (train with: prospector train --config {best})")
    return 0


def _exit_interrupted(signum, frame):
    print("\ninterrupted", file=sys.stderr, flush=True)
    discard_partial_writes()
    os._exit(130)


def main(argv: list[str] | None = None) -> int:
    try:
        ns = build_parser(sys.argv[1:] if argv is None else argv).parse_args(argv)
        if ns.command == "train":
            return run_train(ns)
        if ns.command == "sweep":
            return run_sweep_command(ns)
        return run_tool(ns)
    except _user_errors() as e:
        cause = getattr(e, "cause", None)  # Ray wraps errors raised inside actors
        print(f"error: {cause if isinstance(cause, BaseException) else e}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:  # the tools, and train before its handler is set: 130, no traceback
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # infrastructure (Ray, the cluster, storage): one line naming the cause, exit 1
        if os.environ.get("PROSPECTOR_TRACEBACK"):
            raise
        cause = getattr(e, "cause", None)  # Ray wraps errors raised inside actors
        e = cause if isinstance(cause, BaseException) else e
        print(f"error: {type(e).__name__}: {e} (PROSPECTOR_TRACEBACK=1 shows where)", file=sys.stderr)
        return 1
    return USAGE_ERROR


if __name__ == "__main__":
    sys.exit(main())
