"""Past one device: data-parallel workers (torchrun), and one model's layers over several GPUs (device_map).

Data parallel (``torchrun --nproc_per_node=N -m zobench ...``)
----------------------------------------------------------------
torchrun starts N processes and gives each ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``. With ``WORLD_SIZE > 1`` a cell joins that process group (``setup``: NCCL when ``device``
is CUDA, each worker on GPU ``LOCAL_RANK``; gloo on CPU) and runs as one run:

- **Same model, same stream.** Every worker loads the model and builds the same batches from the same
  seed (the trainable parameters are checked equal across workers once, and copied from rank 0 where
  they are not: ``sync_parameters``). Each worker evaluates its shard of every batch (contiguous,
  near-equal parts, ``shard``).
- **ZO: scalars only.** A loss the optimizer asks for is the weighted sum of the shards' losses,
  ``L = Σ_r (n_r / n)·L_r`` with ``n_r`` what the loss averages over in shard r (examples; gold tokens
  for ``lm``), all-reduced in float64 (``ShardedLoss``). It is the whole batch's mean loss, up to the
  order of the sums, so every worker computes the same projected gradient from the same z (drawn from
  the same seeds) and applies the same update: the parameters stay identical with no parameter
  traffic, one all-reduce of one number per forward pass. The loss log of a checkpoint holds these
  global values, so a ZO run resumes (replays) with any number of workers. Forward-Grad all-reduces
  its directional derivative beside the loss.
- **FO: DDP.** FO baselines (and the FO part of the hybrid) run their forward through
  ``torch.nn.parallel.DistributedDataParallel`` wrapped around the whole loss computation (so every
  scoring path, the shared-context one included, is one DDP forward), and DDP all-reduces the gradients
  in its backward. The local loss is scaled by ``N·n_r/n`` so that DDP's mean is the whole batch's
  gradient; micro-batches (``optimizer.accumulation_steps``) accumulate under ``no_sync`` and
  all-reduce once, with the last. Each micro-batch must give every worker an example
  (``trainer.batch_size >= N · accumulation_steps``). No FSDP: a model that does not fit one device is
  run with ``model.device_map`` (below), which is for ZO and inference.
- **Evaluation sharded and gathered.** Dev and eval sets are split over the workers, each scores its
  part, and the scores are gathered (``evaluate``, ``loss_over``): every worker then holds the whole
  evaluation, so dev selection and early stopping decide the same on every worker.
- **Rank 0 writes, the others write nothing.** Only rank 0 takes the run directory's lock and writes
  config.yaml, metrics.jsonl, summary.json, predictions, checkpoints and best states; it tells the
  others which cell to run (``start_cell`` / ``wait_for_cell``), or that it runs none (completed,
  busy, refused). The others keep their logs at WARNING. Stop signals are all-reduced at each step's
  end, so every worker stops after the same step; a resumed run's checkpoint is read by rank 0 and
  broadcast. ``summary.json`` records ``world_size``; its time and memory fields are rank 0's.
- Rank > 0's Hydra writes nothing either when the command line gets ``hydra_overrides()``
  (no ``.hydra/``, no ``run.log``, its own directories in a temp folder).

One node, 4 GPUs (``device=auto`` picks NCCL; one worker per GPU)::

    torchrun --nproc_per_node=4 -m zobench model=opt-13b task=sst2 optimizer=zo_sgd trainer.batch_size=16

On CPU: ``OMP_NUM_THREADS=1 torchrun --nproc_per_node=2 -m zobench device=cpu ...`` (gloo).

One model over several GPUs (``model.device_map``)
--------------------------------------------------
``model.device_map=auto`` (or ``balanced``, ``balanced_low_0``, ``sequential``, or an explicit
``{module name: device}`` map) places the model's layers over the visible GPUs with accelerate, as
MeZO ran OPT-66B: ``from_pretrained(device_map=...)`` loads each layer straight onto its GPU, and
accelerate's hooks move the activations from one device to the next. A ZO step perturbs every
parameter where it lives: z for tensor i is drawn on ``p.device`` (``zobench.optim.directions``: one
generator per device), so no parameter or direction crosses devices; only activations do. Evaluation
runs the same way. A map that offloads to CPU or disk is refused (an offloaded parameter is a
placeholder that a ZO step cannot perturb in place); so is combining it with torchrun. Run it as one
process over all the visible GPUs::

    CUDA_VISIBLE_DEVICES=0,1,2,3 zobench model=opt-66b dtype=fp16 model.device_map=auto optimizer=zo_sgd ...

The pipeline is sequential (one GPU works at a time, as in MeZO); memory and time fields are those of
``device`` (the first GPU).
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from zobench.errors import ConfigError

log = logging.getLogger("zobench")

TIMEOUT_MIN = 60  # collectives wait this long for a late worker (rank 0 writes checkpoints while the others wait)
_state: dict[str, Any] = {"backend": None, "device": torch.device("cpu"), "announced": True}


# -- the process group ----------------------------------------------------------------------------------

def requested_world_size() -> int:
    """WORLD_SIZE as torchrun sets it (1 without torchrun)."""
    try:
        return max(int(os.environ.get("WORLD_SIZE", "1")), 1)
    except ValueError:
        return 1


def setup(device: str = "auto") -> int:
    """Join the process group torchrun describes when WORLD_SIZE > 1 (once per process); the world size.

    NCCL with each worker on GPU ``LOCAL_RANK`` where ``device`` resolves to CUDA, gloo otherwise."""
    world = requested_world_size()
    if world == 1:
        return 1
    import torch.distributed as dist

    if dist.is_initialized():  # by this module for an earlier cell, or by the caller
        if _state["backend"] is None:
            found = dist.get_backend()
            comm = torch.device("cuda", torch.cuda.current_device()) if found == "nccl" else torch.device("cpu")
            _state.update(backend=found, device=comm)
        return dist.get_world_size()
    cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)  # "cuda" now means this worker's GPU: the model, the timers, the peaks
        backend, comm = "nccl", torch.device("cuda", local)
    else:
        backend, comm = "gloo", torch.device("cpu")
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=TIMEOUT_MIN))
    _state.update(backend=backend, device=comm)
    log.info("data parallel: rank %d of %d (%s)", dist.get_rank(), dist.get_world_size(), backend)
    return dist.get_world_size()


def active() -> bool:
    """Whether this process is one of several workers of a joined process group."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if active() else 1


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if active() else 0


