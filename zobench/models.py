"""Load a model and its tokenizer: hub id, local folder, GGUF file, or a tiny random model.

Resolution order for where the weights come from (first that applies):
1. ``model.path``: an explicit local folder (``save_pretrained`` layout) or a ``.gguf`` file;
2. ``model.tiny``: a config dict -> random weights built in a second with a byte-level
   tokenizer built locally (offline tests and smoke runs);
3. ``model.local_dir`` when that folder exists (``make offline-models`` writes it); when it does not,
   ``check_weights_available`` says to run ``make offline-models`` (or to set ``model.local_dir=null``)
   rather than spend a minute on hub retries;
4. ``model.hub_id`` from the Hugging Face hub (the real path for users with a network).

``model.family`` and ``model.kind`` may be ``auto`` (``conf/model/hf.yaml``: any hub model by id): they are
then read from the model's ``config.json`` (its ``model_type``, ``MODEL_TYPES``) by ``infer_model``. Checks
before a run never contact the hub: they read a local ``config.json`` (``model.path``, ``model.local_dir``,
the Hugging Face cache) or leave the family-dependent checks to the start of the run (``model_for_checks``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from zobench.errors import ConfigError, bad_choice

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DEVICES = ("auto", "cpu", "cuda")
KINDS = ("causal", "masked")

# Specials first so their ids are stable across families: pad=0, bos=1, eos=2, unk=3, mask=4.
TINY_SPECIALS = ("<pad>", "<s>", "</s>", "<unk>", "<mask>")
# The tasks' verbalizers as whole tokens, so tiny masked LMs can score them at the mask as
# RoBERTa does (its BPE has " great", " terrible", "Yes", "No" as single tokens).
TINY_WORDS = (" terrible", " great", "No", "Yes")


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise bad_choice("dtype", name, DTYPES)
    return DTYPES[name]


def resolve_device(name: str) -> torch.device:
    if name not in DEVICES:
        raise bad_choice("device", name, DEVICES)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' was asked for, but torch sees no CUDA device: use device=cpu or device=auto.")
    return torch.device(name)


AUTO = "auto"  # model.family / model.kind: read from the model's config (model=hf)

# transformers model_type -> (model.family, model.kind): what ``auto`` becomes (the family is the model_type;
# tests/test_hub_models.py runs a tiny model of each). Masked LMs score single-token verbalizers at the mask.
MODEL_TYPES = {
    "opt": ("opt", "causal"),
    "llama": ("llama", "causal"),      # LLaMA 1-3, Vicuna, SmolLM, TinyLlama, ...
    "mistral": ("mistral", "causal"),
    "qwen2": ("qwen2", "causal"),
    "gpt2": ("gpt2", "causal"),
    "gpt_neo": ("gpt_neo", "causal"),
    "gpt_neox": ("gpt_neox", "causal"),  # Pythia
    "gptj": ("gptj", "causal"),
    "roberta": ("roberta", "masked"),
    "bert": ("bert", "masked"),
}


def needs_inference(model_cfg: Any) -> bool:
    return model_cfg.get("family") == AUTO or model_cfg.get("kind") == AUTO


def _read_model_type(config_json: Path) -> str | None:
    import json

    try:
        value = json.loads(Path(config_json).read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return str(value) if value else None


def _hub_ref(model_cfg: Any) -> tuple[str, str | None]:
    kwargs = model_cfg.get("load_kwargs") or {}
    return str(model_cfg.hub_id), (str(kwargs["revision"]) if kwargs.get("revision") else None)


def find_model_type(model_cfg: Any, hub: bool) -> tuple[str, str] | None:
    """``(model_type, where it was read)`` from the first source the weights would come from (as
    ``weights_source``): ``model.path`` (its config.json, or the .gguf file's metadata), ``model.tiny``,
    ``model.local_dir``, then ``model.hub_id``: the Hugging Face cache, and (``hub``) the hub itself.
    None where no local source says (``hub`` False) or the model is given nowhere."""
    if model_cfg.get("path"):
        path = Path(str(model_cfg.path)).expanduser()
        if path.is_dir():
            found = _read_model_type(path / "config.json")
            return (found, str(path / "config.json")) if found else None
        if path.is_file() and path.suffix == ".gguf":
            from transformers import AutoConfig

            try:
                return AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name).model_type, str(path)
            except Exception:  # noqa: BLE001 - an unreadable file: check_weights_available / the loader say why
                return None
        return None
    if model_cfg.get("tiny"):
        found = dict(model_cfg.tiny).get("model_type")
        return (str(found), "model.tiny") if found else None
    local_dir = model_cfg.get("local_dir")
    if local_dir and Path(str(local_dir)).expanduser().is_dir():
        config_json = Path(str(local_dir)).expanduser() / "config.json"
        found = _read_model_type(config_json)
        return (found, str(config_json)) if found else None
    if not model_cfg.get("hub_id"):
        return None
    repo, revision = _hub_ref(model_cfg)
    import huggingface_hub

    cached = huggingface_hub.try_to_load_from_cache(repo, "config.json", revision=revision)
    if isinstance(cached, str):
        found = _read_model_type(Path(cached))
        if found:
            return found, f"hub:{repo} (cached {cached})"
    if not hub:
        return None
    try:
        downloaded = huggingface_hub.hf_hub_download(repo, "config.json", revision=revision)
    except Exception as exc:  # noqa: BLE001 - offline, a gated or missing repo: said with the way out
        raise ConfigError(
            f"model.hub_id={repo}: its config.json could not be read from the Hugging Face hub ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}), so model.family and model.kind (auto) cannot be "
            "inferred. Give a local copy (model.path=<folder with config.json>), or set model.family and "
            "model.kind yourself.") from None
    found = _read_model_type(Path(downloaded))
    return (found, f"hub:{repo}") if found else None


def _where(model_cfg: Any) -> str:
    if model_cfg.get("path"):
        return f"model.path={model_cfg.path}"
    if model_cfg.get("hub_id"):
        return f"model.hub_id={model_cfg.hub_id}"
    return f"model={model_cfg.get('name')}"


def supported_model_types() -> str:
    return ", ".join(f"{t} ({fam}, {kind})" for t, (fam, kind) in MODEL_TYPES.items())


def infer_model(model_cfg: Any, hub: bool = True) -> dict[str, str] | None:
    """Set ``model.family`` / ``model.kind`` that are ``auto`` from the model's ``model_type``, in place.

    Returns ``{model_type, family, kind, source}`` when something was inferred, None when nothing was ``auto``
    or (``hub`` False) no local config says: the caller then defers the checks that need them. An unknown
    ``model_type`` is a ConfigError listing the supported ones."""
    if not needs_inference(model_cfg):
        return None
    if not (model_cfg.get("path") or model_cfg.get("tiny") or model_cfg.get("hub_id")):
        raise ConfigError(f"model={model_cfg.get('name')}: which model? Give model.hub_id=ORG/NAME (a Hugging Face "
                          "hub id) or model.path=<a local model folder or .gguf file>.")
    found = find_model_type(model_cfg, hub)
    if found is None:
        if not hub:
            return None
        raise ConfigError(f"{_where(model_cfg)}: no config.json with a model_type was found, so model.family and "
                          "model.kind (auto) cannot be inferred: set them (e.g. model.family=llama model.kind=causal).")
    model_type, source = found
    if model_type not in MODEL_TYPES:
        raise ConfigError(
            f"{_where(model_cfg)} is a model of model_type={model_type!r} (read from {source}), which zobench does not "
            f"know: supported model types (family, kind) are {supported_model_types()}. For another causal or masked "
            "LM, set model.family=<name> and model.kind=causal|masked yourself (LoRA then needs "
            "tuning.target_modules=[...]).")
    family, kind = MODEL_TYPES[model_type]
    if model_cfg.get("family") == AUTO:
        model_cfg.family = family
    if model_cfg.get("kind") == AUTO:
        model_cfg.kind = kind
    return {"model_type": model_type, "family": str(model_cfg.family), "kind": str(model_cfg.kind), "source": source}


# Stand-ins for checks before the run when family / kind are auto and only the hub knows them: every check that
# depends on them runs again, with the real values, when the run starts (zobench.run.main -> infer_model).
DEFERRED = {"family": "opt", "kind": "causal"}


def model_for_checks(cfg: Any) -> Any:
    """``cfg`` itself, or, where ``model.family`` / ``model.kind`` are ``auto``, a copy with them inferred without
    the hub (a local config.json, the Hugging Face cache), else with stand-ins (``DEFERRED``) so that checks
    before the run pass: the family-dependent ones are made again when the run starts."""
    if not needs_inference(cfg.model):
        return cfg
    import copy

    checked = copy.deepcopy(cfg)
    if infer_model(checked.model, hub=False) is None:
        for key, value in DEFERRED.items():
            if checked.model.get(key) == AUTO:
                checked.model[key] = value
    return checked


def weights_source(model_cfg: Any) -> str:
    """Where the weights will come from, as a string (checked before loading, recorded in the summary)."""
    if model_cfg.get("path"):
        path = Path(str(model_cfg.path)).expanduser()
        if not path.exists():
            raise ConfigError(f"model.path={str(path)!r} does not exist: give a model folder or a .gguf file.")
        return f"path:{path}"
    if model_cfg.get("tiny"):
        return "tiny:random-init"
    local_dir = model_cfg.get("local_dir")
    if local_dir and Path(str(local_dir)).is_dir():
        return f"path:{local_dir}"
    if not model_cfg.get("hub_id"):
        raise ConfigError(f"model {model_cfg.get('name')!r} has neither model.path, model.tiny nor model.hub_id: "
                          "give model.hub_id=ORG/NAME (a Hugging Face hub id) or model.path=<folder or .gguf file>.")
    return f"hub:{model_cfg.hub_id}"


# Files of which a model folder written by ``save_pretrained`` (model and tokenizer) holds at least one.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt",
                   "spiece.model", "sentencepiece.bpe.model")


def _folder_problem(path: Path) -> str | None:
    """Why ``path`` (an existing folder) is not a loadable model folder, or None."""
    names = sorted(p.name for p in path.iterdir())
    if not names:
        return "is an empty folder"
    ggufs = [n for n in names if n.endswith(".gguf")]
    if "config.json" not in names:
        if ggufs:
            return f"is a folder holding {ggufs[0]}: give the .gguf file itself ({path / ggufs[0]})"
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        return f"holds no config.json (it has {shown}): not a model folder written by save_pretrained"
    if not any(n in names for n in TOKENIZER_FILES):
        return (f"holds no tokenizer files (one of {', '.join(TOKENIZER_FILES[:3])}, ...): save the tokenizer "
                "there too (tokenizer.save_pretrained)")
    return None


def check_weights_available(model_cfg: Any, local_copy: bool = True) -> None:
    """Refuse, before any hub call, weights that cannot load: an empty or incomplete ``model.path`` folder,
    and (``local_copy``) a model whose local copy (``model.local_dir``, written by ``make offline-models``)
    is absent or incomplete: it is not looked for on the hub, where an offline machine would spend a minute
    on retries. A model given only by ``model.hub_id`` is left to the hub."""
    name = model_cfg.get("name")
    if model_cfg.get("path"):
        path = Path(str(model_cfg.path)).expanduser()
        if not path.exists():
            raise ConfigError(f"model.path={str(path)!r} does not exist: give a model folder or a .gguf file.")
        if path.is_file():
            if path.suffix != ".gguf":
                raise ConfigError(f"model.path={str(path)!r} is a file but not a .gguf file: give a model folder "
                                  "(save_pretrained layout, with config.json) or a .gguf file.")
            return
        problem = _folder_problem(path)
        if problem:
            raise ConfigError(f"model.path={str(path)!r} {problem}. Expected a model folder (save_pretrained "
                              "layout: config.json, weights, tokenizer files) or a .gguf file.")
        return
    if model_cfg.get("tiny"):
        return
    local_dir = model_cfg.get("local_dir")
    if not local_copy or not local_dir:
        return  # the hub
    local = Path(str(local_dir)).expanduser()
    hub = f" or set model.local_dir=null to download {model_cfg.hub_id} from the Hugging Face hub" \
        if model_cfg.get("hub_id") else ""
    if not local.exists():
        from zobench import project_root

        default = project_root() / "models" / local.name
        elsewhere = "" if local.absolute() == default.absolute() else \
            f" (it writes {default}; for this folder: python -m zobench.offline_models --out {local})"
        raise ConfigError(f"model={name}: its local copy {local} (model.local_dir) does not exist. Run `make "
                          f"offline-models` to write it, once, offline{elsewhere}{hub}.")
    problem = _folder_problem(local) if local.is_dir() else "is a file, not a folder"
    if problem:
        raise ConfigError(f"model={name}: its local copy {local} (model.local_dir) {problem}. Delete it and run "
                          f"`make offline-models` again{hub}.")


def build_tiny_tokenizer():
    """A byte-level BPE tokenizer with no merges: every byte is a token, so any text encodes.

    Built in memory (no download): 5 specials + 256 byte symbols + the task verbalizers as
    whole words. ``<s>`` is prepended, as OPT and LLaMA tokenizers do.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(TINY_SPECIALS)}
    vocab.update({sym: len(TINY_SPECIALS) + i for i, sym in enumerate(alphabet)})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    from tokenizers import AddedToken

    tok.add_tokens([AddedToken(w, normalized=False) for w in TINY_WORDS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
        unk_token="<unk>", mask_token="<mask>",
    )


def build_tiny_model(model_cfg: Any, tokenizer, seed: int):
    """Random weights from ``model.tiny`` (a transformers config dict with ``model_type``)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM

    spec = dict(model_cfg.tiny)
    model_type = spec.pop("model_type")
    config = AutoConfig.for_model(
        model_type, vocab_size=len(tokenizer), pad_token_id=0, bos_token_id=1, eos_token_id=2, **spec
    )
    auto = AutoModelForMaskedLM if model_cfg.kind == "masked" else AutoModelForCausalLM
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return auto.from_config(config)


def load_model(model_cfg: Any, dtype: str = "fp32", device: str = "auto", seed: int = 0):
    """Return ``(model, tokenizer)`` in eval mode, on ``device``, in ``dtype``.

    ``model.device_map`` (``auto``, ``balanced``, ``balanced_low_0``, ``sequential`` or a ``{module: device}``
    map): the layers spread over the visible GPUs by accelerate instead (``from_pretrained`` loads each
    layer onto its GPU; a tiny model is dispatched after it is built): zobench.distributed.place."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    torch_dtype, torch_device = resolve_dtype(dtype), resolve_device(device)
    infer_model(model_cfg)  # family / kind: auto (model=hf), when the caller has not inferred them yet
    if model_cfg.kind not in KINDS:
        raise bad_choice("model.kind", model_cfg.kind, KINDS)
    source = weights_source(model_cfg)
    check_weights_available(model_cfg)  # an empty folder or a missing local copy: said here, before any hub call
    auto = AutoModelForMaskedLM if model_cfg.kind == "masked" else AutoModelForCausalLM
    kwargs = dict(model_cfg.get("load_kwargs") or {})
    device_map = model_cfg.get("device_map")
    if device_map is not None:
        from zobench.distributed import device_map_arg, place

        kwargs["device_map"] = device_map_arg(device_map)  # checked before any weight loads
    if source.startswith("tiny:"):
        tokenizer = build_tiny_tokenizer()
        model = build_tiny_model(model_cfg, tokenizer, seed).to(torch_dtype)
        kwargs.pop("device_map", None)  # dispatched below
    else:
        location = source.split(":", 1)[1]
        if location.endswith(".gguf"):  # transformers de-quantizes GGUF weights on load
            kwargs["gguf_file"] = os.path.basename(location)
            location = os.path.dirname(location)
        tokenizer = AutoTokenizer.from_pretrained(location, gguf_file=kwargs.get("gguf_file"))
        model = auto.from_pretrained(location, dtype=torch_dtype, **kwargs)
    if tokenizer.pad_token_id is None:  # LLaMA-style tokenizers have none; padding is masked anyway
        tokenizer.pad_token = tokenizer.eos_token
    if device_map is None:
        model.to(torch_device)
    else:
        place(model, device_map, torch_dtype)
    model.eval()
    return model, tokenizer


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())
