"""``make bench``: the cost of a ZO step against what it should cost, in one process.

On the same model and the same batch (16 examples × 64 tokens by default) it measures:
  two_forwards two inference forwards of the training loss, back to back (no grad): the ZO baseline
  zo_sgd       zobench's ZO-SGD step (two forwards, three in-place RNG passes), Gaussian and Rademacher, per
               direction stream (chunked; philox, philox_fast and philox_icdf, counter-based: zobench/optim/philox.py)
  mezo_ref     a step written as MeZO's reference trainer does it: four regenerations of z
               (+ε, −2ε, +ε, update) and out-of-place ``p.data = p.data + ...`` temporaries
  fo_sgd, fo_adam   backprop steps (torch.optim)
  eval         batched candidate scoring vs one forward per (example, candidate) with full logits
  passes       one in-place direction pass per stream against the floors θ += c and an axpy of a drawn z
               (zobench/bench_passes.py): how close the generator gets to memory speed
  shared_context   multi-token candidates (COPA- and WinoGrande-shaped batches, MeZO templates): scoring
               that packs an example's candidates after one copy of their shared context vs one sequence
               per candidate (``trainer.shared_context`` true / false), for evaluation and for the
               classification loss of a training batch; same scores (max |Δ mean log-prob|) and padded tokens
and prints the ratios: ZO step / two forwards, ZO peak / inference peak, MeZO-ref step / ZO step,
FO-Adam peak / inference peak, batched / per-candidate evaluation throughput, shared / per-candidate
speed on multi-token batches, each pass against the floors. The ZO step ratios also come as geometric means
of the paired rounds' ratios with a 95% interval, and a target is met only when the whole interval meets it.
``--only shared_context`` runs that phase alone.

Memory: CUDA allocator peaks; on CPU the resident-set high-water mark, reset per phase, with
freed memory returned to the OS between phases (gc + malloc_trim) so that one phase's freed
heap cannot hide the next phase's peak.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from zobench import ROOT
from zobench.bench_passes import FLOORS, direction_passes, paired_ratio, verdict
from zobench.measure import PeakMemory, release_memory, synchronize
from zobench.tasks.base import Example

SMOLLM2_SHAPE = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                     num_key_value_heads=3, vocab_size=49152, max_position_embeddings=2048,
                     tie_word_embeddings=True, rms_norm_eps=1e-5, rope_theta=100000.0)


TINY_SHAPE = dict(SMOLLM2_SHAPE, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=512)  # for the bench's own test


DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def load_bench_model(device: torch.device, model_dir: Path | None, shape: dict = SMOLLM2_SHAPE, dtype: str = "fp32"):
    """SmolLM2-135M when converted (``make offline-models``), else random weights of ``shape``; in ``dtype``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if model_dir is not None and (model_dir / "config.json").exists():
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        tokenizer, source = AutoTokenizer.from_pretrained(model_dir), f"pretrained:{model_dir}"
    else:
        from zobench.models import build_tiny_tokenizer

        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(**shape, pad_token_id=0, bos_token_id=1, eos_token_id=2))
        label = "SmolLM2-135M shape" if shape is SMOLLM2_SHAPE else "tiny shape"
        tokenizer, source = build_tiny_tokenizer(), f"random-init:{label}"
    return model.to(device=device, dtype=DTYPES[dtype]).eval(), tokenizer, source


def make_batch(tokenizer, n: int, tokens: int, seed: int = 0) -> list[Example]:
    """n two-way examples whose context + candidate is about ``tokens`` tokens long."""
    import random

    rng = random.Random(seed)
    words = "the film was a long and quiet study of grief with moments of real wit and a fine cast".split()
    out = []
    for _ in range(n):
        ids: list[int] = []
        text = ""
        while len(ids) < tokens - 2:
            text += " " + rng.choice(words)
            ids = tokenizer(text.strip())["input_ids"]
        out.append(Example(text.strip() + " It was", (" terrible", " great"), rng.randrange(2)))
    return out


SHAPE_WORDS = ("the man woman dog child teacher city river house car door window storm light rain garden street "
               "friend doctor letter money water fire book road phone game team music").split()
SHAPE_VERBS = "opened lost found broke bought left painted cleaned sold carried watched called".split()
NAMES = "Sarah Maria James Robert Jennifer Kevin Natalie Victoria Adam Logan Megan Rachel".split()