def is_main() -> bool:
    """Rank 0 (or a single process): the worker that writes files."""
    return rank() == 0


def backend() -> str | None:
    return _state["backend"] if active() else None


def hydra_overrides() -> list[str]:
    """Hydra overrides for a worker of rank > 0, so that Hydra writes nothing of it in the runs folder:
    no ``.hydra/`` folder, no ``run.log`` (logs go to stdout), its run/sweep directories in a temp folder.
    ``[]`` for rank 0 and for a single process. To be appended to the command line before Hydra starts."""
    if requested_world_size() == 1 or os.environ.get("RANK", "0") == "0":
        return []
    tmp = Path(tempfile.gettempdir()) / f"zobench-rank{os.environ['RANK']}-{os.getpid()}"
    return ["hydra.output_subdir=null", "hydra/job_logging=stdout", f"hydra.run.dir={tmp}", f"hydra.sweep.dir={tmp}"]


# -- collectives --------------------------------------------------------------------------------------

def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """The sums over workers of ``values``, in float64 (``values`` itself with one worker)."""
    if not active():
        return [float(v) for v in values]
    import torch.distributed as dist

    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_state["device"])
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def any_true(flag: bool) -> bool:
    """Whether ``flag`` is true on any worker."""
    return all_reduce_sum([1.0 if flag else 0.0])[0] > 0


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every worker (pickled)."""
    if not active():
        return obj
    import torch.distributed as dist

    box = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0, device=_state["device"] if _state["backend"] == "nccl" else None)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every worker's ``obj``, in rank order."""
    if not active():
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


