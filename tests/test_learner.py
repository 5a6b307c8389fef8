"""The learner core without Ray: V-trace correction in overlapped mode, exact state round-trips."""

import time

import numpy as np
import torch

from training.config import config_from_args
from training.envs.registry import make_vecenv
import training.learner as learner_module
from training.learner import PPOLearner
from training.agent import build_agent, set_weights
from training.envs.env_info import EnvInfo
from training.advantages import compute_vtrace
from training.ppo import ppo_update
from training.rollout import RolloutCollector


def setup(seed=0, **flags):
    cfg = config_from_args({"env": "gym:CartPole-v1", "total_env_steps": 4096, "window_env_steps": 1024,
                            "ppo_num_envs": 4, "ppo_num_workers": 1, "ppo_rollout_steps": 32,
                            "ppo_update_epochs": 2, "ppo_num_minibatches": 2, "seed": seed, **flags})
    env = make_vecenv(cfg.env, 4, seed=0)
    learner = PPOLearner(cfg, EnvInfo.of(env))
    behaviour = build_agent(learner.policy_spec, EnvInfo.of(env))
    set_weights(behaviour, learner.weights())
    return cfg, env, learner, behaviour


def test_off_policy_update_equals_on_policy_when_weights_match():
    """With more minibatches than envs (8 vs 4), V-trace takes a re-evaluation pass over the batch
    before the update (no in-pass targets): with the behaviour's weights every ratio is exactly 1
    and V-trace reduces to GAE, so the update is the on-policy one."""
    _, env, a, behaviour = setup(ppo_num_minibatches=8)
    batch, _ = RolloutCollector(env, 32, 0, policy=behaviour).collect()
    _, _, b, _ = setup(ppo_num_minibatches=8)
    ma = a.learn([batch], off_policy=False)
    mb = b.learn([batch], off_policy=True)
    for key in ("policy_loss", "value_loss", "approx_kl"):
        assert np.isclose(ma[key], mb[key], rtol=1e-5, atol=1e-7), key
    for k, v in a.weights().items():
        assert np.allclose(v, b.weights()[k], atol=1e-6)


def _vtrace_reference(learner, batch):
    """V-trace targets of the whole batch under the learner's current weights, (T * N,) each."""
    T, N = batch["rewards"].shape
    flat = lambda x: torch.as_tensor(np.ascontiguousarray(x).reshape(T * N, *x.shape[2:]))  # noqa: E731
    logprob, value = learner._evaluate(flat(batch["obs"]).float(), flat(batch["actions"]), T * N)
    ratios = torch.exp(logprob - flat(batch["logprobs"])).numpy().reshape(T, N)
    values = value.numpy().reshape(T, N)
    adv, ret = compute_vtrace(batch["rewards"], values, batch["terminals"], batch["truncations"], batch["valid"],
                              batch["bootstrap_values"], batch["last_values"], ratios, learner.cfg.ppo_gamma,
                              learner.cfg.ppo_gae_lambda)
    return adv.reshape(-1), ret.reshape(-1), values.reshape(-1)


def _learn_capturing_batch(learner, batch, monkeypatch):
    seen = {}

    def spy(policy, optimizer, b, **kw):
        seen.update(groups=kw["in_pass_targets"][0], batch=b)
        return ppo_update(policy, optimizer, b, **kw)

    monkeypatch.setattr(learner_module, "ppo_update", spy)
    learner.learn([batch], off_policy=True)
    return seen["batch"], seen["groups"]


def test_in_pass_vtrace_equals_a_reevaluation_pass_when_the_weights_stay(monkeypatch):
    """Overlapped mode with envs divisible into minibatches computes V-trace in the first epoch,
    one env-column minibatch at a time, from that minibatch's own forward pass. With a zero
    learning rate nothing moves, so the targets must be those of a whole-batch re-evaluation; the
    data is one version stale, so the ratios are not 1 and the correction is exercised."""
    _, env, learner, behaviour = setup()
    stale, _ = RolloutCollector(env, 32, 0, policy=behaviour).collect()
    learner.learn([stale])  # the learner moves on; `stale` now lags one version
    ref_adv, ref_ret, ref_val = _vtrace_reference(learner, stale)
    assert not np.allclose(ref_adv, _vtrace_reference(setup()[2], stale)[0]), "the correction must matter here"
    learner.learning_rate = lambda: 0.0
    b, groups = _learn_capturing_batch(learner, stale, monkeypatch)
    assert sorted(np.concatenate(groups).tolist()) == list(range(32 * 4)), "every row in exactly one minibatch"
    np.testing.assert_allclose(b["advantages"].numpy(), ref_adv, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b["returns"].numpy(), ref_ret, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b["values"].numpy(), ref_val, rtol=1e-5, atol=1e-6)


