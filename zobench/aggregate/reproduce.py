"""``make reproduce-tables [SCALE=cpu|full]``: run the paper grids, then build their tables.

The grids are the Hydra experiment overlays ``conf/experiment/<scale>/<layout>/<block>.yaml``
(``base.yaml`` files are shared settings, not blocks). Each block runs as one Hydra multirun
into ``RUNS_DIR/<layout>/<block>``; re-running resumes it (completed cells are skipped). A
choice a block names but ``conf/`` does not have yet (an optimizer still being written) is left
out with a message, not an error. Before anything runs, the estimated duration of every block
is printed:

* ``full``: OPT-13B / OPT-1.3B from the Hugging Face hub on GPUs. Training steps are timed from
  MeZO's own per-step wall-clock (Malladi et al. 2023, Appendix F.6, Table 23, A100-80GB),
  scaled by batch size and by forward passes per step; evaluation is not counted. It refuses
  to start without CUDA unless ``--force``.
* ``cpu``: SmolLM2-135M on 2 CPU cores, from a cost model timed on this project's machines
  (``zobench.aggregate.cost``, measured with one thread and scaled to two).
"""
from __future__ import annotations

import argparse
import itertools
import math
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from zobench import CONF_DIR, ROOT
from zobench.aggregate.cost import (EVAL_PAIRS_PER_BATCH, FO_UPDATE_FULL_S, FWD_OVERHEAD_S,  # noqa: F401
                                    FWD_S_PER_TOKEN, GPU_STEP_S, JOB_OVERHEAD_S, LAYERS, PAIRS, PROCESS_START_S,
                                    STEP_COST, THREAD_SPEEDUP, TOKENS, VIRTUAL_TOKENS, ZO_SWEEP_FULL_S, _fwd_s,
                                    cpu_seconds, gpu_seconds)  # the cost model, re-exported
from zobench.aggregate.search import sources as search_sources

GROUPS = ("model", "task", "tuning", "optimizer")
LAYOUT_ORDER = ("mezo_opt13b", "zobench_sst2", "copa_winogrande_opt13b", "memory_time")


@dataclass
class Block:
    name: str                      # e.g. cpu/mezo_opt13b/zo_full
    jobs: list[dict]               # one dict of sweep values per cell
    skipped: dict = field(default_factory=dict)   # group -> choices conf/ does not have
    overrides: list[str] = field(default_factory=list)  # narrowed sweeps passed on the command line
    seconds: float = 0.0
    gpu_hours: float = 0.0
    unknown: int = 0               # jobs the model cannot estimate
    search: dict | None = None     # the dev-only learning-rate search (zobench.aggregate.search), or {"from": ...}
    search_jobs: list[dict] = field(default_factory=list)  # its cells (seed 0, trainer.test=false)
    protocol: str = ""             # loss, metric, max length, selection rule, variant (printed by the plan)
    estimates: list = field(default_factory=list)  # (kind: main | search, job, estimated seconds) per cell
    done: dict = field(default_factory=dict)  # kind -> (cells finished, measured wall seconds, their estimate)
    alone: list = field(default_factory=list)  # (measured wall seconds, estimate) of finished cells that ran alone

    @property
    def layout(self) -> str:
        return self.name.split("/")[1]


def block_names(scale: str) -> list[str]:
    root = CONF_DIR / "experiment" / scale
    names = [p for p in root.rglob("*.yaml") if p.stem != "base" and p.parent != root]
    order = {n: i for i, n in enumerate(LAYOUT_ORDER)}
    names.sort(key=lambda p: (order.get(p.parent.name, 99), p.parent.name, p.stem))
    names = [str(p.relative_to(CONF_DIR / "experiment").with_suffix("")) for p in names]
    listed = _listed_order(root / "order.txt", scale)
    rank = {n: i for i, n in enumerate(listed)}
    return sorted(names, key=lambda n: rank.get(n, len(rank)))  # stable: unlisted blocks keep their order


def cut_blocks(scale: str) -> dict[str, str]:
    """``conf/experiment/<scale>/cut.txt``: blocks left out of the study to fit its time budget, one a line, each
    with its reason after ``#``: ``{block name: reason}``. ``--only`` still runs a cut block by name."""
    return dict(_block_lines(CONF_DIR / "experiment" / scale / "cut.txt", scale))


