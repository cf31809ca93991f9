"""The ZO optimizer: an estimator (seed form), then one update sweep over the parameters.

Per step t, with base seed s_t = mix(run seed, t) and lr_t = lr · schedule(t):
    ĝ = Σ_j c_j z(s_j)                         (estimator: SPSA, Forward-Grad, BSZO; block-wise and
                                                sparse ZO mask z(s_j) to z(s_j) ⊙ m_j: SeedEstimate.masks)
    for each trainable tensor θ_i, in one sweep:
        θ_i ← θ_i + r·z_i(s_pending)            (undo the estimator's last probe)
        g_i ← Σ_j c_j z_i(s_j)                  (z_i regenerated from (s_j, i); no model-sized ĝ)
        u_i ← transforms(g_i)                   (identity: ZO-SGD; sign, momentum, Adam)
        θ_i ← θ_i − lr_t·(u_i + λ_i θ_i)        (λ_i = weight decay, 0 for biases and norms)
Weight decay is decoupled from the transforms (AdamW's rule, Loshchilov & Hutter 2019) for
every optimizer, ZO and FO alike: for ZO-SGD it is exactly MeZO's θ − lr(g·z + λθ), and it never
passes through sign, momentum or Adam. For ZO-SGD (MeZO) with q = 1 the undo and the update
regenerate z_i once, so a step costs two forward passes and three passes of random-number
generation (+ε, −2ε, undo+update), all in place with one tensor-sized temporary.

``conservative=True`` (ZO-SGD-Cons, ZO-Bench, Zhang et al. 2024): with δ = u + λθ, evaluate
L(θ − lr_t δ) and L(θ + lr_t δ) beside L(θ) and keep the lowest of the three (ties keep θ);
two or three more forward passes (L(θ) is reused when the estimator measured it), all counted.
The candidates are reached by sweeps that regenerate u, so it needs stateless transforms.
With a stateful transform, the only one allowed being ``HFAdam`` (``optimizer.variant=zobench_code``:
ZO-Bench's code, zo-bench/trainer.py ``zo_conserv_step``, ran it through HF Trainer's AdamW), the
candidates are reached as that code reaches them: each move is one optimizer step with gradient
c·ĝ, c = +1 (L₁), then −2 (L₂), then +1 if L₁ > L₀ and L₀ < L₂, +2 if L₁ ≤ L₀ and L₁ < L₂, else none.
With SGD these moves land on θ − lr·ĝ, θ + lr·ĝ and back (the paper's rule); with Adam each
one advances the moments and none returns to θ: that is the trajectory ZO-Bench's numbers come from.

``optimizer.direction_stream=mezo`` (SPSA, q = 1): the step seed is MeZO's s_t (np.random.randint
after np.random.seed(seed)) and z is drawn as MeZO draws it (zobench.optim.directions); the
chunked default uses s_t = mix(seed, t). ``direction_stream=philox`` (SPSA): the same seeds as chunked,
z from the counter-based generator (zobench.optim.philox), whose draw and axpy are one fused pass.

Half precision (fp16/bf16, as MeZO and BSZO run large models): the perturbations are applied in
place, so θ + εz − 2εz + εz is rounded to θ's grid at every move; where ε|z| is below ulp(θ)
(bf16: ulp(1.0) ≈ 8e-3) the probe is quantized and the restore leaves a drift of about one ulp per
step, whatever lr is. Measured on tiny-opt, 10 steps of ZO-SGD at lr ≈ 0, ε = 1e-3: weights move
by up to 6e-7 (fp32), 6e-3 (fp16), 2e-2 (bf16). Removing it would need an fp32 copy of θ.

The (step, seeds, coeffs, applied lr) log reproduces the run from the initial weights.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import torch

from zobench.errors import ConfigError
from zobench.optim.closure import batch_loss, check_micro_batches
from zobench.optim.decay import decays
from zobench.optim.directions import (DISTRIBUTIONS, MEZO, PHILOX_STREAMS, STREAMS, MezoSeeds, add_direction_, chunk_bounds,
                                      draw_masked, flat, mix, stream_distribution)
from zobench.optim.directions import draw  # noqa: F401 (tests/test_zo_sgd.py patches zo.draw)
from zobench.optim.estimate import SeedEstimate
from zobench.optim.schedule import lr_factor
from zobench.optim.transforms import HFAdam, Identity


VARIANTS = ("paper", "zobench_code")
STREAM_ESTIMATORS = ("SPSA", "HiZOO")  # direction_stream=mezo: plain SPSA (no block or sparse masks), q = 1
PHILOX_ESTIMATORS = ("SPSA",)  # direction_stream=philox: the estimators whose sweeps were checked with it


def check_config(opt) -> None:
    """``optimizer.variant`` and ``optimizer.direction_stream`` of a ZO (or hybrid) YAML, checked before any
    model loads (called by zobench.validate). ``variant: zobench_code`` exists where ZO-Bench's code runs
    another algorithm than its paper states: the YAMLs whose transforms hold ``inner_optimizer``."""
    from zobench.errors import bad_choice

    variant = opt.get("variant", "paper")
    if variant not in VARIANTS:
        raise bad_choice("optimizer.variant", variant, VARIANTS)
    transforms = list(opt.get("transforms") or [])
    has_inner = any(str(tr.get("_target_", "")).endswith(".inner_optimizer") for tr in transforms)
    if variant == "zobench_code" and not has_inner:
        raise ConfigError(f"optimizer.variant='zobench_code' is not allowed with optimizer={opt.name}: ZO-Bench's code "
                          "runs it as the paper states; choose optimizer.variant=paper (zobench_code exists for "
                          "zo_sgd_sign, zo_sgd_cons and fo_sgd).")
    stream = opt.get("direction_stream", "chunked")
    if stream not in STREAMS:
        raise bad_choice("optimizer.direction_stream", stream, STREAMS)
    if stream in PHILOX_STREAMS:  # any q, direction, one-sided or sign: only the numbers change; the estimator must follow
        est = opt.get("estimator") or {}
        kind = str(est.get("_target_", "")).rsplit(".", 1)[-1]
        if opt.get("family") not in ("zo", "hybrid") or kind not in PHILOX_ESTIMATORS:
            raise ConfigError(f"optimizer.direction_stream='{stream}' is not allowed with optimizer={opt.name} "
                              f"({kind or opt.get('family')}): its estimator draws from the chunked stream only; the "
                              f"{stream} stream is for the SPSA estimator (zo_sgd, zo_sgd_sign, zo_sgd_cons, zo_sgd_mmt, "
                              "zo_adam); choose optimizer.direction_stream=chunked.")
        if est.get("direction_stream", "chunked") != stream:
            raise ConfigError("optimizer.estimator.direction_stream must follow optimizer.direction_stream "
                              "(${..direction_stream}, as conf/optimizer/zo_sgd.yaml has it).")
    if stream == MEZO:
        est = opt.get("estimator") or {}
        kind = str(est.get("_target_", "")).rsplit(".", 1)[-1]
        if opt.get("family") != "zo" or kind not in STREAM_ESTIMATORS:
            raise ConfigError(f"optimizer.direction_stream='mezo' is not allowed with optimizer={opt.name} "
                              f"({kind or opt.get('family')}): MeZO's stream is for the ZO-SGD family (SPSA estimator: "
                              "zo_sgd, zo_sgd_sign, zo_sgd_cons, zo_sgd_mmt, zo_adam); choose optimizer.direction_stream=chunked.")
        if est.get("num_directions", 1) != 1:
            raise ConfigError(f"optimizer.estimator.num_directions={est.get('num_directions')} is not allowed with "
                              "optimizer.direction_stream=mezo: expected 1 (MeZO draws one direction per step).")
        if opt.get("direction", "gaussian") != "gaussian":
            raise ConfigError(f"optimizer.direction={opt.direction!r} is not allowed with optimizer.direction_stream=mezo: "
                              "choose gaussian (MeZO draws z with torch.normal).")
        if est.get("direction_stream", MEZO) != MEZO:
            raise ConfigError("optimizer.estimator.direction_stream must follow optimizer.direction_stream "
                              "(${..direction_stream}, as conf/optimizer/zo_sgd.yaml has it).")


class ZOOptimizer:
    family = "zo"

    def __init__(self, named_params: Sequence[tuple[str, torch.Tensor]], estimator, transforms=(), *,
                 lr: float, eps: float | None, weight_decay: float = 0.0, schedule: str = "constant",
                 total_steps: int = 1, seed: int = 0, conservative: bool = False, accumulation_steps: int = 1,
                 model: torch.nn.Module | None = None, distribution: str = "gaussian"):
        self.names = [n for n, _ in named_params]
        self.params = [p for _, p in named_params]
        self.estimator = estimator
        self.transforms = [tr for tr in transforms if not isinstance(tr, Identity)]  # u = g needs no pass
        self.lr, self.eps, self.schedule, self.total_steps = lr, eps, schedule, total_steps
        self.decay = [weight_decay if decays(n) else 0.0 for n in self.names]
        self.conservative, self.accumulation_steps = conservative, accumulation_steps
        if conservative and getattr(estimator, "immediate", False):
            raise ConfigError("optimizer.conservative=true is not allowed with optimizer.estimator.immediate=true: "
                              "the blocks are updated as they are estimated, so there is no whole step to compare.")
        if conservative and any(tr.stateful and not isinstance(tr, HFAdam) for tr in self.transforms):
            raise ConfigError("optimizer.conservative=true is not allowed with momentum or Adam transforms: "
                              "it evaluates two candidate updates, which would advance their state twice "
                              "(ZO-Bench's code does exactly that with HF's AdamW: optimizer.variant=zobench_code).")
        if distribution not in DISTRIBUTIONS:
            raise ConfigError(f"optimizer.direction={distribution!r} is not allowed: choose one of {', '.join(DISTRIBUTIONS)}.")
        self.direction_stream = getattr(estimator, "direction_stream", "chunked")
        if self.direction_stream == MEZO:
            if distribution != "gaussian":
                raise ConfigError(f"optimizer.direction={distribution!r} is not allowed with optimizer.direction_stream=mezo: "
                                  "choose gaussian (MeZO draws z with torch.normal).")
            distribution = MEZO
        elif self.direction_stream != "chunked":  # philox(_fast, _icdf): "philox:gaussian", "philox_fast:rademacher", ...
            distribution = stream_distribution(self.direction_stream, distribution)
        self.distribution = estimator.distribution = distribution  # z ~ N(0, I) or Rademacher, everywhere
        self.seed, self.t = seed, 0
        self.mezo_seeds = MezoSeeds(seed) if self.direction_stream == MEZO else None
        self.seed_log: list[tuple[int, list[int], list[float], float]] = []
        if hasattr(estimator, "setup"):
            estimator.setup(named_params, model)
        for tr in self.transforms:
            tr.init(self.params)

    def step(self, loss_fn: Callable) -> dict:
        check_micro_batches(loss_fn, self.accumulation_steps)
        lr = self.lr * lr_factor(self.schedule, self.t, self.total_steps)
        base, extra = None, 0
        if self.conservative and not getattr(self.estimator, "measures_base_loss", False):
            base, extra = batch_loss(loss_fn), 1
        if hasattr(self.estimator, "begin_step"):  # per-step estimator state (sparse ZO's mask epoch: optim/sparse.py)
            self.estimator.begin_step(self.seed, self.t)
        for tr in self.transforms:
            tr.begin_step()
        step_seed = self.mezo_seeds.at(self.t) if self.mezo_seeds is not None else mix(self.seed, self.t)
        if getattr(self.estimator, "immediate", False):  # block-wise, Gauss–Seidel: each block updated as estimated
            est = self.estimator(self.params, loss_fn, self.eps, step_seed,
                                 apply_block=lambda part, only: self._sweep(part, 0.0, -lr, undo=part.pending, only=only))
        else:
            est = self.estimator(self.params, loss_fn, self.eps, step_seed)
        if est.applied:
            applied, passes, loss = lr, 0, est.loss
        elif self.conservative and any(tr.stateful for tr in self.transforms):
            loss = est.base_loss if base is None else base
            applied, passes = lr, self._conservative_steps(est, lr, loss_fn, loss)
        elif self.conservative:
            loss = est.base_loss if base is None else base  # L(θ): the candidates compete with it
            applied, passes = self._conservative(est, lr, loss_fn, loss)
        else:
            self._sweep(est, 0.0, -lr, undo=est.pending)
            applied, passes, loss = lr, 0, est.loss
        self.seed_log.append((self.t, est.seeds, est.coeffs, applied))
        self.t += 1
        return {"loss": loss, "forward_passes": est.forward_passes + extra + passes, "lr": lr}

    @torch.no_grad()
    def _sweep(self, est: SeedEstimate, frm: float, to: float, undo=(), only: frozenset | None = None) -> None:
        """Move every θ_i from θ_i + frm·δ_i to θ_i + to·δ_i, δ_i = u_i + λ_i θ_i, undoing ``undo`` first.

        With p = θ(1 + frm·λ) + frm·u:  θ + to·δ = (p − frm·u)·(1 + to·λ)/(1 + frm·λ) + to·u.
        The plain update is frm = 0, to = −lr: θ ← θ(1 − lr·λ) − lr·u. Chunk by chunk: z is drawn
        once per chunk and serves both the undo and the update. ``only``: the tensor indices to move
        (one block's, for block-wise ZO's immediate updates); None: all.
        """
        undo, masks, dist = dict(undo), est.masks, self.distribution  # masks: block-wise / sparse z ⊙ m ({}: whole z)
        linear = not self.transforms and not frm  # u is linear in z: fold everything into one axpy
        for i, p in enumerate(self.params):
            if only is not None and i not in only:
                continue
            view, decay, fmax = flat(p), self.decay[i], torch.finfo(p.dtype).max
            shrink = (1 + to * decay) / (1 + frm * decay) if decay else 1.0
            for c, a, b in chunk_bounds(view.numel(), dist):
                part, n = view[a:b], b - a
                if linear:  # θ ← θ·shrink + Σ_s (undo_s·shrink + to·c_s)·z_s: one pass per direction
                    if shrink != 1.0:
                        part.mul_(shrink)
                    weights = {s: undo.get(s, 0.0) * shrink for s in undo}
                    for s, coeff in zip(est.seeds, est.coeffs):
                        weights[s] = weights.get(s, 0.0) + to * coeff
                    for s, w in weights.items():
                        # MeZO's stream is sequential: every tensor is drawn, even at weight 0; a folded weight
                        # past the dtype's range (a diverging run) saturates. Philox: drawn and added in one pass.
                        if w or dist == MEZO:
                            add_direction_(part, s, i, c, a, max(-fmax, min(fmax, w)), dist, masks.get(s))
                    continue
                g = None
                for s, coeff in zip(est.seeds, est.coeffs):
                    z = draw_masked(s, i, c, a, n, p.device, p.dtype, dist, masks.get(s))
                    if z is None:  # a masked direction that leaves this tensor out
                        continue
                    if s in undo:
                        part.add_(z, alpha=undo[s])
                    g = z.mul_(coeff) if g is None else g.add_(z, alpha=coeff)
                for s, scale in undo.items():
                    z = None if s in est.seeds else draw_masked(s, i, c, a, n, p.device, p.dtype, dist, masks.get(s))
                    if z is not None:
                        part.add_(z, alpha=scale)
                if g is None:  # no direction touches this tensor: its estimate is 0 (transforms may still move it)
                    g = torch.zeros(n, device=p.device, dtype=p.dtype)
                for tr in self.transforms:
                    g = tr.apply(i, g, part, slice(a, b))
                if frm:
                    part.add_(g, alpha=-frm)
                if decay:
                    part.mul_(shrink)
                part.add_(g, alpha=to)

    def _conservative(self, est: SeedEstimate, lr: float, loss_fn: Callable, base: float) -> tuple[float, int]:
        """Keep the best of θ, θ − lr·δ, θ + lr·δ; returns (the lr applied, forward passes spent)."""
        self._sweep(est, 0.0, -lr, undo=est.pending)
        down = batch_loss(loss_fn)
        self._sweep(est, -lr, lr)
        up = batch_loss(loss_fn)
        best = min([(base, 0.0), (down, -lr), (up, lr)], key=lambda c: c[0])[1]  # stable: ties keep θ
        if best != lr:
            self._sweep(est, lr, best)
        return -best, 2

    def _conservative_steps(self, est: SeedEstimate, lr: float, loss_fn: Callable, base: float) -> int:
        """ZO-Bench's ``zo_conserv_step`` with a stateful optimizer: each candidate is one more step of it.

        Transcribes zo-bench/trainer.py ``zo_conserv_step`` (``update_params(sign)`` writes sign·g·z into
        ``param.grad`` and calls ``self.optimizer.step()``): moves c = +1, −2, then +1 or +2 (see the module
        docstring), with its comparisons as written (strict <, >). Returns the forward passes spent (2)."""

        def move(c: float, undo=(), first: bool = False) -> None:
            if not first:  # step() began the first one
                for tr in self.transforms:
                    tr.begin_step()
            self._sweep(dataclasses.replace(est, coeffs=[c * x for x in est.coeffs]), 0.0, -lr, undo=undo)

        move(1.0, undo=est.pending, first=True)
        down = batch_loss(loss_fn)  # ZO-Bench's loss1
        move(-2.0)
        up = batch_loss(loss_fn)  # loss2
        if down > base:
            if base < up:
                move(1.0)
        elif down < up:
            move(2.0)
        return 2

    def state_dict(self) -> dict:
        """Step counter and transform state (for checkpoints of runs that cannot be replayed)."""
        return {"t": self.t, "seed_log": self.seed_log,
                "transforms": [{k: v for k, v in vars(tr).items()} for tr in self.transforms]}

    def load_state_dict(self, state: dict) -> None:
        self.t, self.seed_log = state["t"], state["seed_log"]
        for tr, saved in zip(self.transforms, state["transforms"]):
            for key, value in saved.items():
                setattr(tr, key, value)

    def state_bytes(self) -> int:
        return sum(tr.state_bytes() for tr in self.transforms)
