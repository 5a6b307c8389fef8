"""What each private torch or Ray API the trainer uses buys on this host, against its public fallback.

    .venv/bin/python bench/private_apis.py            # a few minutes
    .venv/bin/python bench/private_apis.py --quick    # about a minute: fewer repeats and rounds

Why it exists: a private API may change or vanish in any release, so each use sits behind a
public fallback (tests/test_private_apis.py) and stays only while what it buys is measurable here
(docs/BENCHMARKS.md, "Private torch and Ray APIs: what each buys"). Prints one markdown table per use:

1. Adam (training/adam.py, ``torch._fused_adam_``): a fresh process that builds the policy and
   makes one optimizer step (start-up, RSS, PSS), then its step time, with ``FusedAdam`` against
   ``torch.optim.Adam(fused=True)``; each run in its own subprocess, the two alternating.
2. The bfloat16 probe (training/hardware.py): what /proc/cpuinfo and torch's private probes say.
3. Ray's idle head services (ray_app/local_ray.py): PSS of the processes an embedded ``ray.init``
   starts, with and without stopping the autoscaler monitor and the API server; one subprocess per
   run, alternating.
4. tanh (training/fast_tanh.py): torch's tanh against NumPy's, with the backward on torch's
   internal ``tanh_backward`` or on public ops, alone and in a PPO-style step; in one process,
   the variants alternating call by call.

The host is noisy (2 shared cores): every figure is a median over repeats, and ratios compare
medians taken in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

NETS = {"policy": (260, (256, 256), 69), "cartpole": (4, (64, 64), 2)}  # actor; a critic of the same shape beside it


def mib(pid: int | str = "self") -> tuple[float, float]:
    """(RSS, PSS) of a process in MiB, from /proc/PID/smaps_rollup."""
    values = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Rss", "Pss"):
                values[key] = int(rest.split()[0]) / 1024
    return values["Rss"], values["Pss"]


def actor_critic(net: str, tanh):
    """The game's policy shape: two separate tanh MLPs (an actor and a one-output critic)."""
    from torch import nn

    n_in, hidden, n_out = NETS[net]

    def mlp(out):
        layers, width = [], n_in
        for h in hidden:
            layers += [nn.Linear(width, h), tanh()]
            width = h
        return nn.Sequential(*layers, nn.Linear(width, out))

    return mlp(n_out), mlp(1)