def _block_lines(path: Path, scale: str) -> list[tuple[str, str]]:
    """(``scale/layout/block``, the comment after ``#``) for each line of ``path`` that names a block."""
    if not path.is_file():
        return []
    lines = (line.partition("#") for line in path.read_text().splitlines())
    return [(f"{scale}/{name.strip()}", comment.strip()) for name, _, comment in lines if name.strip()]


def _listed_order(path: Path, scale: str) -> list[str]:
    """``conf/experiment/<scale>/order.txt``: block names (``layout/block``), one a line, the order to run them in."""
    return [name for name, _ in _block_lines(path, scale)]


def _compose(overrides: list[str], hydra_config: bool = False):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=hydra_config)


def _sweep_values(key: str, value) -> list:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    override = OverridesParser.create().parse_overrides([f"{key}={value}"])[0]
    return list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]


def plan_block(name: str, extra: list[str] = ()) -> Block:
    """The cells of one block; ``extra`` command-line overrides narrow or replace its sweeps, as Hydra does."""
    fixed = [o for o in extra if "=" in o and not o.startswith("hydra")]
    cfg = _compose([f"+experiment={name}"], hydra_config=True)
    params = {str(k): v for k, v in (cfg.hydra.sweeper.params or {}).items()}
    for o in fixed:  # the command line wins over hydra.sweeper.params for the same key
        key, value = o.split("=", 1)
        params[key.lstrip("+")] = value
    axes, skipped, overrides = {}, {}, []
    for key, value in params.items():
        values = _sweep_values(key, value)
        if key in GROUPS:
            have = [v for v in values if (CONF_DIR / key / f"{v}.yaml").exists()]
            if len(have) < len(values):
                skipped[key] = [v for v in values if v not in have]
                overrides.append(f"{key}={','.join(map(str, have))}" if have else "")
            values = have
        axes[key] = values
    if any(not v for v in axes.values()):
        return Block(name, [], skipped, overrides)
    jobs = [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]
    block = Block(name, jobs, skipped, [o for o in overrides if o])
    from zobench.aggregate import search

    block.search = search.spec(cfg)
    if block.search and "grid" in block.search:
        block.search_jobs = search.jobs(block.search, axes)
    return block


def _shape_keys(job: dict) -> list[str]:
    return [k for k in job if k not in ("seed", "optimizer.lr", "optimizer.eps")]


def _job_settings(name: str, job: dict, cache: dict, extra: tuple[str, ...] = ()) -> dict:
    """The settings of one cell that its cost depends on (composed once per distinct shape)."""
    shape = tuple((k, job[k]) for k in _shape_keys(job)) + tuple(extra)
    if shape not in cache:
        cfg = _compose([f"+experiment={name}", *(f"{k}={job[k]}" for k in _shape_keys(job)), *extra])
        t, d = cfg.trainer, cfg.data
        cache[shape] = dict(model=cfg.model.name, task=cfg.task.name, tuning=cfg.tuning.name,
                            optimizer=cfg.optimizer.name, family=cfg.optimizer.get("family", "zo"),
                            steps=int(t.steps), batch=int(t.batch_size), eval_every=int(t.eval_every),
                            zero_shot=bool(t.zero_shot), test=bool(t.get("test", True)), max_length=int(t.max_length),
                            num_dev=int(d.num_dev), num_eval=int(d.num_eval), dtype=cfg.dtype,
                            demonstrations=int(cfg.tuning.get("num_demonstrations") or 0),
                            shared_context=bool(t.get("shared_context", True)), protocol=_protocol(cfg))
    return cache[shape]


def _protocol(cfg) -> str:
    """What produced a block's numbers: loss, metric, max length, selection rule, variant (the plan prints it)."""
    variant = cfg.optimizer.get("variant") or "paper"
    sign = f", sign={cfg.optimizer.sign}" if cfg.optimizer.get("sign") else ""
    sign += " dropout=on (train mode)" if cfg.optimizer.get("train_mode") else ""
    pool = f" demonstrations={cfg.tuning.get('demonstration_pool')}" if cfg.tuning.name == "icl" else ""
    return (f"task={cfg.task.name} loss={cfg.trainer.loss} metric={cfg.task.metric} max_length={cfg.trainer.max_length} "
            f"selection={cfg.trainer.get('selection', 'dev_metric')} variant={variant}{sign} "
            f"schedule={cfg.optimizer.get('schedule')} eval_every={cfg.trainer.eval_every} dtype={cfg.dtype}{pool}")