def test_overlapped_update_clips_around_the_current_policy_and_weights_rows_by_the_lag(monkeypatch):
    """The decoupled objective: the old log-probs of the PPO ratio are the current policy's (the
    proximal policy, from each first-epoch pass), not the stale behaviour policy's, and each row's
    importance weight is pi_prox / mu truncated at 1. With a zero learning rate both equal a
    whole-batch re-evaluation's; the data is one version stale, so the weights are not all 1."""
    _, env, learner, behaviour = setup()
    stale, _ = RolloutCollector(env, 32, 0, policy=behaviour).collect()
    learner.learn([stale])
    T, N = stale["rewards"].shape
    flat = lambda x: torch.as_tensor(np.ascontiguousarray(x).reshape(T * N, *x.shape[2:]))  # noqa: E731
    prox, _ = learner._evaluate(flat(stale["obs"]).float(), flat(stale["actions"]), T * N)
    behaviour_logprobs = flat(stale["logprobs"])
    learner.learning_rate = lambda: 0.0
    b, _ = _learn_capturing_batch(learner, stale, monkeypatch)
    np.testing.assert_allclose(b["logprobs"].numpy(), prox.numpy(), rtol=1e-5, atol=1e-6)
    expected = np.minimum(np.exp(prox.numpy() - behaviour_logprobs.numpy()), 1.0)
    np.testing.assert_allclose(b["is_weights"].numpy(), expected, rtol=1e-5, atol=1e-6)
    assert (expected < 0.999).any() and np.isclose(expected, 1.0).any(), "stale rows on both sides of 1"
    np.testing.assert_array_equal(stale["logprobs"].reshape(-1), behaviour_logprobs.numpy())  # the rollout is untouched


def test_in_pass_vtrace_uses_the_weights_each_minibatch_sees(monkeypatch):
    """With a learning rate, the first minibatch's targets are the re-evaluation's (nothing has
    moved yet) and the second's come from the weights after the first step."""
    _, env, learner, behaviour = setup()
    stale, _ = RolloutCollector(env, 32, 0, policy=behaviour).collect()
    learner.learn([stale])
    ref_adv, _, _ = _vtrace_reference(learner, stale)
    b, groups = _learn_capturing_batch(learner, stale, monkeypatch)
    first, second = groups
    np.testing.assert_allclose(b["advantages"].numpy()[first], ref_adv[first], rtol=1e-5, atol=1e-6)
    assert not np.allclose(b["advantages"].numpy()[second], ref_adv[second], rtol=1e-5, atol=1e-6)


def test_off_policy_update_ignores_the_runners_values():
    """Overlapped mode: runners skip the critic (values arrive as zeros) because the learner
    re-evaluates every value with its current weights; the update must not depend on them."""
    _, env, a, behaviour = setup()
    batch, _ = RolloutCollector(env, 32, 0, policy=behaviour).collect()
    zeroed = {**batch, "values": np.zeros_like(batch["values"])}
    _, _, b, _ = setup()
    ma, mb = a.learn([batch], off_policy=True), b.learn([zeroed], off_policy=True)
    for key in ("policy_loss", "value_loss", "approx_kl", "explained_variance"):
        assert ma[key] == mb[key], key
    for k, v in a.weights().items():
        np.testing.assert_array_equal(v, b.weights()[k])


def test_off_policy_correction_differs_for_stale_data():
    _, env, learner, behaviour = setup()
    stale, _ = RolloutCollector(env, 32, 0, policy=behaviour).collect()
    learner.learn([stale])  # the learner moves on; `stale` now lags one version
    _, _, twin, _ = setup()
    twin.load_state_dict(learner.state_dict())
    on = learner.learn([stale], off_policy=False)
    off = twin.learn([stale], off_policy=True)
    assert not np.isclose(on["value_loss"], off["value_loss"]), "V-trace must use the current policy's ratios"


def test_state_dict_round_trip_gives_identical_updates():
    _, env, a, behaviour = setup()
    batch, _ = RolloutCollector(env, 32, 0, policy=behaviour).collect()
    a.learn([batch])
    state = a.state_dict()
    _, _, b, _ = setup(seed=7)  # different init and RNG: everything must come from the state
    b.load_state_dict(state)
    torch.manual_seed(123)
    ma = a.learn([batch])
    mb = b.learn([batch])
    assert ma == mb