@torch.no_grad()
def broadcast_(tensors: Sequence[torch.Tensor]) -> None:
    """Overwrite ``tensors`` on every worker with rank 0's (in place)."""
    if not active():
        return
    import torch.distributed as dist

    for t in tensors:
        if t.device == _state["device"]:
            dist.broadcast(t.data, src=0)
        else:  # a parameter on another device than the collectives': through a copy
            buf = t.detach().to(_state["device"])
            dist.broadcast(buf, src=0)
            t.copy_(buf)


@torch.no_grad()
def fingerprint(tensors: Sequence[torch.Tensor]) -> list[float]:
    """Two float64 sums per tensor (values, squares): equal on two workers that hold equal tensors."""
    out: list[float] = []
    for t in tensors:
        total = squares = 0.0
        for part in t.detach().reshape(-1).split(1 << 22):  # float64 copies of one chunk at a time
            x = part.double()
            total, squares = total + float(x.sum()), squares + float(x.square().sum())
        out += [total, squares]
    return out


def parameters_identical(tensors: Sequence[torch.Tensor]) -> bool:
    """Whether every worker holds the same ``tensors`` (by their fingerprints)."""
    if not active():
        return True
    prints = all_gather_object(fingerprint(tensors))
    return all(p == prints[0] for p in prints)


def sync_parameters(named_params: Sequence[tuple[str, torch.Tensor]]) -> bool:
    """Make the trainable parameters rank 0's on every worker; True when they already were.

    Workers load the same weights and seed the same initializations, so they normally agree and nothing
    is sent; where they do not (an unseeded adapter initialization), rank 0's are broadcast once."""
    params = [p for _, p in named_params]
    if parameters_identical(params):
        return True
    log.warning("the workers' trainable parameters differ after loading: rank 0's are broadcast to all")
    broadcast_(params)
    return False


# -- which cell the workers run ---------------------------------------------------------------------------

def begin_cell(key: str) -> None:
    """Rank 0 starts the cell ``key`` (its cell_key): the other workers have not been told about it yet."""
    _state["announced"], _state["key"] = not active(), key


def start_cell(run_dir: Path | str) -> None:
    """Rank 0 runs its cell in ``run_dir``: the other workers run it beside it (no-op elsewhere, or if told)."""
    if active() and is_main() and not _state["announced"]:
        _state["announced"] = True
        broadcast_object({"key": _state.get("key"), "run_dir": str(run_dir)})


def end_cell() -> None:
    """Rank 0 is done with its cell: workers still waiting for it are told it does not run (skipped, busy...)."""
    if active() and is_main() and not _state["announced"]:
        _state["announced"] = True
        broadcast_object({"key": _state.get("key"), "run_dir": None})


def skip_cell(key: str) -> None:
    """Rank 0 will not call run_cell for the cell ``key`` (a sweep stopped, a config refused before it): the
    other workers, which wait in run_cell, are told so. Without it they skip that cell when rank 0 announces
    the next one, or fail when rank 0's process ends."""
    begin_cell(key)
    end_cell()


def wait_for_cell(key: str) -> str | None:
    """A worker of rank > 0 at the cell ``key``: the run directory where rank 0 runs it, or None when rank 0
    does not run it. An announcement of another cell (rank 0 passed this one without a word) is kept for
    the next call, the workers going through a sweep's cells in the same order."""
    message = _state.pop("pending", None) or broadcast_object(None)
    if message.get("key") != key:
        _state["pending"] = message
        return None
    return message["run_dir"]


@contextlib.contextmanager
def quiet_logs(level: int = logging.WARNING):
    """The zobench logger at ``level`` (a worker of rank > 0: rank 0 tells what happens)."""
    before = log.level
    log.setLevel(level)
    try:
        yield
    finally:
        log.setLevel(before)