def estimate(block: Block, scale: str) -> Block:
    cache: dict = {}
    from zobench.aggregate import search

    runs = [(job, ()) for job in block.jobs]
    if block.search_jobs:
        runs += [(job, tuple(search.search_overrides(block.search)[:4])) for job in block.search_jobs]
    for job, extra in runs:
        s = _job_settings(block.name, job, cache, extra)
        if s["protocol"] not in block.protocol.split("\n      "):
            block.protocol = f"{block.protocol}\n      {s['protocol']}" if block.protocol else s["protocol"]
        if scale == "cpu":
            seconds = cpu_seconds(s)
            block.seconds += seconds
            block.estimates.append(("search" if extra else "main", job, seconds))
        else:
            g = gpu_seconds(s)
            if g is None:
                block.unknown += 1
            else:
                block.seconds += g[0]
                block.gpu_hours += g[1]
    if scale == "cpu" and block.jobs:
        block.seconds += PROCESS_START_S * (1 + bool(block.search_jobs))
    return block


IDENTITY = {"task": "task", "tuning": "tuning", "optimizer": "optimizer", "dtype": "dtype", "seed": "seed",
            "task.template": "template", "optimizer.lr": "lr"}  # job key -> summary key, to find a cell's job


def _job_of(summary: dict, estimates: list, kind: str):
    """The planned cell a finished summary belongs to (its sweep values agree), with its estimate."""
    for k, job, seconds in estimates:
        if k == kind and all(str(summary.get(IDENTITY[key])) == str(value) if not isinstance(value, float)
                             else math.isclose(float(summary.get(IDENTITY[key]) or math.nan), value, rel_tol=1e-9)
                             for key, value in job.items() if key in IDENTITY):
            return seconds
    return None


def measure_done(blocks: list[Block], runs_dir: Path) -> None:
    """What each block has already run: its finished cells (any status but interrupted), their measured wall
    time and the estimate of the same cells, read from the summaries under ``runs_dir`` and its search folder."""
    import json

    from zobench.aggregate import search

    for b in blocks:
        dirs = {"main": runs_dir / b.name.split("/", 1)[1], "search": search.block_dir(runs_dir, b.name)}
        for kind, directory in dirs.items():
            n, wall, est = 0, 0.0, 0.0
            for path in sorted(directory.rglob("summary.json")) if directory.is_dir() else []:
                try:
                    summary = json.loads(path.read_text())
                except (OSError, ValueError):
                    continue
                seconds = _job_of(summary, b.estimates, kind)
                if summary.get("status") in ("completed", "diverged", "failed") and summary.get("wall_time_s") and seconds:
                    n, wall, est = n + 1, wall + float(summary["wall_time_s"]), est + seconds
                    if ran_alone(summary):
                        b.alone.append((float(summary["wall_time_s"]), seconds))
            if n:
                b.done[kind] = (n, wall, est)


def ran_alone(summary: dict) -> bool:
    """Whether a run had the machine to itself: its summary records the 1-minute load average at start and end
    (zobench/run.py), and neither exceeds the core count by more than half a process. A run's own threads load
    the machine up to its core count, and the run before it in a sweep leaves ~that much at its start; a test
    suite or a benchmark beside it adds ~2 more. Runs from before the load was recorded are not counted."""
    cores = summary.get("cpu_count")
    loads = summary.get("load_average_1m_start"), summary.get("load_average_1m_end")
    return bool(cores) and all(v is not None for v in loads) and max(loads) <= cores + 0.5


def _remaining(b: Block) -> float:
    """The estimate of what is left of ``b``: nothing once each kind of its cells is done (the block's process
    start-up, in its estimate, is then spent), else its estimate less that of its finished cells."""
    planned = {kind: sum(1 for k, _, _ in b.estimates if k == kind) for kind, _, _ in b.estimates}
    if all(b.done.get(kind, (0,))[0] >= n for kind, n in planned.items()):
        return 0.0
    return max(b.seconds - sum(est for _, _, est in b.done.values()), 0.0)