def test_bfloat16_update_tracks_float32_and_keeps_float32_state():
    """bfloat16 autocast changes the matmuls' rounding only: the first update's losses (computed
    before any weight moves) match float32 closely, weights and Adam state stay float32."""
    _, env, a, behaviour = setup()
    batch, _ = RolloutCollector(env, 32, 0, policy=behaviour).collect()
    _, _, b, _ = setup()
    b.amp_dtype = torch.bfloat16
    ma, mb = a.learn([batch]), b.learn([batch])
    for key in ("policy_loss", "value_loss", "entropy"):
        assert np.isclose(ma[key], mb[key], rtol=0.05, atol=0.02), (key, ma[key], mb[key])
    moved = False
    for k, v in b.weights().items():
        assert v.dtype == np.float32, k
        assert np.allclose(v, a.weights()[k], atol=0.02), k  # same direction of travel
        moved |= not np.array_equal(v, a.weights()[k])
    assert moved, "bfloat16 rounding must have changed something, or autocast was not on"
    assert all(s["exp_avg"].dtype == torch.float32 for s in b.optimizer.state_dict()["state"].values())


def test_precision_choice(monkeypatch):
    import training.learner as learner_mod

    assert learner_mod.resolve_precision("float32", "cpu") is None
    assert learner_mod.resolve_precision("bfloat16", "cpu") is torch.bfloat16
    monkeypatch.setattr(learner_mod, "native_bfloat16", lambda device: False)
    assert learner_mod.resolve_precision("auto", "cpu") is None
    monkeypatch.setattr(learner_mod, "native_bfloat16", lambda device: True)
    assert learner_mod.resolve_precision("auto", "cpu") is torch.bfloat16


def test_torch_threads_outside_ray_do_not_start_ray():
    """Actor classes used directly (tests, notebooks) get one thread and must not start a Ray
    instance: ray.get_runtime_context() would, as a side effect."""
    import ray
    import torch

    from ray_app.placement import set_torch_threads

    assert not ray.is_initialized()
    before = torch.get_num_threads()
    try:
        assert set_torch_threads() == 1 and torch.get_num_threads() == 1
        assert not ray.is_initialized()
    finally:
        torch.set_num_threads(before)


def test_core_share_narrows_threads_until_sampling_is_done():
    """Overlapped mode on shared cores: one thread while the runners sample, all threads from the
    first check after their rollouts are in, and back to all threads however it ends. With the
    policy given, checks also run inside a minibatch (before each submodule's forward, as each
    gradient is accumulated), so the freed core is not left idle until the next minibatch. The
    thread count must not change the update."""
    from ray_app.placement import CoreShare

    _, env, a, behaviour = setup()
    batch, _ = RolloutCollector(env, 32, 0, policy=behaviour).collect()
    _, _, b, _ = setup()
    before = torch.get_num_threads()
    seen, polls = [], []
    try:
        torch.set_num_threads(2)

        def sampling_done():  # the runners finish at the learner's third check: inside minibatch 1
            polls.append(torch.get_num_threads())
            return len(polls) >= 3

        share = CoreShare(sampling_done, threads_while_sampling=1, threads=2, module=a.policy)

        def before_minibatch():
            share.poll()
            seen.append(torch.get_num_threads())

        ma = a.learn([batch], off_policy=True, before_minibatch=before_minibatch)
        share.release()
        # 2 epochs x 2 minibatches: between minibatches alone, the release would come at the third
        assert polls == [1, 1, 1] and seen == [1, 2, 2, 2]  # no check once done: the hooks are gone
        assert torch.get_num_threads() == 2
        mb = b.learn([batch], off_policy=True)
        assert ma == mb
        for k, v in a.weights().items():
            np.testing.assert_array_equal(v, b.weights()[k])

        never = CoreShare(lambda: False, threads_while_sampling=1, threads=2, module=a.policy)
        assert torch.get_num_threads() == 1
        never.release()  # an update that ends (or fails) while the runners still sample
        assert torch.get_num_threads() == 2
        a.learn([batch], off_policy=True)  # released: no hook of its left on the policy
        CoreShare(lambda: False, threads_while_sampling=2, threads=2)  # nothing to share: no change
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_sampling_watch_sees_the_rollouts_arrive():
    """``CoreShare``'s check is a flag a background thread sets once every reference exists; an
    update that ends first closes the watch, and its thread ends."""
    import threading

    import ray

    from ray_app.placement import SamplingWatch

    ray.init(address="local", num_cpus=1, include_dashboard=False, configure_logging=False)
    try:
        gate = ray.put(None)

        @ray.remote
        def sample(seconds):
            time.sleep(seconds)
            return 1

        slow = sample.remote(1.0)
        watch = SamplingWatch([gate, slow])
        assert not watch()
        ray.get(slow)
        deadline = time.time() + 5
        while not watch() and time.time() < deadline:
            time.sleep(0.01)
        assert watch()

        never = SamplingWatch([sample.remote(60.0)])
        never.close()
        never._thread.join(timeout=5)
        assert not never._thread.is_alive() and not never()
        assert not [t for t in threading.enumerate() if t.name == "sampling-watch"]
    finally:
        ray.shutdown()


