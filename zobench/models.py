"""Load a model and its tokenizer: hub id, local folder, GGUF file, or a tiny random model.

Resolution order for where the weights come from (first that applies):
1. ``model.path``: an explicit local folder (``save_pretrained`` layout) or a ``.gguf`` file;
2. ``model.tiny``: a config dict -> random weights built in a second with a byte-level
   tokenizer built locally (offline tests and smoke runs);
3. ``model.local_dir`` when that folder exists (``make offline-models`` writes it); when it does not,
   ``check_weights_available`` says to run ``make offline-models`` (or to set ``model.local_dir=null``)
   rather than spend a minute on hub retries;
4. ``model.hub_id`` from the Hugging Face hub (the real path for users with a network).
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
        raise ConfigError(f"model {model_cfg.get('name')!r} has neither model.path, model.tiny nor model.hub_id.")
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
        from zobench.offline_models import ROOT

        default = ROOT / "models" / local.name
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
    """Return ``(model, tokenizer)`` in eval mode, on ``device``, in ``dtype``."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    torch_dtype, torch_device = resolve_dtype(dtype), resolve_device(device)
    if model_cfg.kind not in KINDS:
        raise bad_choice("model.kind", model_cfg.kind, KINDS)
    source = weights_source(model_cfg)
    check_weights_available(model_cfg)  # an empty folder or a missing local copy: said here, before any hub call
    auto = AutoModelForMaskedLM if model_cfg.kind == "masked" else AutoModelForCausalLM
    kwargs = dict(model_cfg.get("load_kwargs") or {})
    if source.startswith("tiny:"):
        tokenizer = build_tiny_tokenizer()
        model = build_tiny_model(model_cfg, tokenizer, seed).to(torch_dtype)
    else:
        location = source.split(":", 1)[1]
        if location.endswith(".gguf"):  # transformers de-quantizes GGUF weights on load
            kwargs["gguf_file"] = os.path.basename(location)
            location = os.path.dirname(location)
        tokenizer = AutoTokenizer.from_pretrained(location, gguf_file=kwargs.get("gguf_file"))
        model = auto.from_pretrained(location, dtype=torch_dtype, **kwargs)
    if tokenizer.pad_token_id is None:  # LLaMA-style tokenizers have none; padding is masked anyway
        tokenizer.pad_token = tokenizer.eos_token
    model.to(torch_device).eval()
    return model, tokenizer


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())
