"""Recurrent policies: an LSTM between a policy's encoder and its decoder, and the state it carries.

A policy is recurrent when it declares a state: ``initial_state(batch_size, device) -> dict`` of
tensors with the batch on the first axis. It then follows PufferLib's ``LSTMWrapper`` convention:

- ``forward_eval(observations (B, ...), state)`` acts one step and writes the next state into the
  dict it was given (a runner's envs, one row each);
- ``forward(observations (B, TT, ...), state)`` trains over B sequences of TT steps from the
  state in the dict, and returns logits for the B * TT rows (batch-major) and values (B, TT).
  ``state["resets"]`` (B, TT, bool), which this trainer adds, zeroes a sequence's state before a
  step: the first step of an episode that began inside the sequence.

Runners carry each env's state across steps and rounds, zero it where an episode ends, and ship the
state every rollout started from (``training.rollout``); the learner replays each env column from
it (``Agent.forward`` with a state), so its log-probs and values match the runner's.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def episode_ends(terminals: np.ndarray, truncations: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Where a recurrent state must be zeroed after the step: an episode ended at it, or it was an
    emulated env's dummy reset step (``valid`` False), after which the next episode starts."""
    return np.asarray(terminals, bool) | np.asarray(truncations, bool) | ~np.asarray(valid, bool)


def sequence_resets(terminals: np.ndarray, truncations: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(T, N): True where the state is zeroed before step t, i.e. after step t - 1 ended an episode.
    Step 0 starts from the state the runner recorded, which is zeroed already."""
    ends = episode_ends(terminals, truncations, valid)
    resets = np.zeros_like(ends)
    resets[1:] = ends[:-1]
    return resets


class LSTMWrapper(nn.Module):
    """``policy.encode_observations`` -> an LSTM cell -> ``policy.decode_actions``, as PufferLib's
    ``pufferlib.models.LSTMWrapper`` (state keys ``lstm_h`` and ``lstm_c``). The encoder's output
    has ``input_size`` features; the decoder reads ``hidden_size``.

    Training steps the same ``LSTMCell`` through time rather than running ``nn.LSTM`` over the
    sequence, for two reasons: a state must be zeroed where an episode ends inside a sequence, which
    ``nn.LSTM`` cannot do; and the runner's one-step cell and the learner's sequence then do the
    same arithmetic, so the learner reproduces the runner's log-probs exactly.
    """

    def __init__(self, env, policy: nn.Module, input_size: int = 128, hidden_size: int = 128):
        super().__init__()
        self.policy = policy
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        self.is_continuous = getattr(policy, "is_continuous", False)
        self.cell = nn.LSTMCell(self.input_size, self.hidden_size)
        for name, param in self.cell.named_parameters():  # PufferLib's init ...
            if "bias" in name:
                nn.init.constant_(param, 0.0)
            else:
                nn.init.orthogonal_(param, 1.0)
        with torch.no_grad():  # ... but for a forget-gate bias of 1 (Jozefowicz et al., 2015): a
            # state then decays by 0.73 a step rather than 0.5, so a gradient still reaches a cue 15
            # steps back. The recall task was learned in 11-18 rounds by 6 of 6 runs, against 31-41
            # rounds by 3 of 6 with PufferLib's 0 (the rest not within 60).
            self.cell.bias_ih[self.hidden_size:2 * self.hidden_size] = 1.0

    def initial_state(self, batch_size: int, device=None) -> dict[str, torch.Tensor]:
        zeros = torch.zeros(batch_size, self.hidden_size, device=device)
        return {"lstm_h": zeros, "lstm_c": zeros.clone()}

    def forward_eval(self, observations: torch.Tensor, state: dict):
        hidden = self.policy.encode_observations(observations, state)
        h, c = self.cell(hidden, (state["lstm_h"], state["lstm_c"]))
        state["lstm_h"], state["lstm_c"] = h, c
        return self.policy.decode_actions(h)

    def forward(self, observations: torch.Tensor, state: dict):
        B, TT = observations.shape[:2]
        hidden = self.policy.encode_observations(observations.reshape(B * TT, *observations.shape[2:]), state)
        hidden = hidden.reshape(B, TT, self.input_size)
        h, c = state["lstm_h"], state["lstm_c"]
        resets = state.get("resets")
        outputs = []
        for t in range(TT):
            if resets is not None:
                keep = ~resets[:, t:t + 1]
                h, c = torch.where(keep, h, 0.0), torch.where(keep, c, 0.0)
            h, c = self.cell(hidden[:, t], (h, c))
            outputs.append(h)
        state["lstm_h"], state["lstm_c"] = h.detach(), c.detach()
        logits, values = self.policy.decode_actions(torch.stack(outputs, 1).reshape(B * TT, self.hidden_size))
        return logits, values.reshape(B, TT)


def wrap_lstm(module: nn.Module, env, hidden_size: int) -> LSTMWrapper:
    """``module`` (built with ``core_size=hidden_size``) behind an LSTM of ``hidden_size`` units;
    the LSTM's input is whatever ``module.encode_observations`` gives for one observation. The
    sample is an all-zero observation as the policy receives them: in the transport space
    (``env.single_observation_space``, its dtype; PufferLib's emulated bytes for a Dict, Tuple or
    Discrete observation, which decode to zeros), not the native one, so a CNN sees a blank image
    and a structured encoder (``training.encoders``) its parts; a value outside a Discrete's range
    one-hots to zeros, so a Discrete with ``start`` > 0 takes the zero sample too."""
    space = env.single_observation_space
    with torch.no_grad():
        sample = torch.as_tensor(np.zeros((1, *space.shape), dtype=space.dtype))
        input_size = module.encode_observations(sample, None).reshape(1, -1).shape[1]
    return LSTMWrapper(env, module, input_size, hidden_size)