def cpu_seconds() -> tuple[float, float, float, float]:
    """(busy CPU seconds of the whole machine, steal seconds, this process's and its finished
    children's CPU seconds, wall time): what ``other_load`` compares."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in f.readline().split()[1:9])
    hz, t = os.sysconf("SC_CLK_TCK"), os.times()
    return ((user + nice + system + irq + softirq) / hz, steal / hz,
            t.user + t.system + t.children_user + t.children_system, time.time())


def other_load(since: tuple) -> str:
    """How busy the rest of the machine was since ``since`` (a ``cpu_seconds()``): the noise that
    the medians had to see through."""
    now = cpu_seconds()
    wall = now[3] - since[3]
    others = (now[0] - since[0]) - (now[2] - since[2])
    steal = (now[1] - since[1]) / wall
    return f"other processes kept {max(others, 0) / wall:.2f} cores busy meanwhile, steal {steal:.2f}"


def run_child(*args: str) -> dict:
    """This script in a fresh interpreter; its result is the last stdout line starting "RESULT "."""
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", *args], capture_output=True,
                         text=True, timeout=600)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        raise RuntimeError(f"child {args} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


# ------------------------------------------------------------------ 1. Adam


def child_adam(variant: str, net: str, spawned_at: float, steps: int) -> dict:
    """Import torch, build ``net``, make one optimizer step (what a learner does on start-up),
    then time ``steps`` more on the same gradients."""
    import torch
    from torch import nn

    torch.set_num_threads(1)
    from training.adam import Adam, FusedAdam

    actor, critic = actor_critic(net, nn.Tanh)
    params = [*actor.parameters(), *critic.parameters()]
    x = torch.randn(64, NETS[net][0])
    (actor(x).logsumexp(-1).sum() + critic(x).sum()).backward()
    start = time.perf_counter()
    if variant == "ours":
        opt = Adam(params, lr=3e-4, eps=1e-5)
        assert isinstance(opt, FusedAdam), "the private path is not taken on this torch"
    else:
        opt = torch.optim.Adam(params, lr=3e-4, eps=1e-5, fused=True)
    opt.step()
    first_s = time.perf_counter() - start
    ready_s = time.time() - spawned_at
    rss, pss = mib()
    times = []
    for i in range(steps + 20):  # 20 warm-up steps
        t = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - t)
    return dict(first_s=first_s, ready_s=ready_s, rss=rss, pss=pss, step_us=statistics.median(times[20:]) * 1e6,
                params=sum(p.numel() for p in params), dynamo="torch._dynamo" in sys.modules)


def bench_adam(args) -> None:
    runs, since = {(v, n): [] for v in ("ours", "torch") for n in NETS}, cpu_seconds()
    for _ in range(args.repeats):
        for net in NETS:
            for variant in ("ours", "torch"):
                runs[variant, net].append(run_child("adam", variant, net, repr(time.time()), str(args.adam_steps)))
    med = lambda v, n, k: statistics.median(r[k] for r in runs[v, n])  # noqa: E731
    print(f"\n### 1. Adam: FusedAdam (torch._fused_adam_) vs torch.optim.Adam(fused=True)\n\n"
          f"Fresh process per run (1 torch thread), {args.repeats} runs each, alternating; medians. "
          f"Start-up: the policy net ({runs['ours', 'policy'][0]['params']:,} parameters, "
          f"260->256->256->69 + critic); \"ready\" is spawn to first step done, RSS/PSS right after it; step(): "
          f"median of {args.adam_steps:,} steps per run; {other_load(since)}.\n")
    print("| | FusedAdam | torch.optim.Adam(fused) | torch / ours |\n|---|---:|---:|---:|")
    for label, key, scale, fmt in (("process spawn to first step done, s", "ready_s", 1, ".2f"),
                                   ("first Adam() + step(), ms", "first_s", 1e3, ",.0f"),
                                   ("RSS after it, MiB", "rss", 1, ",.0f"), ("PSS after it, MiB", "pss", 1, ",.0f")):
        a, b = med("ours", "policy", key) * scale, med("torch", "policy", key) * scale
        print(f"| {label} | {a:{fmt}} | {b:{fmt}} | {b / a:.2f} |")
    dyn = [any(r["dynamo"] for r in runs[v, "policy"]) for v in ("ours", "torch")]
    print(f"| imports torch._dynamo | {'yes' if dyn[0] else 'no'} | {'yes' if dyn[1] else 'no'} | |")
    for net in NETS:
        n_in, hidden, n_out = NETS[net]
        shape = "->".join(map(str, (n_in, *hidden, n_out)))
        a, b = med("ours", net, "step_us"), med("torch", net, "step_us")
        print(f"| step(), {shape} + critic ({runs['ours', net][0]['params']:,} params), us | {a:,.0f} | {b:,.0f} "
              f"| {b / a:.2f} |")


# ------------------------------------------------------------------ 2. bfloat16 probe


def bench_bfloat16_probe() -> None:
    import torch

    from training.hardware import cpu_flags, native_bfloat16

    flags = cpu_flags()
    private = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    yes = lambda b: "yes" if b else "no"  # noqa: E731
    print("\n### 2. bfloat16 probe: /proc/cpuinfo vs torch.cpu's private probes\n")
    print("| source | amx_tile | avx512_bf16 | native bfloat16 |\n|---|---|---|---|")
    print(f"| /proc/cpuinfo (training/hardware.py) | {yes('amx_tile' in flags)} | {yes('avx512_bf16' in flags)} "
          f"| {yes(native_bfloat16('cpu'))} |")
    if all(private):
        amx, bf16 = (bool(p()) for p in private)
        print(f"| torch.cpu._is_amx_tile_supported / _is_avx512_bf16_supported | {yes(amx)} | {yes(bf16)} "
              f"| {yes(amx or bf16)} |")


# ------------------------------------------------------------------ 3. Ray's head services


def process_kind(cmdline: str) -> str:
    for needle, kind in (("gcs_server", "GCS"), ("raylet/raylet", "raylet"), ("log_monitor.py", "log monitor"),
                         ("autoscaler/_private/monitor.py", "autoscaler monitor"),
                         ("dashboard/dashboard.py", "API server"),
                         ("ray::DashboardAgent", "dashboard agent"), ("ray::RuntimeEnvAgent", "runtime-env agent"),
                         ("ray::IDLE", "idle workers")):
        if needle in cmdline:
            return kind
    return "other"


def child_ray(stop: bool, settle_s: float) -> dict:
    """An embedded Ray as ``ray_app.local_ray.start_local_ray`` starts it (or without its stop);
    after ``settle_s``, the PSS of every process it started, by kind."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # as ray_app/cli.py: loopback only
    os.environ.pop("RAY_ADDRESS", None)
    import psutil
    import ray

    from ray_app.local_ray import stop_unused_head_services

    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False)
    try:
        stopped = stop_unused_head_services() if stop else []
        time.sleep(settle_s)
        pss = {}
        for proc in psutil.Process().children(recursive=True):
            try:
                kind = process_kind(" ".join(proc.cmdline()))
                pss[kind] = pss.get(kind, 0.0) + mib(proc.pid)[1]
            except (psutil.Error, OSError):  # exited meanwhile
                pass
    finally:
        ray.shutdown()
    return dict(stopped=stopped, pss=pss)


