"""A GGUF file (model.path=*.gguf, and `make offline-models`'s conversion) loads through transformers and gguf:
a tiny llama written here with gguf's own writer. Offline, a few seconds; `make test-lower-bounds` runs it at the
lower bounds (gguf 0.10 fails it: it imports sentencepiece without requiring it)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import compose_cfg

HIDDEN, LAYERS, HEADS, FFN = 16, 2, 2, 32


def write_tiny_llama_gguf(path, seed: int = 0):
    """A 2-layer llama in F32, with a byte-level BPE tokenizer (every byte a token, two merges)."""
    import gguf
    from tokenizers import pre_tokenizers

    rng = np.random.default_rng(seed)
    tokens = sorted(pre_tokenizers.ByteLevel.alphabet()) + ["he", "ll", "<|endoftext|>"]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-llama")
    w.add_context_length(64)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(HEADS)
    w.add_rope_dimension_count(HIDDEN // HEADS)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([1] * (len(tokens) - 1) + [3])
    w.add_token_merges(["h e", "l l"])  # two: transformers 5.0 reads a one-element array as a scalar
    w.add_bos_token_id(len(tokens) - 1)
    w.add_eos_token_id(len(tokens) - 1)

    def weight(name, *shape):
        w.add_tensor(name, (rng.standard_normal(shape) * 0.02).astype(np.float32))

    weight("token_embd.weight", len(tokens), HIDDEN)
    weight("output.weight", len(tokens), HIDDEN)
    w.add_tensor("output_norm.weight", np.ones(HIDDEN, np.float32))
    for i in range(LAYERS):
        for norm in ("attn_norm", "ffn_norm"):
            w.add_tensor(f"blk.{i}.{norm}.weight", np.ones(HIDDEN, np.float32))
        for proj in ("attn_q", "attn_k", "attn_v", "attn_output"):
            weight(f"blk.{i}.{proj}.weight", HIDDEN, HIDDEN)
        weight(f"blk.{i}.ffn_gate.weight", FFN, HIDDEN)
        weight(f"blk.{i}.ffn_up.weight", FFN, HIDDEN)
        weight(f"blk.{i}.ffn_down.weight", HIDDEN, FFN)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return len(tokens)


@pytest.fixture
def tiny_gguf(tmp_path):
    path = tmp_path / "gguf" / "tiny-llama.gguf"
    path.parent.mkdir()
    vocab = write_tiny_llama_gguf(path)
    return path, vocab


def test_a_gguf_file_loads_as_model_path_with_its_tokenizer(tiny_gguf):
    from zobench.models import load_model

    path, vocab = tiny_gguf
    cfg = compose_cfg("model=hf", f"model.path={path}", "device=cpu").model
    model, tokenizer = load_model(cfg, "fp32", "cpu")
    assert (cfg.family, cfg.kind) == ("llama", "causal")  # read from the file's metadata
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_hidden_layers == LAYERS
    ids = tokenizer("hello world", return_tensors="pt").input_ids
    assert tokenizer.decode(ids[0], skip_special_tokens=True) == "hello world"
    with torch.no_grad():
        assert model(ids).logits.shape == (1, ids.shape[1], vocab)


def test_the_offline_models_conversion_writes_a_folder_that_loads_the_same_weights(tiny_gguf, tmp_path):
    from transformers import AutoModelForCausalLM

    from zobench.offline_models import convert

    path, _ = tiny_gguf
    convert(path, tmp_path / "tiny-llama")
    assert (tmp_path / "tiny-llama" / "config.json").is_file()
    folder = AutoModelForCausalLM.from_pretrained(tmp_path / "tiny-llama", dtype=torch.float32)
    direct = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    ids = torch.tensor([[5, 17, 256, 257]])
    with torch.no_grad():
        torch.testing.assert_close(folder(ids).logits, direct(ids).logits)
