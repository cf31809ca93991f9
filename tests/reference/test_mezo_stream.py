"""MeZO's exact direction stream (``optimizer.direction_stream=mezo``) against MeZO's own trainer.

``MezoTrainer`` below transcribes princeton-nlp/MeZO large_models/trainer.py, class OurTrainer, methods
``zo_perturb_parameters``, ``zo_step`` and ``zo_update`` (HF Trainer stripped away), and run.py's
``set_seed`` (``np.random.seed(args.seed)``; HF Trainer's __init__ seeds NumPy again with the same seed).
A MeZO run and a zobench run with the same seed must perturb along the same z, so they measure the same
projected gradients and take the same steps.
"""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from tests.conftest import compose_cfg
from tests.tiny import load_tiny
from zobench.errors import ConfigError
from zobench.optim import build_optimizer
from zobench.optim.directions import MezoSeeds
from zobench.validate import validate_optimizer


class MezoTrainer:
    """MeZO large_models/trainer.py OurTrainer.zo_perturb_parameters / zo_step / zo_update, transcribed.

    ``_get_learning_rate()`` is the constant lr (MeZO runs a constant schedule); ``zo_forward`` is the
    closure ``loss_fn`` (the model is in eval mode, as zo_forward sets it)."""

    def __init__(self, model, lr: float, zo_eps: float, weight_decay: float = 0.0):
        self.model, self.lr, self.zo_eps, self.weight_decay = model, lr, zo_eps, weight_decay

    def zo_perturb_parameters(self, random_seed=None, scaling_factor=1):
        torch.manual_seed(random_seed if random_seed is not None else self.zo_random_seed)
        for name, param in self.named_parameters_to_optim:
            z = torch.normal(mean=0, std=1, size=param.data.size(), device=param.data.device, dtype=param.data.dtype)
            param.data = param.data + scaling_factor * z * self.zo_eps

    def zo_step(self, loss_fn):
        self.named_parameters_to_optim = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        self.zo_random_seed = np.random.randint(1000000000)
        self.zo_perturb_parameters(scaling_factor=1)
        loss1 = loss_fn()
        self.zo_perturb_parameters(scaling_factor=-2)
        loss2 = loss_fn()
        self.projected_grad = ((loss1 - loss2) / (2 * self.zo_eps)).item()
        self.zo_perturb_parameters(scaling_factor=1)
        return loss1

    def zo_update(self):
        torch.manual_seed(self.zo_random_seed)
        for name, param in self.named_parameters_to_optim:
            z = torch.normal(mean=0, std=1, size=param.data.size(), device=param.data.device, dtype=param.data.dtype)
            if "bias" not in name and "layer_norm" not in name and "layernorm" not in name:
                param.data = param.data - self.lr * (self.projected_grad * z + self.weight_decay * param.data)
            else:
                param.data = param.data - self.lr * (self.projected_grad * z)


@contextlib.contextmanager
def global_rngs():
    """MeZO seeds NumPy's and torch's global generators: give them back to the other tests untouched."""
    state = np.random.get_state()
    with torch.random.fork_rng():
        try:
            yield
        finally:
            np.random.set_state(state)


def tiny_pair(dtype):
    """Two copies of the same tiny OPT (tied embeddings, biases, layer norms) and a fixed batch."""
    model_a, _ = load_tiny("tiny-opt")
    model_b, _ = load_tiny("tiny-opt")
    model_a, model_b = model_a.to(dtype), model_b.to(dtype)
    ids = torch.randint(4, 200, (4, 12), generator=torch.Generator().manual_seed(0))

    def loss_of(model):  # next-token cross-entropy in the model's dtype (HF's own loss upcasts to fp32 only)
        def loss():
            logits = model(input_ids=ids).logits[:, :-1]
            return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        return loss

    return model_a, model_b, loss_of


def mezo_run(model, loss_fn, seed, steps, lr, eps, weight_decay=0.0):
    """MeZO's loop: set_seed(seed), then zo_step + zo_update per step; the projected gradients."""
    trainer, grads = MezoTrainer(model, lr, eps, weight_decay), []
    with global_rngs(), torch.no_grad():
        np.random.seed(seed)  # run.py set_seed / HF Trainer.__init__ set_seed
        for _ in range(steps):
            trainer.zo_step(loss_fn)
            grads.append(trainer.projected_grad)
            trainer.zo_update()
    return grads


def zobench_run(model, loss_fn, seed, steps, lr, eps, *overrides):
    cfg = compose_cfg("optimizer=zo_sgd", "optimizer.direction_stream=mezo", f"optimizer.lr={lr}",
                      f"optimizer.eps={eps}", *overrides)
    validate_optimizer(cfg.optimizer)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    opt = build_optimizer(cfg.optimizer, named, steps, seed)
    with torch.no_grad():
        for _ in range(steps):
            opt.step(loss_fn)
    return [coeffs[0] for _, _, coeffs, _ in opt.seed_log], opt