def _phrase(rng, lo: int, hi: int) -> str:
    words = []
    for i in range(rng.randint(lo, hi)):
        words.append(rng.choice(SHAPE_VERBS) if i % 3 == 1 else rng.choice(SHAPE_WORDS))
    return " ".join(words)


def make_multi_token_batch(shape: str, n: int, seed: int = 0) -> list[Example]:
    """n examples shaped like COPA (premise + connective, two sentence choices) or WinoGrande (sentence split
    at the blank, each option + the rest of the sentence), rendered by the tasks' MeZO templates."""
    import random

    from zobench.tasks import copa, winogrande

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        if shape == "copa":
            record = {"premise": _phrase(rng, 6, 12).capitalize() + ".",
                      "choices": tuple(_phrase(rng, 4, 8).capitalize() + "." for _ in range(2)),
                      "question": rng.choice(["cause", "effect"]), "label": rng.randrange(2)}
            out.append(copa.render(record, "mezo"))
        elif shape == "winogrande":
            a, b = rng.sample(NAMES, 2)
            sentence = f"{a} {_phrase(rng, 5, 10)} than {b} so _ {_phrase(rng, 4, 8)}."
            out.append(winogrande.render({"sentence": sentence, "options": (a, b), "label": rng.randrange(2)}, "mezo"))
        else:
            raise ValueError(f"unknown shape {shape!r}")
    return out


def shared_context_phase(model, tokenizer, device, args) -> dict:
    """Shared-context vs per-candidate scoring on COPA- and WinoGrande-shaped batches: evaluation
    (``candidate_scores`` over ``args.shared_examples`` examples, ``2 * batch_size`` pairs a forward) and the
    classification loss of one training batch (no grad: a ZO forward), timed round-robin; the scores'
    largest difference, whether predictions agree, and the padded tokens each path forwards."""
    from zobench import scoring_shared
    from zobench.scoring import Scorer

    max_length = 2048
    shared = Scorer(model, tokenizer, "causal", max_length, shared_context=True)
    single = Scorer(model, tokenizer, "causal", max_length, shared_context=False)
    out: dict = {"off_reason": shared.shared_context_off}
    for shape in args.shared_shapes:
        examples = make_multi_token_batch(shape, args.shared_examples, seed=2)
        batch = examples[: args.batch_size]
        eval_bs = 2 * args.batch_size
        with torch.no_grad():
            got, want = shared.candidate_scores(examples, eval_bs), single.candidate_scores(examples, eval_bs)
        diff = max(abs(g - w) for gs, ws in zip(got, want) for g, w in zip(gs, ws))
        argmax = lambda rows: [max(range(len(r)), key=r.__getitem__) for r in rows]  # noqa: E731
        pairs = [(i, c) for i, ex in enumerate(batch) for c in range(len(ex.candidates))]
        built = [shared._causal_sequence(batch[e].context, batch[e].candidates[c]) for e, c in pairs]
        plan = scoring_shared.plan([q for q, _ in built], [k for _, k in built], [e for e, _ in pairs], min_saving=-1.0)
        fns = {
            "eval_shared": lambda: shared.candidate_scores(examples, eval_bs),
            "eval_per_candidate": lambda: single.candidate_scores(examples, eval_bs),
            "loss_shared": lambda: shared.loss(batch, "classification"),
            "loss_per_candidate": lambda: single.loss(batch, "classification"),
        }
        times: dict[str, list[float]] = {k: [] for k in fns}
        with torch.no_grad():
            for fn in fns.values():  # warm-up
                fn()
            for _ in range(args.repeats):  # round-robin, as the other phases
                for k, fn in fns.items():
                    times[k].append(timed(fn, device, 1, warmup=0))
        res = {k + "_ms": statistics.median(v) for k, v in times.items()}
        res.update({
            "examples": len(examples), "train_batch": len(batch), "max_abs_mean_logprob_diff": diff,
            "predictions_agree": argmax(got) == argmax(want),
            "loss_padded_tokens_shared": plan.padded_tokens if plan else None,
            "loss_padded_tokens_per_candidate": plan.per_candidate_tokens if plan else None,
            "paths_shared_scorer": dict(shared.paths),
        })
        res["eval_speedup"] = res["eval_per_candidate_ms"] / res["eval_shared_ms"]
        res["loss_speedup"] = res["loss_per_candidate_ms"] / res["loss_shared_ms"]
        out[shape] = res
        shared.paths.update(shared=0, per_candidate=0)
        print(f"  shared_context {shape:10s} eval {res['eval_shared_ms']:8.1f} ms vs {res['eval_per_candidate_ms']:8.1f} ms "
              f"(x{res['eval_speedup']:.2f}), loss {res['loss_shared_ms']:7.1f} vs {res['loss_per_candidate_ms']:7.1f} ms "
              f"(x{res['loss_speedup']:.2f}), max |Δ| {diff:.1e}", flush=True)
    return out