def bench_ray(args) -> None:
    runs = {False: [], True: []}
    for _ in range(args.repeats):
        for stop in (False, True):
            runs[stop].append(run_child("ray", "stop" if stop else "keep", str(args.settle)))
    assert all(r["stopped"] == ["monitor", "dashboard"] for r in runs[True]), runs[True]
    kinds = sorted({k for rs in runs.values() for r in rs for k in r["pss"]},
                   key=lambda k: -statistics.median(r["pss"].get(k, 0) for r in runs[False]))
    med = lambda stop, k: statistics.median(r["pss"].get(k, 0.0) for r in runs[stop])  # noqa: E731
    total = {stop: [sum(r["pss"].values()) for r in runs[stop]] for stop in runs}
    print(f"\n### 3. Ray's head services: PSS of an embedded node's processes (MiB)\n\n"
          f"`ray.init(address=\"local\", num_cpus={os.cpu_count()}, include_dashboard=False)` in a fresh driver, "
          f"{args.settle:g} s after start-up; {args.repeats} runs each, alternating; medians (totals per run: "
          f"{', '.join(f'{t:,.0f}' for t in total[False])} / {', '.join(f'{t:,.0f}' for t in total[True])}).\n")
    print("| process | all kept (plain ray.init) | monitor and API server stopped |\n|---|---:|---:|")
    for kind in kinds:
        kept, stopped = med(False, kind), med(True, kind)
        print(f"| {kind} | {kept:,.0f} | {stopped:,.0f} |" if stopped else f"| {kind} | {kept:,.0f} | - |")
    a, b = statistics.median(total[False]), statistics.median(total[True])
    print(f"| **all of Ray's processes** | **{a:,.0f}** | **{b:,.0f}** (-{a - b:,.0f}, {b / a:.2f}x) |")


# ------------------------------------------------------------------ 4. tanh

TANH_VARIANTS = ("nn.Tanh", "NumPy Tanh (kernel bwd)", "NumPy Tanh (public bwd)")


def timed_ms(fn) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3


def use_backward(variant: str) -> None:
    """Point training.fast_tanh's backward at torch's internal kernel or at its public fallback."""
    import training.fast_tanh as fast_tanh

    fast_tanh._TANH_BACKWARD = None if variant.endswith("(public bwd)") else fast_tanh._aten_tanh_backward()


