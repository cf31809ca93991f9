"""model.device_map: one model's layers over several devices (accelerate), for ZO and inference.

On a CPU machine every "device" is the CPU, so these tests check that a model placed with a device map
(accelerate's hooks attached, as on GPUs) trains and evaluates end to end with the same result as without
one, and (with mocks and the meta device) that a ZO sweep draws each tensor's z on that tensor's device.
"""
from __future__ import annotations

import json

import pytest
import torch

from zobench import distributed
from zobench.errors import ConfigError
from zobench.optim import directions, zo
from zobench.optim.spsa import SPSA

TINY_OPT_MAP = {"model.decoder.embed_tokens": "cpu", "model.decoder.embed_positions": "cpu",
                "model.decoder.layers.0": "cpu", "model.decoder.layers.1": "cpu",
                "model.decoder.final_layer_norm": "cpu", "lm_head": "cpu"}


def _recording_draw(calls):
    """directions.draw, recording (tensor index, device) and returning zeros on the device asked for."""

    def draw(seed, index, chunk, n, device, dtype, distribution="gaussian"):
        calls.append((index, torch.device(device)))
        return torch.zeros(n, device=device, dtype=dtype)

    return draw


@pytest.mark.parametrize("transforms", [(), "adam"])
def test_zo_step_draws_z_on_each_parameters_device(monkeypatch, transforms):
    """Tensor 0 on the CPU, tensor 1 on another device (meta): every z of a ZO-SGD / ZO-Adam step, in the
    probes (perturb_many_) and in the update sweep, is drawn on its own tensor's device, and nothing moves."""
    from zobench.optim.transforms import Adam

    calls: list = []
    monkeypatch.setattr(directions, "draw", _recording_draw(calls))
    params = [torch.zeros(5, requires_grad=True), torch.zeros(3, 2, device="meta", requires_grad=True)]
    opt = zo.ZOOptimizer([("a.weight", params[0]), ("b.weight", params[1])], SPSA(),
                         [Adam()] if transforms else [], lr=0.1, eps=1e-3)
    losses = iter([1.0, 0.5])
    opt.step(lambda: torch.tensor(next(losses)))
    assert calls, "no direction was drawn"
    for index, device in calls:
        assert device == params[index].device, (index, device)
    assert {i for i, _ in calls} == {0, 1}
    assert params[1].device.type == "meta" and params[0].device.type == "cpu"
    if transforms:  # the transform's state sits beside its tensor
        state = [t for t in vars(opt.transforms[0]).values() if isinstance(t, list) and t and torch.is_tensor(t[0])]
        assert state and all(s.device == p.device for group in state for s, p in zip(group, params))


def test_each_device_has_its_own_generator():
    """The chunked stream seeds one generator per device: a tensor's z comes from its device's generator."""
    z = directions.draw(123, 0, 0, 8, torch.device("cpu"), torch.float32)
    assert torch.equal(z, directions.draw(123, 0, 0, 8, torch.device("cpu"), torch.float32))
    assert set(directions._generators) >= {torch.device("cpu")}
    assert all(g.device == d for d, g in directions._generators.items())


def test_device_map_checked(monkeypatch):
    assert distributed.device_map_arg("auto") == "auto"
    assert distributed.device_map_arg({"model": 0, "lm_head": 1}) == {"model": 0, "lm_head": 1}
    with pytest.raises(ConfigError, match="device_map"):
        distributed.device_map_arg("everywhere")
    with pytest.raises(ConfigError, match="offloading"):  # parameters on disk / CPU beside GPUs: placeholders
        distributed._check_placement({"model": 0, "lm_head": "disk"}.values(), [])
    with pytest.raises(ConfigError, match="offloading"):
        distributed._check_placement({"model": 0, "lm_head": "cpu"}.values(), [])
    distributed._check_placement({"model": 0, "lm_head": 1}.values(), [])
    distributed._check_placement({"model": "cpu"}.values(), [])


def test_device_map_refused_with_torchrun(monkeypatch, small_cfg):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="device_map"):
        distributed.check_config(small_cfg("model.device_map=auto"))


def test_load_with_device_map_attaches_hooks_and_scores_the_same(small_cfg):
    """An explicit map (and ``auto``) dispatches the tiny model with accelerate's hooks; its losses are the
    same as the model's without a map."""
    from omegaconf import OmegaConf

    from zobench.models import load_model
    from zobench.scoring import Scorer
    from zobench.tasks import load_task

    cfg = small_cfg()
    plain, tok = load_model(cfg.model, "fp32", "cpu", 0)
    mapped_cfg = OmegaConf.merge(cfg.model, {"device_map": TINY_OPT_MAP})
    mapped, _ = load_model(mapped_cfg, "fp32", "cpu", 0)
    auto, _ = load_model(OmegaConf.merge(cfg.model, {"device_map": "auto"}), "fp32", "cpu", 0)
    assert mapped.zobench_device_map == TINY_OPT_MAP and set(auto.zobench_device_map.values()) == {"cpu"}
    assert distributed.placement(mapped) == ["cpu"] and distributed.placement(plain) is None
    assert hasattr(mapped.model.decoder.layers[0], "_hf_hook") and hasattr(auto, "_hf_hook")
    assert distributed.parameter_devices(mapped) == distributed.parameter_devices(plain)
    data = load_task(cfg.task, cfg.data)
    batch = data.train[:4]
    with torch.no_grad():
        for loss in ("classification", "lm"):
            want = Scorer(plain, tok, "causal", 512).loss(batch, loss)
            assert torch.allclose(Scorer(mapped, tok, "causal", 512).loss(batch, loss), want, atol=1e-6)
            assert torch.allclose(Scorer(auto, tok, "causal", 512).loss(batch, loss), want, atol=1e-6)


def _trainable(run_dir):
    return torch.load(run_dir / "trainable.pt")


@pytest.mark.parametrize("tuning", ["full", "prefix"])
def test_zo_run_with_device_map_matches_plain_run(small_cfg, tmp_path, tuning):
    """A whole ZO cell (zero-shot, steps, dev selection, eval) with an explicit device map gives the same
    trained parameters and predictions as the same cell without one."""
    from omegaconf import OmegaConf

    from zobench.run import run_cell

    results = {}
    for name, device_map in (("plain", None), ("mapped", TINY_OPT_MAP)):
        cfg = small_cfg("optimizer=zo_sgd", "optimizer.lr=1e-2", "trainer.save_trainable=true", f"tuning={tuning}")
        cfg = OmegaConf.merge(cfg, {"model": {"device_map": device_map}})
        summary = run_cell(cfg, tmp_path / name)
        assert summary["status"] == "completed", summary.get("error")
        results[name] = summary
    assert results["mapped"]["device_map"] == ["cpu"] and "device_map" not in results["plain"]
    assert results["mapped"]["cell_key"] == results["plain"]["cell_key"]  # where layers sit is not the cell
    for key in ("zero_shot_accuracy", "best_step", "test_accuracy", "final_loss"):
        assert results["mapped"][key] == pytest.approx(results["plain"][key], abs=1e-6), key
    a, b = _trainable(tmp_path / "plain"), _trainable(tmp_path / "mapped")
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    preds = [[json.loads(line)["prediction"] for line in (tmp_path / n / "predictions.jsonl").read_text().splitlines()]
             for n in ("plain", "mapped")]
    assert preds[0] == preds[1]
