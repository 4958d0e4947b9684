import json
from pathlib import Path

from efm_ros.learn.experiment import _write, build_parser


def test_results_table_has_every_seed_and_the_mean(tmp_path):
    res = {"seeds": {"0": {"BC(n)": {"success": 0.4, "ci95": [0.3, 0.5]}, "SFT(n)+SI": {"success": 0.7, "ci95": [0.6, 0.8]}},
                     "1": {"BC(n)": {"success": 0.5, "ci95": [0.4, 0.6]}}}}
    _write(tmp_path, res, ("BC(n)", "BC(8n)", "SFT(n)+SI"), "t")
    md = (tmp_path / "results.md").read_text().splitlines()
    assert md[2] == "| seed | BC(n) | BC(8n) | SFT(n)+SI |"
    assert md[4] == "| 0 | 40.0% [30%, 50%] | — | 70.0% [60%, 80%] |"
    assert md[-1] == "| mean | 45.0% | — | 70.0% |"
    assert (tmp_path / "results.png").stat().st_size > 1000 and (tmp_path / "results.json").exists()


def test_cli_arguments():
    a = build_parser().parse_args(["figure3", "--demos", "d", "--n", "50", "--out", "o"])
    assert a.seeds == [0, 1, 2] and a.si_fraction == 0.1 and a.n == 50
    b = build_parser().parse_args(["novel", "--out", "o", "--episodes", "30", "--seeds", "4"])
    assert b.episodes == 30 and b.seeds == [4]


def test_every_stage1_parameter_reaches_the_experiments_and_typos_are_refused():
    import pytest

    from efm_ros.learn.experiment import sft_overrides

    for which in ("figure3", "rm-ablation"):
        a = build_parser().parse_args([which, "--demos", "d", "--n", "50", "--out", "o",
                                       "--sft", '{"goal_frame_weight": 1.0, "lr": 0.0005}'])
        assert sft_overrides(a) == {"goal_frame_weight": 1.0, "lr": 0.0005}
    assert sft_overrides(build_parser().parse_args(["figure3", "--demos", "d", "--n", "5", "--out", "o"])) == {}
    with pytest.raises(SystemExit, match="goal_frame_wieght"):
        sft_overrides(build_parser().parse_args(["figure3", "--demos", "d", "--n", "5", "--out", "o",
                                                 "--sft", '{"goal_frame_wieght": 1}']))


def test_pooled_counts_every_seeds_episodes_with_a_wilson_interval():
    from efm_ros.learn.evaluate import wilson_interval
    from efm_ros.learn.experiment import pooled

    seeds = {"0": {"BC(n)": {"success": 0.3, "episodes": 100}, "SFT(n)+SI": {"success": 0.5, "episodes": 100}},
             "1": {"BC(n)": {"success": 0.25, "episodes": 200}}}
    p = pooled(seeds, ("BC(n)", "BC(8n)", "SFT(n)+SI"))
    assert p["BC(n)"] == {"success": 80 / 300, "ci95": list(wilson_interval(80, 300)), "episodes": 300, "seeds": 2}
    assert p["SFT(n)+SI"]["seeds"] == 1 and "BC(8n)" not in p


def test_marked_operating_point_records_marks_exports_the_chosen_point_and_keeps_stage_ones_when_refused(tmp_path):
    """figure3 --mark-rollouts: the SFT(n) policy's rollouts are recorded and marked (one label each)
    and the detector's point is chosen on them as efm-ros calibrate chooses it. The bundled model's
    detector is informative on its own rollouts (docs/results.md): its point is exported with the model
    and practice starts from that; a second call reuses the result. Rollouts that never reach the goal
    give calibrate nothing to detect: practice keeps the model and its own point, with the reason on record.
    (The refusal of a detector no better than chance: test_calibrate.)"""
    from efm_ros.learn.calibrate import (choose_operating_point, marked_rollout_d, onnx_d_fn, sweep_operating_points,
                                         uninformative)
    from efm_ros.learn.experiment import marked_operating_point
    from efm_ros.model.manifest import verify_manifest
    from efm_ros.model.runtime import load_model

    model = Path("models/efm_sft")
    start, facts = marked_operating_point(model, tmp_path / "marked", 6, 1, {"robot_kwargs": {"families": ["block2block"]}})
    assert facts["labels"] == 6 and facts["episodes"] == 6 and "simulator" in facts["marked_by"]
    d, goals, marked = marked_rollout_d(onnx_d_fn(load_model(model)), [tmp_path / "marked" / "rollouts"])
    assert len(d) == 6 and sum(g is not None for g in goals) == facts["reached"] >= 1
    best, _ = choose_operating_point(sweep_operating_points(d, goals))
    assert uninformative(best) is None and start == tmp_path / "marked" / "model" and "error" not in facts
    assert (facts["chosen"]["s"], facts["chosen"]["k"]) == (best.s, best.k)
    m = verify_manifest(start)
    assert (m["success"]["threshold_steps"], m["success"]["consecutive"]) == (best.s, best.k)
    again = marked_operating_point(model, tmp_path / "marked", 6, 1, {})
    assert again == (start, facts)                          # cached: no second recording

    start, facts = marked_operating_point(model, tmp_path / "short", 3, 1,
                                          {"max_steps": 5, "robot_kwargs": {"families": ["block2block"]}})
    assert facts["labels"] == 3 and facts["reached"] == 0 and start == model and "chosen" not in facts
    assert "no operating point detects" in facts["error"] and not (tmp_path / "short" / "model").exists()


def test_figure3_arguments_for_the_product_loop_and_the_record():
    a = build_parser().parse_args(["figure3", "--demos", "d", "--n", "50", "--out", "o", "--mark-rollouts", "400",
                                   "--record", "docs/results/figure3.json", "--tag", "t"])
    assert (a.mark_rollouts, a.record, a.tag) == (400, "docs/results/figure3.json", "t")
    assert build_parser().parse_args(["figure3", "--demos", "d", "--n", "5", "--out", "o"]).mark_rollouts == 0


def test_figure3_seeds_recorded_separately_join_one_entry_and_its_pooled_rate(tmp_path):
    from efm_ros.learn.experiment import FIGURE3_ARMS, _record, join_seeds, pooled

    def run(seeds):
        res = {"n": 800, "seeds": seeds, "pooled": pooled(seeds, FIGURE3_ARMS)}
        _record(str(tmp_path / "figure3.json"), "t", res, combine=join_seeds)

    run({"0": {"BC(n)": {"success": 0.3, "episodes": 100}}})
    run({"1": {"BC(n)": {"success": 0.2, "episodes": 100}}})
    doc = json.loads((tmp_path / "figure3.json").read_text())
    assert set(doc["t"]["seeds"]) == {"0", "1"} and doc["t"]["pooled"]["BC(n)"]["success"] == 0.25