def _hms(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.1f} min"


def print_plan(blocks: list[Block], scale: str) -> float:
    total = sum(b.seconds for b in blocks)
    print(f"[reproduce-tables] SCALE={scale}: {sum(len(b.jobs) for b in blocks)} cells in {len(blocks)} blocks")
    for b in blocks:
        extra = ""
        if scale == "full":
            extra = f", {b.gpu_hours:8.0f} GPU-h" + (f" ({b.unknown} cells not estimated)" if b.unknown else "")
        searched = f" + {len(b.search_jobs)} search" if b.search_jobs else ""
        print(f"  {b.name:48s} {len(b.jobs):4d} cells{searched:>11s}  ~{_hms(b.seconds):>9s}{extra}")
        if b.protocol:
            print(f"      {b.protocol}")
        for kind, (n, wall, est) in sorted(b.done.items()):
            cells = sum(1 for k, _, _ in b.estimates if k == kind)
            print(f"      done: {n}/{cells} {kind} cells, measured {_hms(wall)} against an estimate of {_hms(est)} "
                  f"(x{wall / est:.2f})")
        if b.search and "from" in b.search:
            print(f"      learning rate: the dev search of {', '.join(search_sources(b.search))}")
        elif b.search:
            print(f"      learning rate: dev-only search over {b.search['grid']} ({b.search['steps']} steps, seed 0)")
        for group, missing in b.skipped.items():
            print(f"      left out, no conf/{group}/<name>.yaml yet: {group}={','.join(missing)}")
    if scale == "cpu" and any(b.done for b in blocks):
        n_done = sum(n for b in blocks for n, _, _ in b.done.values())
        wall = sum(w for b in blocks for _, w, _ in b.done.values())
        est = sum(e for b in blocks for _, _, e in b.done.values())
        print(f"  finished so far: {n_done} cells in {_hms(wall)}, against an estimate of {_hms(est)} for them "
              f"(x{wall / est:.2f}); left: ~{_hms(sum(_remaining(b) for b in blocks))} on idle cores, "
              f"~{_hms(sum(_remaining(b) for b in blocks) * wall / est)} at the pace measured so far")
    alone = [cell for b in blocks for cell in b.alone]
    if scale == "cpu" and alone:
        ratios = sorted(wall / est for wall, est in alone)
        within = sum(0.7 <= r <= 1.3 for r in ratios)
        print(f"  cells that ran alone (recorded 1-min load <= cores + 0.5 at start and end; older runs record none): "
              f"{len(alone)}, measured {_hms(sum(w for w, _ in alone))} against an estimate of "
              f"{_hms(sum(e for _, e in alone))} (x{sum(w for w, _ in alone) / sum(e for _, e in alone):.2f}); "
              f"per cell x{ratios[0]:.2f}-x{ratios[-1]:.2f}, {within} of {len(ratios)} within +-30%")
    if scale == "cpu":
        print(f"  estimated total: ~{_hms(total)} on 2 idle CPU cores (cost model in zobench/aggregate/cost.py; other jobs on the machine make it longer)")
    else:
        gpu_h = sum(b.gpu_hours for b in blocks)
        print(f"  estimated total: ~{total / 3600:.0f} h of training steps run one after another, "
              f"{gpu_h:.0f} GPU-hours on A100-80GB (MeZO Table 23 per-step times; evaluation not counted).")
        print("  The full grids need GPUs and the Hugging Face hub (OPT-13B / OPT-1.3B weights, GLUE/SuperGLUE "
              "data unless DATA_DIR is given). FT of OPT-13B needs ~316 GB (MeZO Table 22): on one GPU those "
              "cells fail out-of-memory and are listed under the tables. hydra/launcher=submitit_slurm spreads "
              "a block over a cluster.")
    return total


def _dirname_excludes() -> str:
    """conf/config.yaml's override_dirname exclusions plus ``experiment``: a cell's directory is named by
    its sweep values only (the experiment is already the folder above it, and its '/' would nest)."""
    cfg = _compose([], hydra_config=True)
    keys = list(cfg.hydra.job.config.override_dirname.exclude_keys) + ["experiment"]
    return f"hydra.job.config.override_dirname.exclude_keys=[{','.join(dict.fromkeys(keys))}]"