class NullRecorder:
    """A RunRecorder that keeps nothing: what a worker of rank > 0 records."""

    loggers: list = []

    def write_config(self, cfg) -> None:
        pass

    def log(self, row: dict[str, Any]) -> None:
        pass

    def reset(self) -> None:
        pass

    def truncate_after(self, step: int) -> None:
        pass

    def finish(self, summary: dict[str, Any]) -> None:
        pass


class FollowerCheckpointer:
    """A Checkpointer that reads and writes nothing: a worker of rank > 0 receives rank 0's checkpoint."""

    def __init__(self, run_dir: Path | str = "."):
        self.json_path = Path(run_dir) / "checkpoint.json"
        self.warnings: list[str] = []

    def load(self) -> None:
        return None

    def unusable(self, what: str) -> None:
        return None

    def save(self, state: dict[str, Any], tensors: dict[str, Any] | None = None) -> None:
        pass

    def clear(self) -> None:
        pass


# -- the data: shards, sharded losses, sharded evaluation ---------------------------------------------------

def shard(items: Sequence, index: int | None = None, count: int | None = None) -> list:
    """Worker ``index``'s part of ``items`` (this worker's by default): contiguous, sizes differing by at most
    one, the first ``len % count`` parts one longer. Concatenated in rank order they are ``items``."""
    index = rank() if index is None else index
    count = world_size() if count is None else count
    size, extra = divmod(len(items), count)
    start = index * size + min(index, extra)
    return list(items[start : start + size + (index < extra)])


def check_config(cfg: Any) -> None:
    """What a data-parallel run refuses, before any model loads (WORLD_SIZE > 1 only)."""
    if requested_world_size() == 1:
        return
    if cfg.model.get("device_map") is not None:
        raise ConfigError("model.device_map shards one model over this process's GPUs; with torchrun every worker "
                          "would need GPUs of its own: run one process (no torchrun) with model.device_map, or "
                          "torchrun with model.device_map=null.")
    if cfg.trainer.loss == "f1":
        raise ConfigError("trainer.loss='f1' is not allowed with torchrun: F1 of a batch is not a weighted mean "
                          "of its shards' F1; choose accuracy, classification or lm.")
    family = cfg.optimizer.get("family")
    micro = cfg.optimizer.get("accumulation_steps", 1) or 1
    if family in ("fo", "hybrid") and cfg.trainer.steps and cfg.trainer.batch_size // micro < requested_world_size():
        raise ConfigError(
            f"trainer.batch_size={cfg.trainer.batch_size} with optimizer.accumulation_steps={micro} leaves a worker "
            f"without an example of a micro-batch on {requested_world_size()} workers: DDP needs every worker in each "
            f"backward; expected trainer.batch_size >= {requested_world_size() * micro}.")


class _LossModule(torch.nn.Module):
    """The whole loss computation as one module, so that DDP sees one forward per backward whatever the
    scorer runs inside it (several model calls, a prefix built outside the model's forward)."""

    def __init__(self, scorer, loss: str):
        super().__init__()
        self.model = scorer.model
        self._scorer, self._loss = scorer, loss

    def forward(self, part):
        return self._scorer.loss(part, self._loss)