def timed(fn, device, repeats: int, warmup: int = 1) -> float:
    """Median wall time (ms) of ``fn`` over ``repeats`` synchronized calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def peak_of(fn, device) -> dict:
    """Peak memory of one call of ``fn``, after a warm-up call (allocator and kernel caches)."""
    release_memory()
    meter = PeakMemory(device)
    fn()
    release_memory()
    meter.reset()
    fn()
    return meter.read()


def mezo_reference_step(named_params, loss_fn, lr: float, eps: float, weight_decay: float, seed: int):
    """ZO-SGD as MeZO's reference trainer writes it (Malladi et al. 2023, ``zo_step``/``zo_update``).

    z is regenerated four times from ``torch.manual_seed(seed)`` and every perturbation and update
    allocates a new tensor (``param.data = param.data + ...``).
    """
    def perturb(scaling):
        torch.manual_seed(seed)
        for _, p in named_params:
            z = torch.normal(mean=0, std=1, size=p.data.size(), device=p.data.device, dtype=p.data.dtype)
            p.data = p.data + scaling * z * eps

    with torch.no_grad():
        perturb(1)
        loss1 = loss_fn()
        perturb(-2)
        loss2 = loss_fn()
        projected_grad = ((loss1 - loss2) / (2 * eps)).item()
        perturb(1)
        torch.manual_seed(seed)
        for name, p in named_params:
            z = torch.normal(mean=0, std=1, size=p.data.size(), device=p.data.device, dtype=p.data.dtype)
            if "bias" not in name and "layer_norm" not in name and "layernorm" not in name:
                p.data = p.data - lr * (projected_grad * z + weight_decay * p.data)
            else:
                p.data = p.data - lr * (projected_grad * z)
    return loss1


def per_candidate_predict(model, tokenizer, examples) -> list[int]:
    """One forward per (example, candidate), full logits: the unbatched way."""
    preds = []
    with torch.no_grad():
        for ex in examples:
            means = []
            for cand in ex.candidates:
                ctx = tokenizer(ex.context)["input_ids"]
                ids = ctx + tokenizer(cand, add_special_tokens=False)["input_ids"]
                device = next(model.parameters()).device
                logp = model(torch.tensor([ids], device=device)).logits[0].float().log_softmax(-1)
                means.append(sum(logp[t - 1, ids[t]].item() for t in range(len(ctx), len(ids))) / (len(ids) - len(ctx)))
            preds.append(max(range(len(means)), key=means.__getitem__))
    return preds


def run(args) -> dict:
    from zobench.optim.spsa import SPSA
    from zobench.optim.zo import ZOOptimizer
    from zobench.optim.fo import FOOptimizer
    from zobench.scoring import Scorer

    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    model, tokenizer, source = load_bench_model(device, None if args.tiny else args.model_dir,
                                                TINY_SHAPE if args.tiny else SMOLLM2_SHAPE, args.dtype)
    scorer = Scorer(model, tokenizer, "causal", max_length=args.tokens + 8)
    batch = make_batch(tokenizer, args.batch_size, args.tokens)
    train_set = batch + make_batch(tokenizer, args.batch_size, args.tokens, seed=2)  # MeZO-SVRG's full batch
    named = [(n, p) for n, p in model.named_parameters()]
    if args.only == "shared_context":
        res = {"model": source, "device": str(device), "threads": torch.get_num_threads(),
               "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "cpu_count": os.cpu_count(),
               "torch": torch.__version__, "load_average_start": os.getloadavg()[0],
               "batch": f"{args.batch_size} examples (training), {2 * args.batch_size} pairs (evaluation)"}
        print(f"bench: {source} on {device}, shared_context phase only", flush=True)
        res["shared_context"] = shared_context_phase(model, tokenizer, device, args)
        res["ratios"] = shared_context_ratios(res["shared_context"])
        res["load_average_end"] = os.getloadavg()[0]
        return res
    loss = lambda: scorer.loss(batch, "lm")  # noqa: E731
    r = args.repeats
    res: dict = {"model": source, "device": str(device), "batch": f"{args.batch_size}x{args.tokens} tokens",
                 "params": sum(p.numel() for _, p in named), "threads": torch.get_num_threads(),
                 "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                 "cpu_count": os.cpu_count(), "torch": torch.__version__,
                 "load_average_start": os.getloadavg()[0]}  # other jobs on the machine skew timings
    print(f"bench: {source} on {device}, batch {res['batch']}, {res['params']/1e6:.1f}M params", flush=True)

    inner_ms: list[float] = []  # forward time inside ZO steps: what the step adds beyond its forwards

    def timed_loss():
        synchronize(device)
        t0 = time.perf_counter()
        value = loss()
        synchronize(device)
        inner_ms.append((time.perf_counter() - t0) * 1e3)
        return value

    def two_forwards():  # what a two-point ZO step contains, back to back as in the step
        with torch.no_grad():
            loss()
            loss()

    phases = {"two_forwards": two_forwards}
    for dist in args.distributions:
        stream, _, d = dist.rpartition(":")  # "philox:gaussian": the Philox stream (optim/philox.py)
        zo_opt = ZOOptimizer(named, SPSA(direction_stream=stream or "chunked"), lr=1e-9, eps=1e-3, seed=0, distribution=d)
        phases[f"zo_sgd_{dist}"] = lambda o=zo_opt: o.step(timed_loss)
    phases["mezo_ref"] = lambda: mezo_reference_step(named, loss, 1e-9, 1e-3, 0.0, 1)
    fo_sgd = FOOptimizer(named, torch.optim.SGD, lr=1e-9)
    fo_adam = FOOptimizer(named, torch.optim.AdamW, lr=1e-9)
    phases["fo_sgd"] = lambda: fo_sgd.step(loss)
    phases["fo_adam"] = lambda: fo_adam.step(loss)

    # Peaks: one phase at a time, in this order (FO last: gradients and Adam's state stay allocated;
    # the other ZO optimizers before MeZO's reference step and FO, each freed after its phase).
    late = ("mezo_ref", "fo_sgd", "fo_adam")
    for name, fn in phases.items():
        if name not in late:
            res[name] = peak_of(fn, device)
            print(f"  {name:18s} peak {res[name]['peak_bytes'] / 2**20:8.0f} MiB", flush=True)
    # The other ZO optimizers, one at a time (their state never sits under another phase's peak): each built
    # inside its peak measurement, so the peak holds its state, then timed (its own repeats) and freed.
    for name in args.optimizers:
        from zobench.measure import release_memory

        holder: dict = {}
        release_memory()
        meter = PeakMemory(device)
        meter.reset()  # from here: the optimizer's state, then its step (the phases above warmed every cache)
        holder["opt"] = _build_optimizer(name, named)
        extra = {}
        if getattr(holder["opt"], "needs_full_batch", False):  # MeZO-SVRG: its anchors read a "train set" of two
            from zobench.optim.mezo_svrg import full_batch_loss  # batches (the step's and another), micro-batched

            extra["full_batch"] = full_batch_loss(lambda ex: scorer.loss(ex, "lm"), train_set, args.batch_size)
        holder["opt"].step(timed_loss, **extra)
        res[f"opt_{name}"] = meter.read()
        opt_times = [timed(lambda: holder["opt"].step(timed_loss, **extra), device, 1, warmup=0) for _ in range(r)]
        res[f"opt_{name}"].update(time_ms=statistics.median(opt_times), times_ms=opt_times,
                                  state_bytes=holder["opt"].state_bytes())
        print(f"  opt_{name:14s} peak {res[f'opt_{name}']['peak_bytes'] / 2**20:8.0f} MiB, "
              f"time {res[f'opt_{name}']['time_ms']:9.1f} ms", flush=True)
        holder.clear()
        release_memory()

    for name in late:
        res[name] = peak_of(phases[name], device)
        print(f"  {name:18s} peak {res[name]['peak_bytes'] / 2**20:8.0f} MiB", flush=True)
    # Times: the phases' repeats interleaved round-robin, so a slow spell of the machine (other jobs,
    # frequency changes) falls on every phase alike instead of on whichever ran then.
    times = {name: [] for name in phases}
    for _ in range(r):
        for name, fn in phases.items():
            inner_ms.clear()
            times[name].append(timed(fn, device, 1, warmup=0))
            if name.startswith("zo_sgd"):
                res[name].setdefault("forward_ms_in_step", []).append(sum(inner_ms))
    for name in phases:
        res[name]["time_ms"] = statistics.median(times[name])
        res[name]["times_ms"] = times[name]
        if "forward_ms_in_step" in res[name]:
            res[name]["forward_ms_in_step_ms"] = res[name]["forward_ms_in_step"]  # per round
            res[name]["forward_ms_in_step"] = statistics.median(res[name]["forward_ms_in_step"])
        print(f"  {name:18s} time {res[name]['time_ms']:9.1f} ms", flush=True)
    res["passes"] = direction_passes([p for _, p in named], args.distributions, device, r)
    for name in (*FLOORS, *args.distributions):
        print(f"  pass {name:22s} {res['passes'][name]['time_ms']:8.1f} ms "
              f"({res['passes'][name]['ns_per_element']:.2f} ns per element)", flush=True)

    eval_examples = make_batch(tokenizer, args.eval_examples, args.tokens, seed=1)
    batched_ms = timed(lambda: scorer.predict(eval_examples, batch_size=2 * args.batch_size), device, 1)
    single_ms = timed(lambda: per_candidate_predict(model, tokenizer, eval_examples), device, 1)
    agree = scorer.predict(eval_examples, 2 * args.batch_size) == per_candidate_predict(model, tokenizer, eval_examples)
    res["eval"] = {"examples": len(eval_examples), "batched_ms": batched_ms, "per_candidate_ms": single_ms,
                   "predictions_agree": agree}

    res["shared_context"] = shared_context_phase(model, tokenizer, device, args)

    two_fwd = res["two_forwards"]["time_ms"]
    zo = res["zo_sgd_gaussian"]
    ratios = {
        "zo_step_over_two_forwards": zo["time_ms"] / two_fwd,
        "zo_peak_over_inference_peak": zo["peak_bytes"] / res["two_forwards"]["peak_bytes"],
        "mezo_ref_step_over_zo_step": res["mezo_ref"]["time_ms"] / zo["time_ms"],
        "fo_adam_peak_over_inference_peak": res["fo_adam"]["peak_bytes"] / res["two_forwards"]["peak_bytes"],
        "batched_over_per_candidate_eval_throughput": single_ms / batched_ms,
    }
    for dist in args.distributions[1:]:
        ratios[f"zo_step_{dist}_over_two_forwards"] = res[f"zo_sgd_{dist}"]["time_ms"] / two_fwd
        ratios[f"zo_peak_{dist}_over_inference_peak"] = res[f"zo_sgd_{dist}"]["peak_bytes"] / res["two_forwards"]["peak_bytes"]
    for dist in args.distributions:  # the step against its own two forwards: what RNG and updates add
        zo_d = res[f"zo_sgd_{dist}"]
        ratios[f"zo_step_{dist}_over_its_own_forwards"] = zo_d["time_ms"] / zo_d["forward_ms_in_step"]
    for name in args.optimizers:  # against ZO-SGD's step (Gaussian, chunked) on the same batch
        ratios[f"{name}_step_over_zo_sgd_step"] = res[f"opt_{name}"]["time_ms"] / zo["time_ms"]
        ratios[f"{name}_peak_over_zo_sgd_peak"] = res[f"opt_{name}"]["peak_bytes"] / zo["peak_bytes"]
    ratios.update(shared_context_ratios(res["shared_context"]))
    passes = res["passes"]
    for dist in args.distributions:  # one pass against the floors; three passes' share of two forwards
        ratios[f"pass_{dist}_over_inplace_add"] = passes[dist]["over_inplace_add"]
        ratios[f"pass_{dist}_over_axpy"] = passes[dist]["time_ms"] / passes["axpy"]["time_ms"]
        ratios[f"three_passes_{dist}_over_two_forwards"] = 3 * passes[dist]["time_ms"] / two_fwd
    ratios["three_passes_inplace_add_over_two_forwards"] = 3 * passes["inplace_add"]["time_ms"] / two_fwd
    res["ratios"] = ratios
    # the same step ratios as geometric means over the paired rounds, with 95% intervals (bench_passes)
    intervals = {}
    for dist in args.distributions:
        zo_d = res[f"zo_sgd_{dist}"]
        key = "zo_step_over_two_forwards" if dist == "gaussian" else f"zo_step_{dist}_over_two_forwards"
        intervals[key] = paired_ratio(zo_d["times_ms"], res["two_forwards"]["times_ms"])
        intervals[f"zo_step_{dist}_over_its_own_forwards"] = paired_ratio(zo_d["times_ms"], zo_d["forward_ms_in_step_ms"])
    res["ratio_intervals"] = intervals
    res["load_average_end"] = os.getloadavg()[0]
    return res


def _build_optimizer(name: str, named):
    """``conf/optimizer/<name>.yaml`` at its defaults, lr 1e-9 (the weights barely move)."""
    from omegaconf import OmegaConf

    from zobench.cli_check import compose
    from zobench.optim import build_optimizer

    cfg = compose([f"optimizer={name}", "optimizer.lr=1e-9"]).optimizer
    OmegaConf.resolve(cfg)
    return build_optimizer(cfg, named, 1000, 0)


def shared_context_ratios(phase: dict) -> dict:
    ratios = {}
    for shape, r in phase.items():
        if isinstance(r, dict):
            ratios[f"shared_over_per_candidate_eval_throughput_{shape}"] = r["eval_speedup"]
            ratios[f"shared_over_per_candidate_loss_speed_{shape}"] = r["loss_speedup"]
    return ratios


# (ratio, target on CPU, target on GPU, better when) — from the performance issue
TARGETS = {
    "zo_step_over_two_forwards": (1.15, 1.05, "lower"),
    "zo_step_rademacher_over_two_forwards": (1.15, 1.05, "lower"),
    "zo_step_philox:gaussian_over_two_forwards": (1.15, 1.05, "lower"),
    "zo_step_philox:rademacher_over_two_forwards": (1.15, 1.05, "lower"),
    "zo_step_philox_fast:gaussian_over_two_forwards": (1.15, 1.05, "lower"),
    "zo_step_philox_icdf:gaussian_over_two_forwards": (1.15, 1.05, "lower"),
    "zo_peak_over_inference_peak": (1.05, 1.02, "lower"),
    "zo_peak_rademacher_over_inference_peak": (1.05, 1.02, "lower"),
    "batched_over_per_candidate_eval_throughput": (5.0, 5.0, "higher"),
}


def markdown(res: dict) -> str:
    """The figures as a Markdown report: phases, then ratios beside their targets."""
    gpu = res["device"].startswith("cuda")
    lines = [f"`make bench` — {res['model']}, {res['device']} ({res['machine']}, {res['cpu_count']} cores, "
             f"{res['threads']} threads), batch {res['batch']}, torch {res['torch']}, {res['date']}; "
             f"load average {res['load_average_start']:.2f} → {res['load_average_end']:.2f}", ""]
    if "two_forwards" in res:
        lines += ["| phase | median time (ms) | peak memory (MiB) |", "|---|---:|---:|"]
    phases = [k for k, v in res.items() if isinstance(v, dict) and "time_ms" in v and "peak_bytes" in v]
    for name in phases:
        if name in res:
            lines.append(f"| {name} | {res[name]['time_ms']:.0f} | {res[name]['peak_bytes'] / 2**20:.0f} |")
    if "eval" in res:
        ev = res["eval"]
        lines += ["", f"Evaluation of {ev['examples']} two-way examples: batched {ev['batched_ms']:.0f} ms, "
                  f"one forward per candidate {ev['per_candidate_ms']:.0f} ms (same predictions: {ev['predictions_agree']})."]
    if "shared_context" in res:
        lines += ["", "Multi-token candidates, shared context (one packed row per example) vs one sequence per candidate "
                  "(MeZO templates; evaluation: candidate scores of every example; loss: the classification loss of "
                  "one training batch, no grad):", "",
                  "| shape | eval shared (ms) | eval per-candidate (ms) | loss shared (ms) | loss per-candidate (ms) "
                  "| padded tokens (loss batch) | max abs Δ mean log-prob | same predictions |",
                  "|---|---:|---:|---:|---:|---:|---:|:---:|"]
        for shape, r in res["shared_context"].items():
            if isinstance(r, dict):
                tokens = (f"{r['loss_padded_tokens_shared']} vs {r['loss_padded_tokens_per_candidate']}"
                          if r["loss_padded_tokens_shared"] is not None else "–")
                lines.append(f"| {shape} | {r['eval_shared_ms']:.0f} | {r['eval_per_candidate_ms']:.0f} | "
                             f"{r['loss_shared_ms']:.0f} | {r['loss_per_candidate_ms']:.0f} | {tokens} | "
                             f"{r['max_abs_mean_logprob_diff']:.1e} | {r['predictions_agree']} |")
        if res["shared_context"].get("off_reason"):
            lines.append(f"\nShared context off for this model: {res['shared_context']['off_reason']}.")
    if "passes" in res:
        ps = res["passes"]
        two_fwd = res["two_forwards"]["time_ms"]
        lines += ["", f"One in-place pass θ += c·z over all {ps['elements'] / 1e6:.1f}M parameters ({ps['threads']} threads; "
                  "a ZO-SGD step makes three), against the floors: θ += c (the memory traffic of a fused draw-and-add) "
                  "and an axpy of a z already drawn:", "",
                  "| pass | median time (ms) | ns per element | × θ += c | × axpy | 3 passes / two forwards |",
                  "|---|---:|---:|---:|---:|---:|"]
        for name in [k for k in ps if isinstance(ps[k], dict)]:
            lines.append(f"| {name} | {ps[name]['time_ms']:.1f} | {ps[name]['ns_per_element']:.3f} | "
                         f"{ps[name]['over_inplace_add']:.2f} | {ps[name]['time_ms'] / ps['axpy']['time_ms']:.2f} | "
                         f"{3 * ps[name]['time_ms'] / two_fwd:.3f} |")
    intervals = res.get("ratio_intervals", {})
    lines += ["", "Ratios of medians; for the ZO steps also the geometric mean of the paired rounds' ratios with its 95% "
              "interval (Student-t on the logs, n rounds). Met: yes when the whole interval meets the target, no when "
              "none of it does, unclear when it straddles the target.", "",
              "| ratio | measured | paired rounds: mean (95% interval), n | target | met |", "|---|---:|---:|---:|:---:|"]
    for key, value in res["ratios"].items():
        iv = intervals.get(key)
        shown = "" if iv is None else (f"{iv['ratio']:.3f} ({iv['lo']:.3f}, {iv['hi']:.3f}), {iv['n']}"
                                       if iv["lo"] is not None else f"{iv['ratio']:.3f}, 1")
        if key in TARGETS:
            cpu_t, gpu_t, better = TARGETS[key]
            target = gpu_t if gpu else cpu_t
            met = verdict(iv if iv is not None else {"ratio": value, "lo": None, "hi": None}, target, better)
            sign = "≤" if better == "lower" else "≥"
            lines.append(f"| {key} | {value:.3f} | {shown} | {sign} {target} | {met} |")
        else:
            lines.append(f"| {key} | {value:.3f} | {shown} | | |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="zobench step/memory benchmark (make bench)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES), help="the weights' dtype (GPU: fp16, bf16)")
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "smollm2-135m")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7, help="rounds of the timed phases (paired: the ratio intervals have n = this)")
    parser.add_argument("--eval-examples", type=int, default=16)
    parser.add_argument("--tiny", action="store_true", help="a tiny random model (the bench's own test)")
    parser.add_argument("--distributions", nargs="+",
                        default=["gaussian", "rademacher", "philox:gaussian", "philox:rademacher",
                                 "philox_fast:gaussian", "philox_icdf:gaussian"],
                        help="ZO directions to time; STREAM:DIST picks a direction stream (philox:gaussian)")
    parser.add_argument("--optimizers", nargs="*",
                        default=["zo_adam", "hizoo", "lozo", "lozo_m", "fzoo", "sparse_mezo", "mezo_svrg", "bszo"],
                        help="other ZO optimizers to time against ZO-SGD (their YAML defaults)")
    parser.add_argument("--shared-examples", type=int, default=None,
                        help="examples per shape in the shared-context phase's evaluation (default: 2 x --eval-examples)")
    parser.add_argument("--shared-shapes", nargs="+", default=["copa", "winogrande"], choices=["copa", "winogrande"])
    parser.add_argument("--only", choices=["shared_context"], default=None, help="run this phase alone")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "bench.json")
    args = parser.parse_args(argv)
    args.shared_examples = args.shared_examples or 2 * args.eval_examples
    res = run(args)
    res["date"] = time.strftime("%Y-%m-%d %H:%M:%S")
    res["dtype"] = args.dtype
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(res))
    print("\nratios:")
    for k, v in res["ratios"].items():
        print(f"  {k:48s} {v:6.3f}")
    print(f"\nwritten to {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