def _multirun(block_name: str, sweep_dir: Path, overrides: list[str], data_dir: str | None, extra: list[str],
              threads: int | None) -> int:
    cmd = [sys.executable, "-m", "zobench", "-m", f"+experiment={block_name}", f"hydra.sweep.dir={sweep_dir}",
           _dirname_excludes(), *overrides, *([f"data.dir={data_dir}"] if data_dir else []), *extra]
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep: shared cores are not burnt spinning
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    print(f"[reproduce-tables] {' '.join(shlex.quote(c) for c in cmd)}", flush=True)
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


def _fixed(job: dict, keys) -> list[str]:
    return [f"{k}={job[k]}" for k in keys]


def run_search(block: Block, runs_dir: Path, data_dir: str | None, extra: list[str], threads: int | None) -> list[dict]:
    """Run (or resume) the block's dev-only search; return its choice per group and write search.json."""
    from zobench.aggregate import search

    s = block.search
    directory = search.block_dir(runs_dir, block.name)
    groups = [k for k in block.search_jobs[0] if k != "seed" and k not in s["grid"]]
    grid_sweeps = [f"{k}={','.join(map(str, v))}" for k, v in s["grid"].items()]
    group_values = sorted({tuple(job[k] for k in groups) for job in block.search_jobs}, key=str)
    done = search.recorded_choice(directory, s, [dict(zip(groups, values)) for values in group_values])
    if done is not None:  # searched before (maybe on another machine): the choice stands; delete search.json to redo
        print(f"[reproduce-tables] search of {block.name}: reusing {directory / 'search.json'}", flush=True)
        return done
    code = 0
    for values in group_values:
        fixed = [f"{k}={v}" for k, v in zip(groups, values)]
        code |= _multirun(block.name, directory, [*block.overrides, *fixed, *grid_sweeps, *search.search_overrides(s)],
                          data_dir, extra, threads)
    rows = search.results(directory, s, groups)
    chosen = [{"group": dict(zip(groups, values)), "values": search.choose(rows, s, dict(zip(groups, values)))}
              for values in group_values]
    path = search.write_record(directory, block.name, s, rows, chosen)
    print(f"[reproduce-tables] search of {block.name}: {path} -> " +
          "; ".join(f"{c['group']}: {c['values']}" for c in chosen), flush=True)
    for c in chosen:
        edge = search.at_edge(s["grid"], c["values"])
        if edge:
            print(f"[reproduce-tables] search of {block.name}: {c['group']} chose {c['values']} at the edge of the "
                  f"grid in {', '.join(edge)}; the best may lie beyond it: widen search.grid there", flush=True)
    if code:
        print(f"[reproduce-tables] search of {block.name}: a sweep exited {code}", flush=True)
    return chosen