class ShardedLoss:
    """``loss_of(part)`` for ``MicroBatchLoss``: this worker's shard of ``part``, combined over workers.

    The value returned is the loss of the whole ``part`` (Σ_r w_r·L_r, w_r = size(shard r) / size(part),
    all-reduced in float64), for every worker. With a graph (FO), its gradient is N·w_r·∇L_r, which DDP
    averages to Σ_r w_r·∇L_r, the whole part's gradient; with forward-AD tangents (Forward-Grad), the
    tangent is all-reduced the same way. ``sync_part``: the micro-batch whose backward all-reduces the
    gradients (the last); the others accumulate under ``no_sync``.
    """

    def __init__(self, scorer, loss: str, size_of: Callable[[Sequence], float], ddp: bool = False,
                 find_unused: bool = False):
        self.scorer, self.loss, self.size_of = scorer, loss, size_of
        self.sync_part = None
        self.ddp = None
        if ddp:
            import inspect

            from torch.nn.parallel import DistributedDataParallel

            known = inspect.signature(DistributedDataParallel).parameters
            # the workers' parameters were checked equal (sync_parameters): no copy of the whole model at start;
            # buffers (position ids, masks) are equal and constant: not sent before every forward
            extra = {"init_sync": False} if "init_sync" in known else {}
            extra.update({"forward_sync_buffers": False} if "forward_sync_buffers" in known else {"broadcast_buffers": False})
            self.ddp = DistributedDataParallel(_LossModule(scorer, loss), find_unused_parameters=find_unused, **extra)

    def __call__(self, part: Sequence) -> torch.Tensor:
        import torch.autograd.forward_ad as fwAD

        mine = shard(part)
        weight = float(self.size_of(mine)) / float(self.size_of(part)) if mine else 0.0
        local = None
        if mine:
            if self.ddp is not None and torch.is_grad_enabled():
                sync = self.sync_part is None or part is self.sync_part
                with contextlib.nullcontext() if sync else self.ddp.no_sync():
                    local = self.ddp(mine)
            else:
                local = self.scorer.loss(mine, self.loss)
        primal, tangent = fwAD.unpack_dual(local) if local is not None else (None, None)
        value, slope = all_reduce_sum([weight * float(primal.detach()) if local is not None else 0.0,
                                       weight * float(tangent) if tangent is not None else 0.0])
        if tangent is not None:  # Forward-Grad: (L, ∇L·v) of the whole part
            return fwAD.make_dual(torch.tensor(value, dtype=torch.float64), torch.tensor(slope, dtype=torch.float64))
        if local is not None and local.requires_grad:
            scaled = local * (weight * world_size())
            return scaled + (torch.tensor(value, dtype=local.dtype, device=local.device) - scaled).detach()
        return torch.tensor(value, dtype=torch.float64)


def evaluate(scorer, examples: Sequence, batch_size: int):
    """``zobench.evaluation.evaluate`` over the workers: each scores its shard, the scores are gathered."""
    from zobench import evaluation
    from zobench.scoring import metrics

    if not active():
        return evaluation.evaluate(scorer, examples, batch_size)
    mine = shard(examples)
    scores = scorer.candidate_scores(mine, batch_size) if mine else []
    scores = [s for part in all_gather_object(scores) for s in part]
    predictions = [max(range(len(s)), key=s.__getitem__) for s in scores]
    return evaluation.Evaluation(metrics(predictions, examples) if examples else {}, predictions, scores, examples)


def loss_over(scorer, examples: Sequence, loss: str, batch_size: int) -> float:
    """``Scorer.loss_over`` over the workers: each its shard, weighted as one set (examples; gold tokens for lm)."""
    from zobench.scoring import NON_DIFFERENTIABLE, metrics

    if not active():
        return scorer.loss_over(examples, loss, batch_size)
    if loss in NON_DIFFERENTIABLE:
        return -metrics(evaluate(scorer, examples, batch_size).predictions, examples)[loss]
    mine = shard(examples)
    weight = (scorer.gold_tokens(mine) if loss == "lm" else len(mine)) if mine else 0
    total = scorer.loss_over(mine, loss, batch_size) * weight if mine else 0.0
    total, weight = all_reduce_sum([total, weight])
    return total / weight


# -- one model over several devices (model.device_map) ------------------------------------------------------

DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