def test_step_seeds_are_mezos_numpy_sequence():
    """MeZO large_models/trainer.py OurTrainer.zo_step: ``np.random.randint(1000000000)`` per step after
    run.py ``set_seed(args.seed)``; MezoSeeds gives the same sequence without touching NumPy's global state,
    and replays it for an earlier step (a resumed run)."""
    with global_rngs():
        np.random.seed(42)
        expected = [np.random.randint(1000000000) for _ in range(6)]
    seeds = MezoSeeds(42)
    assert [seeds.at(t) for t in range(6)] == expected
    assert seeds.at(2) == expected[2] and seeds.at(5) == expected[5]


@pytest.mark.parametrize("seed", [0, 42])
def test_projected_gradients_and_weights_equal_mezos_for_the_same_seed(seed):
    """MeZO large_models/trainer.py OurTrainer.zo_step / zo_update on a tiny OPT (float64): with
    direction_stream=mezo, zobench's ZO-SGD measures MeZO's projected gradient at every step and ends at
    MeZO's weights; the default chunked stream draws other directions."""
    model_a, model_b, loss_of = tiny_pair(torch.float64)
    steps, lr, eps = 6, 1e-3, 1e-3
    ref = mezo_run(model_a, loss_of(model_a), seed, steps, lr, eps)
    ours, _ = zobench_run(model_b, loss_of(model_b), seed, steps, lr, eps)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-12)
    for (name, a), (_, b) in zip(model_a.named_parameters(), model_b.named_parameters()):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-12, msg=name)
    model_c = tiny_pair(torch.float64)[0]
    chunked, _ = zobench_run(model_c, loss_of(model_c), seed, 1, lr, eps, "optimizer.direction_stream=chunked")
    assert abs(chunked[0] - ref[0]) > 1e-3 * abs(ref[0])


def test_fp32_projected_gradients_follow_mezos():
    """MeZO large_models/trainer.py OurTrainer.zo_step in fp32, MeZO's run dtype for small models: the same z,
    so the projected gradients agree up to float rounding of the in-place vs out-of-place perturbations."""
    model_a, model_b, loss_of = tiny_pair(torch.float32)
    ref = mezo_run(model_a, loss_of(model_a), 0, 3, 1e-4, 1e-3)
    ours, _ = zobench_run(model_b, loss_of(model_b), 0, 3, 1e-4, 1e-3)
    # one fp32 ulp of a loss near 5 (4.8e-7) over 2ε bounds the difference: 2.4e-4 (measured: ~1e-7)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2.5e-4)


def test_weight_decay_follows_mezos_update():
    """MeZO large_models/trainer.py OurTrainer.zo_update: θ ← θ − lr·(g·z + λθ), no decay on biases and
    layer norms (zobench's rule, zobench/optim/decay.py, names the same OPT tensors)."""
    model_a, model_b, loss_of = tiny_pair(torch.float64)
    mezo_run(model_a, loss_of(model_a), 3, 3, 1e-3, 1e-3, weight_decay=0.1)
    zobench_run(model_b, loss_of(model_b), 3, 3, 1e-3, 1e-3, "optimizer.weight_decay=0.1")
    for (name, a), (_, b) in zip(model_a.named_parameters(), model_b.named_parameters()):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-12, msg=name)


@pytest.mark.parametrize("overrides, words", [
    (["optimizer=zo_sgd", "optimizer.direction_stream=sequential"], ["optimizer.direction_stream", "chunked, mezo"]),
    (["optimizer=zo_sgd", "optimizer.direction_stream=mezo", "optimizer.estimator.num_directions=2"],
     ["num_directions=2", "expected 1"]),
    (["optimizer=zo_sgd", "optimizer.direction_stream=mezo", "optimizer.direction=rademacher"],
     ["optimizer.direction='rademacher'", "gaussian"]),
    (["optimizer=zo_sgd_block", "+optimizer.direction_stream=mezo"], ["optimizer.direction_stream='mezo'", "chunked"]),
    (["optimizer=bszo", "+optimizer.direction_stream=mezo"], ["optimizer.direction_stream='mezo'", "chunked"]),
])
def test_mezo_stream_is_refused_outside_the_zo_sgd_family_before_loading(overrides, words):
    """Bad input names the key and the allowed values (zobench/validate.py), before any model loads."""
    with pytest.raises(ConfigError) as info:
        validate_optimizer(compose_cfg(*overrides).optimizer)
    for word in words:
        assert word in str(info.value)
