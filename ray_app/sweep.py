"""`prospector sweep --config sweep.toml`: hyperparameter search on Ray Tune.

A sweep file is a config file (``training.config_cli``) with two more tables::

    [sweep]
    name = "cartpole-lr"          # the Tune experiment: <storage>/<name>
    metric = "return_mean"        # any numeric window-row field
    mode = "max"
    num_samples = 4               # samples of the space (each grid point this many times)
    grace_windows = 2             # ASHA: no trial stops before this many windows
    # storage = "runs/sweeps"     # default: <run_root>/sweeps (a URI too: s3://bucket/sweeps)
    # max_concurrent = 2          # default: as many as the cluster's CPUs hold

    [space]
    ppo_learning_rate = {loguniform = [1e-5, 1e-2]}
    ppo_ent_coef = {uniform = [0.0, 0.02]}
    policy_hidden = {choice = ["64,64", "256,256"]}
    ppo_update_epochs = {grid = [2, 4]}

    [env]
    env = "gym:CartPole-v1"       # ...and any other settings every trial shares

Each trial is a full training run (its own runners and learner, its usual run directory under
``run_root``, named ``<sweep name>-<trial id>``) reporting every window row to Tune, which stops
the worse trials early with ASHA (on env steps, so a restored trial keeps its place). Killed, the
sweep continues with ``--resume`` (Tune's restore); a trial cut short resumes its own run from its
latest checkpoint. At the end: a table of the trials and the best trial's settings, written as a
``--config`` file beside the experiment.

``run_root`` (and ``storage``) may be URIs (``s3://bucket/runs``): the trials' runs, Tune's
experiment state and the best config then live on the store, which every node of a cluster
reaches, so a trial restarted on another node resumes its run there.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from training.config import ConfigError, TrainConfig, config_from_args
from training.config_cli import FIELDS, config_text, parse_config_file, settings_from_mapping
from training.storage import RemotePath, as_path, atomic_write_bytes, is_uri

TRIAL_CPU = 0.01  # a trial's own process: it waits on its runners and learner
SEARCH = ("uniform", "loguniform", "choice", "randint", "grid")
SWEEP_KEYS = {"name": str, "metric": str, "mode": str, "num_samples": int, "grace_windows": int,
              "reduction_factor": int, "storage": str, "max_concurrent": int}


def load_sweep(path: str | Path) -> tuple[dict, dict, dict]:
    """(sweep options, search space as written, base settings) of a sweep file, checked: every
    space key is a setting with a known search kind, and the base with each space's first value
    is a valid configuration."""
    path = Path(path)
    data = dict(parse_config_file(path))
    options = dict(data.pop("sweep", None) or {})
    space = dict(data.pop("space", None) or {})
    unknown = set(options) - set(SWEEP_KEYS)
    if unknown:
        raise ConfigError("--config", f"{path}: unknown [sweep] keys {sorted(unknown)}; known: {sorted(SWEEP_KEYS)}")
    if not space:
        raise ConfigError("--config", f"{path}: a sweep needs a [space] table of settings to search")
    for name, kind in space.items():
        spec = kind if isinstance(kind, dict) else {}
        if name not in FIELDS:
            raise ConfigError("--config", f"{path}: [space] {name!r} is not a setting")
        if len(spec) != 1 or next(iter(spec)) not in SEARCH or not isinstance(next(iter(spec.values())), list):
            raise ConfigError("--config", f"{path}: [space] {name} must be one of "
                                          f"{{{' | '.join(f'{k} = [...]' for k in SEARCH)}}}")
    base = settings_from_mapping(data, path)
    options.setdefault("name", path.stem)
    options.setdefault("metric", "return_mean")
    options.setdefault("mode", "max")
    if options["mode"] not in ("max", "min"):
        raise ConfigError("--config", f"{path}: [sweep] mode must be max or min")
    first = {name: next(iter(spec.values()))[0] for name, spec in space.items()}
    config_from_args({**base, **first})  # fails now, naming the setting, rather than in every trial
    return options, space, base


def tune_space(space: dict) -> dict:
    from ray import tune

    kinds = {"uniform": lambda v: tune.uniform(*v), "loguniform": lambda v: tune.loguniform(*v),
             "choice": tune.choice, "randint": lambda v: tune.randint(*v), "grid": tune.grid_search}
    return {name: kinds[kind](values) for name, spec in space.items() for kind, values in spec.items()}


def _trial(params: dict, base: dict, sweep_name: str) -> None:
    """One Tune trial: a training run reporting each window row. A trial that Tune restarts (its
    sweep's driver was killed) continues its run from the latest checkpoint."""
    from ray import tune

    from ray_app.driver import train
    from training.run_store import RunStore

    cfg = config_from_args({**base, **params, "run_id": f"{sweep_name}-{tune.get_context().get_trial_id()}"})
    run_dir = as_path(cfg.run_root) / cfg.run_id
    if run_dir.exists():
        store = RunStore.open(run_dir)
        if store.list_checkpoints():
            cfg = config_from_args({"resume": str(run_dir)}, base={**store.read_config(), "resume": str(run_dir)})
        else:  # cut short before its first checkpoint: start again beside it
            cfg.run_id = f"{cfg.run_id}-{sum(p.name.startswith(cfg.run_id) for p in run_dir.parent.iterdir())}"

    def report(row: dict) -> None:
        numbers = {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        numbers["run_dir"] = str(run_dir)
        tune.report(numbers)

    train(cfg, on_window=report)


def run_sweep(path: str | Path, resume: bool = False, address: str | None = None) -> tuple[str, Path | RemotePath]:
    """Run (or ``resume``) the sweep a file describes; returns (the table, the best config's path)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from ray_app.local_ray import start_local_ray

    options, space, base = load_sweep(path)
    probe = config_from_args(base)
    if not is_uri(probe.run_root):
        base["run_root"] = str(Path(probe.run_root).resolve())  # trials run with Tune's working directory
    storage = _absolute(options.get("storage") or as_path(base["run_root"]) / "sweeps")
    need = probe.ppo_num_workers * probe.runner_num_cpus + probe.learner_num_cpus
    import ray

    address = address or os.environ.get("RAY_ADDRESS")
    if not ray.is_initialized():
        if address:
            ray.init(address=address)
        else:
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
            start_local_ray(num_cpus=max(os.cpu_count() or 1, math.ceil(need + TRIAL_CPU)))
    # A trial's own process only waits on its actors (TRIAL_CPU); the runners and learner hold the
    # CPUs, so the cluster holds as many trials at once as it has room for their actors.
    fits = max(1, int(ray.cluster_resources().get("CPU", 1) // (need + TRIAL_CPU)))
    trainable = tune.with_parameters(tune.with_resources(_trial, {"cpu": TRIAL_CPU}), base=base,
                                     sweep_name=options["name"])
    experiment = storage / options["name"]
    fs = storage.fs if isinstance(storage, RemotePath) else None  # Tune's own handle on the store
    if resume:
        if not tune.Tuner.can_restore(_tune_path(experiment), storage_filesystem=fs):
            raise ConfigError("--resume", f"no sweep to resume at {experiment}")
        tuner = tune.Tuner.restore(_tune_path(experiment), trainable, resume_unfinished=True, resume_errored=True,
                                   storage_filesystem=fs)
    else:
        scheduler = ASHAScheduler(time_attr="env_steps_total", max_t=probe.total_env_steps,
                                  grace_period=options.get("grace_windows", 1) * probe.window_env_steps,
                                  reduction_factor=options.get("reduction_factor", 2))
        tuner = tune.Tuner(trainable, param_space=tune_space(space), tune_config=tune.TuneConfig(
            metric=options["metric"], mode=options["mode"], scheduler=scheduler,
            num_samples=options.get("num_samples", 1), max_concurrent_trials=options.get("max_concurrent", fits)),
            run_config=tune.RunConfig(name=options["name"], storage_path=_tune_path(storage), storage_filesystem=fs))
    results = tuner.fit()
    return _summary(results, options, base, experiment)


def _absolute(location) -> Path | RemotePath:
    path = as_path(location)
    return path if isinstance(path, RemotePath) else path.resolve()


def _tune_path(path: Path | RemotePath) -> str:
    """The path as Tune takes it: a local one whole; on a store, the path inside the filesystem
    passed beside it (a URI's query, the endpoint, would not survive Tune's own parsing)."""
    return path.path if isinstance(path, RemotePath) else str(path)


def _summary(results, options: dict, base: dict, experiment: Path | RemotePath) -> tuple[str, Path | RemotePath]:
    metric, mode = options["metric"], options["mode"]
    rows = []
    for result in results:
        last = result.metrics or {}
        params = {k: v for k, v in (result.config or {}).items()}
        rows.append((last.get(metric), last.get("env_steps_total"), params, last.get("run_dir", "-"),
                     "error" if result.error else "done"))
    known = [r for r in rows if r[0] is not None]
    rows = sorted(known, key=lambda r: r[0], reverse=mode == "max") + [r for r in rows if r[0] is None]
    lines = [f"| {metric} | env steps | settings | run | status |", "|---:|---:|---|---|---|"]
    for value, steps, params, run_dir, status in rows:
        shown = ", ".join(f"{k}={v}" for k, v in params.items())
        lines.append(f"| {'-' if value is None else f'{value:.4g}'} | {steps or '-'} | {shown} | {run_dir} | {status} |")
    if not known:
        raise RuntimeError(f"no trial of {experiment} reported {metric}")
    best: TrainConfig = config_from_args({**base, **rows[0][2]})
    best_path = experiment / "best_config.json"
    atomic_write_bytes(best_path, config_text(best).encode())
    return "\n".join(lines), best_path
