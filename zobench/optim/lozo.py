"""LOZO and LOZO-M: ZO-SGD along low-rank directions U Vᵀ, V redrawn lazily; LOZO-M keeps momentum in U's space.

Chen, Zhang, Cao, Yuan & Wen, "Enhancing Zeroth-Order Fine-Tuning for Language Models with Low-Rank
Structures" (2024, arXiv:2410.07698); code github.com/optsuite/LOZO: large_models/LOZOtrainer.py
``lowrank_zo_perturb_parameters``, ``lowrank_zo_step``, ``lowrank_zo_update`` (LOZO) and
medium_models/src/LOZOtrainer.py ``lowrank_zo_update_momentum`` (LOZO-M). Per step t, k = ⌊t/ν⌋:

    matrices (tensors of ≥ 2 dims, viewed as size(0) × the rest, m × n):   Z_i = U_i V_iᵀ,
        U_i ~ N(0, 1)^{m×r} drawn every step,  V_i ~ N(0, 1)^{n×r} drawn when t % ν = 0 and kept ν steps
    vectors (biases, norm weights):   Z_i = z_i ~ N(0, I), as MeZO
    g = (L(θ + εZ) − L(θ − εZ)) / 2ε                                       (2 forward passes)
  LOZO      θ_i ← θ_i − lr_t · (g·U_i V_iᵀ + λθ_i)            (vectors: g·z_i)
  LOZO-M    N_i ∈ ℝ^{m×r} (the code's ``exp_avg_m``), vectors m_i:
              N_i ← β N_i + (1 − β) g U_i                         inside a V-epoch
              N_i ← (β/n) N_i V_{i,k−1}ᵀ V_{i,k} + (1 − β) g U_i   at its first step: N V_oldᵀ re-expressed on the
                                                                   new V (N V_oldᵀ V (VᵀV)⁻¹ with VᵀV ≈ n·I)
              N_i ← g U_i,  m_i ← g z_i                           at t = 0 (the code starts from the estimate)
              m_i ← β m_i + (1 − β) g z_i
            θ_i ← θ_i − lr_t · (N_i V_iᵀ + λθ_i)              (vectors: m_i)

Why a ZOOptimizer subclass (``LowRankZO``): the estimate is not Σ_j c_j z(s_j) over a seeded Gaussian the
size of θ, which ZOOptimizer's sweep draws chunk by chunk; a matrix's direction is the product of two thin
Gaussians (m·r + n·r numbers, not m·n), and LOZO-M's momentum lives in the m × r space of U and is
re-projected when V changes, which no per-element transform can express. ``LowRankSPSA`` probes,
``LowRankZO._sweep`` moves θ along U Vᵀ (everything else, the step, the schedule, weight decay, gradient
accumulation, the conservative option for LOZO, the seed log, is ZOOptimizer's), ``LowRankMomentum`` is
LOZO-M's momentum. Every move of a matrix is one in-place ``addmm_`` (θ ← θ·shrink + W Vᵀ): no
m × n temporary (the code materializes ``u@v.t()`` each time). Per step: three passes over the
matrices (+ε, −2ε, restore with the update) and random numbers for the thin factors and the vectors only.

State: LOZO none (V_i is regenerated from mix(run seed, V_SALT, k), i; the code stores V); LOZO-M N_i
(m × r per matrix) and m_i (the vectors' size), in fp32 for fp16/bf16 runs. Both follow from the observed
losses and the seeds: a checkpoint is the loss log (replay), as for SPSA.

Differences from the authors' code:
  * directions: the code draws U, V and z in sequence from torch's global generator after
    ``torch.manual_seed(s_t)``; when V is redrawn (t % ν = 0, t = 0 included) each probe sweep draws V before
    U, but ``lowrank_zo_update`` reseeds and draws U alone, so on those steps the update moves along other
    U′ (and shifted z′ for the vectors) than the ones probed: a random step on 1/ν of the steps.
    zobench moves along the probed direction (the estimate g·U Vᵀ pairs g with its own U);
    tests/reference/test_lozo.py shows the code's shift. zobench draws U, V and z from its own seeds
    (the chunked stream), not from the code's stream.
  * ν = 1 in LOZO-M: the code's branch that keeps V_old is never reached, so its matrices get N ← g U every
    step (no momentum); zobench re-projects every step.
  * the loss reported is the mean of the two probes (as zo_sgd), the code's is L(θ + εZ); weight decay skips
    biases and norms (the code: names with bias / layer_norm / layernorm; λ = 0 in its scripts).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from zobench.errors import ConfigError, bad_value
from zobench.optim.closure import batch_loss
from zobench.optim.directions import chunk_bounds, draw, flat, mix
from zobench.optim.estimate import SeedEstimate
from zobench.optim.transforms import Identity, Transform
from zobench.optim.zo import ZOOptimizer

V_SALT = 0x10205A0  # V's seeds mix(run seed, V_SALT, k) stay apart from the step seeds mix(run seed, t)


def is_matrix(p: torch.Tensor) -> bool:
    """Tensors of ≥ 2 dimensions are perturbed by U Vᵀ (the code: ``param.data.ndim >= 2``), the others by z."""
    return p.dim() >= 2


def matrix_view(p: torch.Tensor) -> torch.Tensor:
    """p as size(0) × the rest, sharing its storage (2-D tensors: p itself)."""
    return flat(p).view(p.shape[0], -1)


def _state_dtype(p: torch.Tensor) -> torch.dtype:
    return torch.float32 if p.dtype in (torch.float16, torch.bfloat16) else p.dtype


def _integer(key: str, value, low: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise bad_value(key, value, f"an integer >= {low} ({what})")


class LowRankSPSA:
    """Two-point SPSA along U Vᵀ per matrix and z per vector (LOZO, Chen et al. 2024); the module docstring
    gives the math. q directions share the epoch's V; each direction's coefficient is g_j / q."""

    distribution = "gaussian"  # set by ZOOptimizer from optimizer.direction (U, V and z alike)
    replayable = True  # U, V and LOZO-M's momentum follow from the seeds and the losses: checkpoints are loss logs

    def __init__(self, rank: int = 2, period: int = 50, num_directions: int = 1):
        self.check_config({"rank": rank, "period": period, "num_directions": num_directions})
        self.rank, self.period, self.num_directions = rank, period, num_directions
        self.run_seed, self.t = 0, 0

    @staticmethod
    def check_config(est, key: str = "optimizer.estimator") -> None:
        """The YAML keys, checked before any model loads."""
        _integer(f"{key}.rank", est.get("rank", 2), 1, "r, the columns of U and V")
        _integer(f"{key}.period", est.get("period", 50), 1, "ν, the steps between draws of V")
        _integer(f"{key}.num_directions", est.get("num_directions", 1), 1, "q, directions per step")

    def begin_step(self, seed: int, t: int) -> None:
        """Called by ZOOptimizer before each step: V's seeds come from the run seed and the epoch ⌊t/ν⌋."""
        self.run_seed, self.t = seed, t

    @property
    def epoch(self) -> int:
        return self.t // self.period

    def forward_passes_per_step(self) -> int:
        return 2 * self.num_directions

    def _draw(self, seed: int, index: int, rows: int, like: torch.Tensor) -> torch.Tensor:
        n = rows * self.rank
        parts = [draw(seed, index, c, b - a, like.device, like.dtype, self.distribution)
                 for c, a, b in chunk_bounds(n, self.distribution)]
        return (parts[0] if len(parts) == 1 else torch.cat(parts)).view(rows, self.rank)

    def u(self, seed: int, index: int, p: torch.Tensor) -> torch.Tensor:
        """U_i of direction ``seed``: size(0) × r, in p's dtype."""
        return self._draw(seed, index, p.shape[0], p)

    def v(self, index: int, p: torch.Tensor, epoch: int) -> torch.Tensor:
        """V_i of V-epoch ``epoch``: (numel / size(0)) × r, regenerated from its seed, never stored."""
        return self._draw(mix(self.run_seed, V_SALT, epoch), index, p.numel() // p.shape[0], p)

    @torch.no_grad()
    def perturb_(self, params: list[torch.Tensor], moves: list[tuple[int, float]]) -> None:
        """θ ← θ + Σ_j scale_j Z(seed_j) for ``moves`` = [(seed_j, scale_j)], one pass; matrices by one addmm_."""
        moves = [(s, c) for s, c in moves if c != 0.0]
        if not moves:
            return
        for i, p in enumerate(params):
            if is_matrix(p):
                w = None
                for s, scale in moves:
                    w = self.u(s, i, p).mul_(scale) if w is None else w.add_(self.u(s, i, p), alpha=scale)
                matrix_view(p).addmm_(w, self.v(i, p, self.epoch).T)
                continue
            view = flat(p)
            for c, a, b in chunk_bounds(view.numel(), self.distribution):
                for s, scale in moves:
                    view[a:b].add_(draw(s, i, c, b - a, p.device, p.dtype, self.distribution), alpha=scale)

    @torch.no_grad()
    def __call__(self, params: list[torch.Tensor], loss_fn: Callable, eps: float, seed: int) -> SeedEstimate:
        q = self.num_directions
        seeds = [mix(seed, j) for j in range(q)]
        coeffs, losses, undo = [], [], []
        for s in seeds:
            self.perturb_(params, undo + [(s, eps)])  # undo the previous probe and take this one: one pass
            plus = batch_loss(loss_fn)
            self.perturb_(params, [(s, -2 * eps)])
            minus = batch_loss(loss_fn)
            coeffs.append((plus - minus) / (2 * eps) / q)
            losses.append((plus + minus) / 2)
            undo = [(s, eps)]
        return SeedEstimate(seeds, coeffs, sum(losses) / q, self.forward_passes_per_step(), pending=undo)


class LowRankMomentum(Transform):
    """LOZO-M's momentum (Chen et al. 2024): N_i (m × r) per matrix in the space of U, m_i per vector; N is
    re-projected onto each new V, and the first step takes the estimate itself (the module docstring's rules).
    Only with ``LowRankSPSA`` (optimizer=lozo_m), which sets ``rank``. State: Σ m_i·r + Σ n_vectors elements."""

    stateful = True

    def __init__(self, beta: float = 0.9):
        self.check_config({"beta": beta})
        self.beta, self.rank, self.t = float(beta), None, 0
        self.m: list[torch.Tensor] = []

    @staticmethod
    def check_config(tr, key: str = "optimizer.transforms[0]") -> None:
        beta = tr.get("beta", 0.9)
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta < 1:
            raise bad_value(f"{key}.beta", beta, "a number in [0, 1)")

    def init(self, params):
        if self.rank is None:
            raise ConfigError("zobench.optim.lozo.LowRankMomentum needs the LowRankSPSA estimator "
                              "(optimizer=lozo_m): its momentum lives in the space of U.")
        self.m = [torch.zeros((p.shape[0], self.rank) if is_matrix(p) else p.shape, dtype=_state_dtype(p),
                              device=p.device) for p in params]

    def begin_step(self):
        self.t += 1

    def apply(self, i, g, p, sl=slice(None)):
        """A vector's chunk: m ← β m + (1 − β) g (m ← g at the first step)."""
        m = self.m[i].view(-1)[sl]
        if self.t == 1:
            m.copy_(g)
        else:
            m.mul_(self.beta).add_(g.to(m.dtype), alpha=1 - self.beta)
        return m.to(g.dtype)

    def apply_lowrank(self, i: int, g: torch.Tensor, v: torch.Tensor, v_prev: torch.Tensor | None) -> torch.Tensor:
        """A matrix: ``g`` = Σ_j c_j U_j (m × r); ``v_prev``: the previous epoch's V at an epoch's first step, else
        None."""
        n = self.m[i]
        if self.t == 1:
            n.copy_(g)
            return n.to(g.dtype)
        if v_prev is not None:
            n.copy_(n @ (v_prev.to(n.dtype).T @ v.to(n.dtype))).mul_(self.beta / v.shape[0])
        else:
            n.mul_(self.beta)
        n.add_(g.to(n.dtype), alpha=1 - self.beta)
        return n.to(g.dtype)

    def state_tensors(self):
        return self.m


class LowRankZO(ZOOptimizer):
    """ZOOptimizer whose sweep moves θ along the low-rank directions of ``LowRankSPSA`` (LOZO, LOZO-M).

    ``_sweep`` keeps ZOOptimizer's contract: every θ_i goes from θ_i + frm·δ_i to θ_i + to·δ_i, δ_i = u_i + λ_iθ_i,
    after the pending probe is undone: θ_i ← θ_i·shrink + shrink·Σ undo_s Z_s + (to − frm·shrink)·u_i, with
    u_i = N_i V_iᵀ for a matrix (N_i = Σ_j c_j U_j, or LOZO-M's momentum) in one ``addmm_``, and u_i chunk by
    chunk for a vector."""

    def __init__(self, named_params: Sequence[tuple[str, torch.Tensor]], estimator, transforms=(), **kwargs):
        if not isinstance(estimator, LowRankSPSA):
            raise ConfigError("zobench.optim.lozo.LowRankZO needs the LowRankSPSA estimator")
        for i, tr in enumerate(transforms):
            if isinstance(tr, LowRankMomentum):
                tr.rank = estimator.rank
            elif not isinstance(tr, Identity):
                raise ConfigError(f"optimizer.transforms[{i}]={type(tr).__name__} is not allowed with the LowRankSPSA "
                                  "estimator: choose LowRankMomentum (optimizer=lozo_m) or none (optimizer=lozo).")
        super().__init__(named_params, estimator, transforms, **kwargs)

    @torch.no_grad()
    def _sweep(self, est: SeedEstimate, frm: float, to: float, undo=(), only: frozenset | None = None) -> None:
        lowrank, undo, dist = self.estimator, dict(undo), self.distribution
        epoch, renew = lowrank.epoch, lowrank.t > 0 and lowrank.t % lowrank.period == 0
        seeds = list(dict.fromkeys([*est.seeds, *undo]))
        for i, p in enumerate(self.params):
            if only is not None and i not in only:
                continue
            decay = self.decay[i]
            shrink = (1 + to * decay) / (1 + frm * decay) if decay else 1.0
            if is_matrix(p):
                us = {s: lowrank.u(s, i, p) for s in seeds}
                g = torch.zeros_like(us[seeds[0]])
                for s, c in zip(est.seeds, est.coeffs):
                    g.add_(us[s], alpha=c)
                v = lowrank.v(i, p, epoch)
                for tr in self.transforms:
                    g = tr.apply_lowrank(i, g, v, lowrank.v(i, p, epoch - 1) if renew else None)
                w = g.mul(to - frm * shrink)
                for s, scale in undo.items():
                    w.add_(us[s], alpha=scale * shrink)
                view = matrix_view(p)
                if decay:
                    view.mul_(shrink)
                view.addmm_(w, v.T)
                continue
            view = flat(p)
            for c, a, b in chunk_bounds(view.numel(), dist):
                part = view[a:b]
                zs = {s: draw(s, i, c, b - a, p.device, p.dtype, dist) for s in seeds}
                g = torch.zeros_like(part)
                for s, coeff in zip(est.seeds, est.coeffs):
                    g.add_(zs[s], alpha=coeff)
                for tr in self.transforms:
                    g = tr.apply(i, g, part, slice(a, b))
                for s, scale in undo.items():
                    part.add_(zs[s], alpha=scale)
                if frm:
                    part.add_(g, alpha=-frm)
                if decay:
                    part.mul_(shrink)
                part.add_(g, alpha=to)


LowRankSPSA.optimizer_class = LowRankZO  # zobench.optim.build_optimizer builds this instead of ZOOptimizer
