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