def run_block(block: Block, runs_dir: Path, data_dir: str | None, extra: list[str], threads: int | None = None,
              searched: dict | None = None) -> int:
    """Run one block: its search first (or the search it reuses), then its cells at the chosen values."""
    from zobench.aggregate import search

    sweep_dir = runs_dir / block.name.split("/", 1)[1]
    searched = {} if searched is None else searched
    if not block.search:
        return _multirun(block.name, sweep_dir, block.overrides, data_dir, extra, threads)
    if "from" in block.search:
        overrides, missing = search.from_overrides(runs_dir, block.search)
        for source in missing:  # the block it reuses has not searched yet: search it now
            scale = block.name.split("/", 1)[0]
            src = plan_block(f"{scale}/{source}", extra)
            if not src.search or "grid" not in src.search:
                print(f"[reproduce-tables] {block.name}: search.from={source} has no search grid", file=sys.stderr)
                return 2
            searched[src.name] = run_search(src, runs_dir, data_dir, extra, threads)
        overrides, missing = search.from_overrides(runs_dir, block.search)
        if missing:
            print(f"[reproduce-tables] {block.name}: the search of {', '.join(missing)} chose nothing "
                  "(a grid point failed?); skipped", file=sys.stderr)
            return 2
        return _multirun(block.name, sweep_dir, [*block.overrides, *overrides], data_dir, extra, threads)
    chosen = searched.get(block.name) or run_search(block, runs_dir, data_dir, extra, threads)
    code = 0
    for choice in chosen:
        if choice["values"] is None:
            print(f"[reproduce-tables] {block.name}: no choice for {choice['group']} (a grid point did not complete); "
                  "its cells are skipped", file=sys.stderr)
            code = 2
            continue
        fixed = [f"{k}={v}" for k, v in {**choice["group"], **choice["values"]}.items()]
        code |= _multirun(block.name, sweep_dir, [*block.overrides, *fixed], data_dir, extra, threads)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zobench.aggregate.reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=("cpu", "full"), default="cpu")
    parser.add_argument("--runs-dir", help="default runs/reproduce-<scale>")
    parser.add_argument("--data-dir", help="local copies of the datasets (data.dir); default: the hub")
    parser.add_argument("--only", action="append", default=[], metavar="LAYOUT[/BLOCK]",
                        help="run only these layouts or blocks (repeatable), e.g. mezo_opt13b or mezo_opt13b/zo_full")
    parser.add_argument("--threads", type=int, help="torch/OpenMP threads per cell (default: torch's choice, "
                        "one per core; 1 is faster on a machine other jobs share)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and the estimates, run nothing")
    parser.add_argument("--force", action="store_true", help="SCALE=full without CUDA")
    parser.add_argument("--command", help="the command to record beside the tables (default: this one)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every block, e.g. hydra/launcher=joblib")
    args = parser.parse_args(argv)
    runs_dir = Path(args.runs_dir or ROOT / "runs" / f"reproduce-{args.scale}").resolve()
    data_dir = str(Path(args.data_dir).resolve()) if args.data_dir else None
    cut = cut_blocks(args.scale)
    names = [n for n in block_names(args.scale)
             if (any(n.split("/", 1)[1] == o for o in args.only)  # named: runs even if cut
                 or (n not in cut and (not args.only or any(n.split("/")[1] == o for o in args.only))))]
    if cut:
        print(f"[reproduce-tables] cut to fit the study's time budget (conf/experiment/{args.scale}/cut.txt; "
              "--only LAYOUT/BLOCK runs one):")
        for name, reason in cut.items():
            print(f"  {name}: {reason}")
    blocks = [estimate(plan_block(n, args.overrides), args.scale) for n in names]
    measure_done(blocks, runs_dir)
    print_plan(blocks, args.scale)
    if args.dry_run:
        return 0
    if args.scale == "full" and not args.force:
        import torch

        if not torch.cuda.is_available():
            print("[reproduce-tables] SCALE=full needs CUDA GPUs (and the hub); none here. "
                  "Use SCALE=cpu, or --force to start anyway.", file=sys.stderr)
            return 2
    started, failures, searched = time.time(), [], {}
    for block in blocks:
        if not block.jobs:
            print(f"[reproduce-tables] {block.name}: nothing to run (every choice is missing)")
            continue
        if run_block(block, runs_dir, data_dir, args.overrides, args.threads, searched) != 0:
            failures.append(block.name)  # its sweep ended non-zero: failed, interrupted or refused cells (its last line)
    print(f"[reproduce-tables] grids done in {_hms(time.time() - started)}"
          + (f"; blocks with failed, interrupted or refused cells (each sweep's last line counts them): "
             f"{', '.join(failures)}" if failures else ""))
    from zobench.aggregate.cli import aggregate

    command = args.command or " ".join(shlex.quote(a) for a in ["python", "-m", "zobench.aggregate.reproduce",
                                                                 *(argv if argv is not None else sys.argv[1:])])
    result = aggregate(runs_dir, tables="all", out=runs_dir / "aggregate", command=command)
    print(result["markdown"])
    from zobench.aggregate.findings import write_findings

    write_findings(runs_dir, runs_dir / "aggregate" / "FINDINGS.md")
    print(f"[reproduce-tables] tables, figures and the papers' claims (FINDINGS.md): {runs_dir / 'aggregate'}")
    return 1 if failures else 0


if __name__ == "__main__":
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    sys.exit(main())
