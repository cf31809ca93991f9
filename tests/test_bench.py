"""``make bench`` end to end on a tiny model: every phase measured, every ratio reported."""
import json

from zobench import bench


def test_bench_measures_every_phase_and_ratio(tmp_path, caplog):
    out = tmp_path / "bench.json"
    bench.main(["--tiny", "--device", "cpu", "--repeats", "2", "--batch-size", "2", "--tokens", "16",
                "--eval-examples", "3", "--out", str(out)])
    res = json.loads(out.read_text())
    for phase in ("two_forwards", "zo_sgd_gaussian", "zo_sgd_rademacher", "mezo_ref", "fo_sgd", "fo_adam"):
        assert res[phase]["time_ms"] > 0 and res[phase]["peak_bytes"] > 0, phase
        assert len(res[phase]["times_ms"]) == 2
    # MeZO-SVRG is timed with a full batch for its anchors: its state is θ̄, one copy of the weights
    assert res["opt_mezo_svrg"]["state_bytes"] == 4 * res["params"]  # fp32
    assert "no full-batch closure" not in caplog.text
    assert res["eval"]["predictions_agree"]  # batched scoring picks what the naive loop picks
    for key in ("zo_step_over_two_forwards", "zo_peak_over_inference_peak", "mezo_ref_step_over_zo_step",
                "fo_adam_peak_over_inference_peak", "batched_over_per_candidate_eval_throughput",
                "zo_step_rademacher_over_two_forwards", "zo_step_gaussian_over_its_own_forwards"):
        assert res["ratios"][key] > 0, key
    # the direction passes against their floors, and the step ratios over paired rounds with intervals
    for name in ("inplace_add", "axpy", "gaussian", "philox:gaussian", "philox_fast:gaussian", "philox_icdf:gaussian"):
        assert res["passes"][name]["time_ms"] > 0, name
    assert res["ratios"]["three_passes_philox:gaussian_over_two_forwards"] > 0
    iv = res["ratio_intervals"]["zo_step_philox:gaussian_over_two_forwards"]
    assert iv["n"] == 2 and iv["lo"] <= iv["ratio"] <= iv["hi"]
    report = out.with_suffix(".md").read_text()
    assert "| philox:gaussian |" in report and "paired rounds" in report
    assert "| zo_peak_over_inference_peak |" in report and "≤ 1.05" in report
    # the step contains its two forwards: it cannot take less time than they do
    assert res["zo_sgd_gaussian"]["time_ms"] >= res["zo_sgd_gaussian"]["forward_ms_in_step"]