def bench_tanh_op(args) -> None:
    """tanh alone: forward + backward of each variant, and the two backwards by themselves."""
    import torch

    from training.fast_tanh import Tanh, _aten_tanh_backward, tanh_backward

    gen = torch.Generator().manual_seed(0)
    x32, g32 = torch.randn(4096, 256, generator=gen) * 2, torch.randn(4096, 256, generator=gen)
    kernel, rows, since = _aten_tanh_backward(), [], cpu_seconds()
    if kernel is None:
        print("\n### 4. tanh: this torch has no aten.tanh_backward; the public backward is all there is")
        return
    for dtype in (torch.float32, torch.bfloat16):
        x, g = x32.to(dtype).requires_grad_(), g32.to(dtype)
        y = torch.tanh(x.detach())
        for threads in (1, 2):
            torch.set_num_threads(threads)
            times = {name: [] for name in (*TANH_VARIANTS, "kernel", "public")}
            for _ in range(args.rounds):
                for name in TANH_VARIANTS:
                    use_backward(name)
                    tanh = torch.tanh if name == "nn.Tanh" else Tanh()
                    times[name].append(timed_ms(lambda: tanh(x).backward(g)))
                    x.grad = None
                times["kernel"].append(timed_ms(lambda: kernel(g, y)))
                use_backward("(public bwd)")
                times["public"].append(timed_ms(lambda: tanh_backward(g, y)))
            m = [statistics.median(times[name]) for name in (*TANH_VARIANTS, "kernel", "public")]
            rows.append(f"| {str(dtype).removeprefix('torch.')} | {threads} | {m[0]:.2f} | {m[1]:.2f} | {m[2]:.2f} "
                        f"| {m[0] / m[1]:.2f} | {m[3]:.2f} | {m[4]:.2f} | {m[4] / m[3]:.2f} |")
    use_backward("(kernel bwd)")
    print(f"\n### 4. tanh: torch's kernel vs NumPy's (training/fast_tanh.py), backward on aten.tanh_backward "
          f"vs public ops\n\nA 4,096 x 256 tensor, forward + backward, ms; {args.rounds} rounds, the variants "
          f"alternating call by call; medians; {other_load(since)}. \"bwd\": the backward alone.\n")
    print("| dtype | threads | " + " | ".join(TANH_VARIANTS) + " | nn.Tanh / NumPy | bwd: kernel | bwd: public "
          "| public / kernel |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


def bench_ppo_step(args) -> None:
    """One PPO-style minibatch step of the 256,256 actor-critic (forward, losses, backward, clip,
    Adam) with each tanh variant."""
    import torch
    from torch import nn

    from training.adam import Adam
    from training.fast_tanh import Tanh

    n, gen = 4096, torch.Generator().manual_seed(1)
    obs, act = torch.randn(n, 260, generator=gen), torch.randint(0, 69, (n,), generator=gen)
    old_logp, adv, ret = torch.full((n,), -4.2), torch.randn(n, generator=gen), torch.randn(n, generator=gen)
    torch.manual_seed(0)
    nets = {"torch": actor_critic("policy", nn.Tanh), "NumPy": actor_critic("policy", Tanh)}
    nets["NumPy"][0].load_state_dict(nets["torch"][0].state_dict())
    nets["NumPy"][1].load_state_dict(nets["torch"][1].state_dict())
    params = {k: [*a.parameters(), *c.parameters()] for k, (a, c) in nets.items()}
    opts = {k: Adam(params[k], lr=3e-4, eps=1e-5) for k in nets}

    def step(variant: str, amp: bool) -> None:
        use_backward(variant)  # the two NumPy variants share one model: only the backward differs
        key = "torch" if variant == "nn.Tanh" else "NumPy"
        (actor, critic), opt = nets[key], opts[key]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            logits, value = actor(obs), critic(obs).squeeze(-1)
        logp_all = logits.float().log_softmax(-1)
        ratio = (logp_all.gather(1, act[:, None]).squeeze(1) - old_logp).exp()
        pg = -torch.min(ratio * adv, ratio.clamp(0.8, 1.2) * adv).mean()
        entropy = -(logp_all.exp() * logp_all).sum(-1).mean()
        loss = pg + 0.5 * (value.float() - ret).pow(2).mean() - 0.01 * entropy
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params[key], 0.5)
        opt.step()

    rows, since = [], cpu_seconds()
    for amp in (False, True):
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for name in TANH_VARIANTS:  # warm-up: oneDNN's kernels for these shapes
                step(name, amp)
            times = {name: [] for name in TANH_VARIANTS}
            for _ in range(args.rounds):
                for name in TANH_VARIANTS:
                    times[name].append(timed_ms(lambda: step(name, amp)))
            m = [statistics.median(times[name]) for name in TANH_VARIANTS]
            rows.append(f"| {'bfloat16 autocast' if amp else 'float32'} | {threads} | {m[0]:.1f} | {m[1]:.1f} "
                        f"| {m[2]:.1f} | {m[0] / m[1]:.2f} | {m[2] / m[1]:.3f} |")
    use_backward("(kernel bwd)")
    print(f"\nPPO-style minibatch step (forward, losses, backward, grad clip, Adam) of the 260->256,256->69 "
          f"actor-critic on {n:,} rows, ms; {args.rounds} rounds, the variants alternating step by step; medians; "
          f"{other_load(since)}.\n")
    print("| precision | threads | " + " | ".join(TANH_VARIANTS) + " | nn.Tanh / NumPy | public / kernel bwd |\n"
          "|---|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer repeats and rounds (a smoke run, noisier)")
    p.add_argument("--only", default="adam,bfloat16,ray,tanh", help="which uses to measure, comma-separated")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)  # a fresh-process measurement's arguments
    args = p.parse_args(argv)
    if args.child:
        kind, *rest = args.child
        if kind == "adam":
            result = child_adam(rest[0], rest[1], float(rest[2]), int(rest[3]))
        else:
            result = child_ray(rest[0] == "stop", float(rest[1]))
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    # repeats: fresh processes per configuration; rounds: in-process timings, one call per variant each
    args.repeats, args.adam_steps, args.settle = (2, 200, 2.0) if args.quick else (5, 1000, 5.0)
    args.rounds = 6 if args.quick else 30
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores")
    only = args.only.split(",")
    for name, fn in (("adam", lambda: bench_adam(args)), ("bfloat16", bench_bfloat16_probe),
                     ("ray", lambda: bench_ray(args)), ("tanh", lambda: bench_tanh_op(args)),
                     ("tanh", lambda: bench_ppo_step(args))):
        if name in only:
            fn()
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
