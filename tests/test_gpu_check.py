"""make gpu-check's path, run on a CPU with a tiny model (the GPU run itself needs a GPU: none in tests)."""
from __future__ import annotations

import json

import pytest
import torch

from zobench import gpu_check


@pytest.mark.slow  # two bench runs, ~50 s on 2 shared cores
def test_gpu_check_runs_each_dtype_and_reports_the_targets(tmp_path, capsys):
    code = gpu_check.main(["--device", "cpu", "--tiny", "--dtypes", "fp32", "bf16", "--out-dir", str(tmp_path)])
    out = capsys.readouterr().out
    for dtype in ("fp32", "bf16"):
        res = json.loads((tmp_path / f"cpu-{dtype}.json").read_text())
        assert res["dtype"] == dtype
        names = [v[0] for v in gpu_check.verdicts(res)]
        assert "zo_step_philox:gaussian_over_two_forwards" in names and "zo_peak_rademacher_over_inference_peak" in names
    assert "target <= 1.05" in out and "target <= 1.02" in out
    assert code in (0, 1)  # a CPU says nothing about the GPU targets; the verdict lines are what is checked


def test_gpu_check_without_cuda_says_so(capsys):
    if torch.cuda.is_available():
        return
    assert gpu_check.main([]) == 2
    assert "no CUDA device" in capsys.readouterr().err