def device_map_arg(device_map: Any) -> str | dict[str, Any]:
    """``model.device_map`` as accelerate / transformers take it: a strategy name or a plain dict."""
    if isinstance(device_map, str):
        if device_map not in DEVICE_MAP_STRATEGIES:
            raise ConfigError(f"model.device_map={device_map!r} is not allowed: choose one of "
                              f"{', '.join(DEVICE_MAP_STRATEGIES)}, a {{module: device}} map, or null.")
        return device_map
    try:
        from omegaconf import DictConfig, OmegaConf

        mapping = OmegaConf.to_container(device_map) if isinstance(device_map, DictConfig) else dict(device_map)
    except (TypeError, ValueError):
        raise ConfigError(f"model.device_map={device_map!r} is not allowed: choose a strategy "
                          f"({', '.join(DEVICE_MAP_STRATEGIES)}), a {{module: device}} map, or null.") from None
    if not mapping:
        raise ConfigError("model.device_map={} places no module: give a {module: device} map, a strategy, or null.")
    return mapping


def place(model: torch.nn.Module, device_map: Any, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """Spread ``model`` over devices as ``device_map`` says (accelerate), in place; returns it.

    A model ``from_pretrained`` already placed (it has ``hf_device_map``) is only checked; one built in
    memory (a tiny model) is dispatched here, with accelerate's hooks attached even where every module
    maps to one device (so a CPU test runs the hooks a multi-GPU run uses). Refused: a map that offloads
    to CPU or disk beside GPUs, which leaves parameters as placeholders a ZO step cannot perturb."""
    from accelerate import dispatch_model, infer_auto_device_map
    from accelerate.utils import get_balanced_memory, get_max_memory

    if getattr(model, "hf_device_map", None) is None:
        mapping = device_map_arg(device_map)
        if isinstance(mapping, str):
            no_split = getattr(model, "_no_split_modules", None) or []
            memory = (get_max_memory() if mapping == "sequential" else
                      get_balanced_memory(model, no_split_module_classes=no_split, dtype=dtype,
                                          low_zero=mapping == "balanced_low_0"))
            mapping = infer_auto_device_map(model, max_memory=memory, no_split_module_classes=no_split, dtype=dtype)
        _check_placement(mapping.values(), [])
        quiet = {str(d) for d in mapping.values()} == {"cpu"}  # all on the CPU: accelerate's "offloaded" warning is wrong
        accelerate_log = logging.getLogger("accelerate.big_modeling")
        level = accelerate_log.level
        if quiet:
            accelerate_log.setLevel(logging.ERROR)
        try:
            dispatch_model(model, device_map=mapping, force_hooks=True)
        finally:
            accelerate_log.setLevel(level)
        model.hf_device_map = mapping
    mapping = model.hf_device_map
    _check_placement(mapping.values(), [n for n, p in model.named_parameters() if p.device.type == "meta"])
    model.zobench_device_map = dict(mapping)
    if {str(d) for d in mapping.values()} == {"cpu"}:  # a map all on the CPU (tests): peft's prefix tuning reads
        del model.hf_device_map                         # hf_device_map for a GPU and finds none
    return model


def placement(model: torch.nn.Module) -> list[str] | None:
    """The devices ``place`` spread ``model`` over (None: not placed by a device map)."""
    mapping = getattr(model, "zobench_device_map", None)
    return sorted({str(d) for d in mapping.values()}) if mapping else None


def _check_placement(devices, offloaded: list[str]) -> None:
    """Refuse a placement that offloads parameters to CPU beside GPUs, or to disk."""
    devices = {str(d) for d in devices}
    if "disk" in devices or offloaded or ("cpu" in devices and len(devices) > 1):
        raise ConfigError(
            f"model.device_map places modules on {sorted(devices)}: offloading to CPU or disk leaves parameters "
            f"({len(offloaded)} after loading) as placeholders that a ZO step cannot perturb in place. Use more "
            "GPUs, dtype=fp16/bf16, or a map over GPUs only (a map all on cpu is allowed: tests).")


def parameter_devices(model: torch.nn.Module) -> dict[str, str]:
    """Parameter name -> the device it lives on (what a ZO sweep draws its z on)."""
    return {n: str(p.device) for n, p in model.named_parameters()}