def test_teacher_driven_batch_trains_by_cloning_only():
    """A batch the teacher played has no policy-gradient term and no V-trace (the actions are not
    any policy version's): with the distillation weight at 0 only the critic moves, and overlapped
    mode changes nothing."""

    cfg, env, a, behaviour = setup()
    batch, _ = RolloutCollector(env, 32, 0, policy=behaviour).collect()
    # the teacher's actions, not the ones the recorded log-probs belong to (V-trace ratios != 1)
    batch["actions"] = 1 - batch["actions"]
    batch["driven"] = True
    _, _, b, _ = setup()
    actor_before = {k: v for k, v in a.weights().items() if k.startswith("policy.actor")}
    metrics = a.learn([batch], off_policy=False)
    b.learn([batch], off_policy=True)
    assert metrics["policy_loss"] is None and metrics["approx_kl"] is None  # not the acting policy's ratios
    assert np.isfinite(metrics["value_loss"])
    for k, v in a.weights().items():
        np.testing.assert_array_equal(v, b.weights()[k], err_msg=k)
        if k.startswith("policy.actor"):  # CartPole has no teacher: distill weight 0, pg term off
            np.testing.assert_array_equal(v, actor_before[k], err_msg=k)
    assert any(not np.array_equal(v, setup()[2].weights()[k]) for k, v in a.weights().items() if k.startswith("policy.critic"))


def test_rollin_steps_train_the_critic_but_not_the_policy_gradient():
    """Steps the teacher played in a roll-in (``teacher_played``) are left out of the policy terms:
    a round the teacher played throughout leaves the actor as it was (no distillation without a
    teacher) while the critic learns, and a round half of it moves both."""
    _, env, a, behaviour = setup()
    batch, _ = RolloutCollector(env, 32, 0, policy=behaviour).collect()
    batch["teacher_played"] = np.ones_like(batch["valid"])
    actor_before = {k: v for k, v in a.weights().items() if k.startswith("policy.actor")}
    metrics = a.learn([batch])
    assert metrics["rollin_share"] == 1.0
    for k, v in a.weights().items():
        if k.startswith("policy.actor"):
            np.testing.assert_array_equal(v, actor_before[k], err_msg=k)
        else:
            assert not np.array_equal(v, behaviour.state_dict()[k].numpy()), k
    _, _, b, _ = setup()
    batch["teacher_played"][:16] = False
    assert b.learn([batch])["rollin_share"] == 0.5
    assert any(not np.array_equal(v, actor_before[k]) for k, v in b.weights().items() if k.startswith("policy.actor"))


def test_learn_uses_a_read_only_rollout_as_is():
    """One runner's rollout arrives as read-only object-store arrays; the learner shares them
    (no copy), so it must neither write into them nor warn about them, and it learns exactly what
    it learns from a writable copy."""
    import warnings

    _, env, a, behaviour = setup()
    batch, _ = RolloutCollector(env, 32, 0, policy=behaviour).collect()
    frozen = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in batch.items()}
    for v in frozen.values():
        if isinstance(v, np.ndarray):
            v.flags.writeable = False
    before = {k: v.copy() for k, v in frozen.items() if isinstance(v, np.ndarray)}
    _, _, b, _ = setup()
    for off_policy in (False, True):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            mb = b.learn([frozen], off_policy=off_policy)
        ma = a.learn([batch], off_policy=off_policy)
        assert ma == mb
    for k, v in before.items():
        np.testing.assert_array_equal(frozen[k], v)


def test_a_residual_policy_runs_its_bot_once_per_round(monkeypatch):
    """The prior bot's actions are computed once for the round's batch and handed to every
    minibatch's forward pass (not recomputed for each of epochs x minibatches)."""
    cfg = config_from_args({"env": "prospector", "total_env_steps": 4096, "window_env_steps": 1024,
                            "ppo_num_envs": 4, "ppo_num_workers": 1, "ppo_rollout_steps": 32,
                            "ppo_update_epochs": 2, "ppo_num_minibatches": 2, "policy_hidden": "16"})
    assert cfg.policy_prior == "cautious_scanner"  # the preset's
    env = make_vecenv(cfg.env, 4, seed=0)
    learner = PPOLearner(cfg, EnvInfo.of(env))
    behaviour = build_agent(learner.policy_spec, EnvInfo.of(env))
    set_weights(behaviour, learner.weights())
    batch, _ = RolloutCollector(env, 32, 0, policy=behaviour).collect()
    calls = []
    real = learner.policy.prior
    monkeypatch.setattr(learner.policy, "prior", lambda obs: calls.append(len(obs)) or real(obs))
    assert np.isfinite(learner.learn([batch])["policy_loss"])
    assert calls == [128]  # 32 steps x 4 envs, once
