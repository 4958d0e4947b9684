"""Success-detector calibration (efm_ros.learn.calibrate) on synthetic d values with hand-checked answers."""
import json

import numpy as np
import pytest

from efm_ros.learn import calibrate as cal


def test_previous_frames_repeats_frame_zero():
    frames = np.arange(4, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    prev = cal.previous_frames(frames)
    assert [int(p[0, 0, 0]) for p in prev] == [0, 0, 1, 2]
    with pytest.raises(ValueError):
        cal.previous_frames(frames[0])


def test_roc_curve_hand_computed():
    # d: 1 2 3 4 5 6, goal frames (positives) at d = 1, 2, 4
    curve = cal.roc_curve([1, 2, 3, 4, 5, 6], [True, True, False, True, False, False])
    assert curve.thresholds.tolist() == [1, 2, 3, 4, 5, 6]
    assert curve.tp.tolist() == [1, 2, 2, 3, 3, 3] and curve.fp.tolist() == [0, 0, 1, 1, 2, 3]
    assert curve.precision.tolist() == pytest.approx([1, 1, 2 / 3, 3 / 4, 3 / 5, 1 / 2])
    assert curve.recall.tolist() == pytest.approx([1 / 3, 2 / 3, 2 / 3, 1, 1, 1])
    assert curve.fpr.tolist() == pytest.approx([0, 0, 1 / 3, 1 / 3, 2 / 3, 1])
    # AUC = P(d_goal < d_other): pairs (1<3,5,6)(2<3,5,6)(4<5,6) = 8 of 9
    assert curve.auc() == pytest.approx(8 / 9)
    shuffled = cal.roc_curve([4, 1, 6, 2, 5, 3], [False, True, False, False, False, True])  # goals at d = 1, 3
    assert shuffled.tp.tolist() == [1, 1, 2, 2, 2, 2]   # labels travel with their d value
    ties = cal.roc_curve([1, 1, 2], [True, False, False])
    assert ties.thresholds.tolist() == [1, 2] and ties.tp.tolist() == [1, 1] and ties.fp.tolist() == [1, 2]
    with pytest.raises(ValueError):
        cal.roc_curve([1, 2], [True, True])        # no negatives


def test_separable_threshold_has_precision_and_recall_one():
    d = [0.5, 1.0, 3.0, 5.0, 7.0]
    goal = [True, True, False, False, False]
    c = cal.choose_threshold(d, goal)
    assert c.s == pytest.approx(2.0)               # halfway between the last goal d (1) and the next (3)
    assert (c.precision, c.recall, c.fpr) == (1.0, 1.0, 0.0) and c.method == "max_recall_at_precision"
    st = cal.threshold_stats(d, goal, c.s)
    assert (st.tp, st.fp, st.fn, st.tn) == (2, 0, 0, 3)


def test_overlapping_threshold_respects_precision_then_falls_back_to_f1():
    d, goal = [1, 2, 3, 4, 5, 6], [True, True, False, True, False, False]
    strict = cal.choose_threshold(d, goal, min_precision=0.95)
    assert strict.s == pytest.approx(2.5) and strict.recall == pytest.approx(2 / 3) and strict.precision == 1.0
    loose = cal.choose_threshold(d, goal, min_precision=0.7)
    assert loose.s == pytest.approx(4.5) and loose.recall == 1.0 and loose.precision == pytest.approx(0.75)
    # precision never reaches 0.95: precision [0, 1/2, 1/3], F1 [0, 2/3, 1/2] -> threshold 2
    fallback = cal.choose_threshold([1, 2, 3], [False, True, False])
    assert fallback.method == "max_f1" and fallback.s == pytest.approx(2.5) and fallback.f1 == pytest.approx(2 / 3)


def test_threshold_on_random_overlap_is_the_best_feasible():
    rng = np.random.default_rng(0)
    d = np.r_[rng.normal(1.0, 0.6, 200), rng.normal(5.0, 1.0, 2000)]
    goal = np.r_[np.ones(200, bool), np.zeros(2000, bool)]
    c = cal.choose_threshold(d, goal, min_precision=0.95)
    st = cal.threshold_stats(d, goal, c.s)
    assert c.method == "max_recall_at_precision" and st.precision >= 0.95
    assert st.recall == pytest.approx(c.recall) and 0 < c.recall < 1
    above = np.unique(d[d > c.s])[:50]           # any larger threshold with more recall breaks the constraint
    for t in above:
        more = cal.threshold_stats(d, goal, t)
        assert more.recall <= c.recall or more.precision < 0.95


def test_episode_level_outcomes_and_k():
    s = 2.0
    demo_a = [9, 8, 5, 3, 1]          # reaches d <= s only at its goal (tick 4)
    demo_b = [9, 1, 8, 5, 1]          # a one-tick dip at tick 1, 3 ticks before the goal
    fail_c = [9, 1, 9, 9]             # a one-tick dip in a rollout that never succeeds
    k1 = cal.episode_level_detection([demo_a, demo_b, fail_c], [4, 4, None], s, 1)
    assert [e.outcome for e in k1.episodes] == ["hit", "early", "false_alarm"]
    assert k1.episodes[1].early_by == 3 and k1.episodes[1].false_positive and k1.episodes[2].false_positive
    assert k1.precision == pytest.approx(1 / 3) and k1.recall == pytest.approx(1 / 2)
    k2 = cal.episode_level_detection([demo_a, demo_b, fail_c], [4, 4, None], s, 2)
    # without frames after the goal no 2-tick run can end at it: both demos are missed
    assert [e.outcome for e in k2.episodes] == ["missed", "missed", "correct_reject"]
    assert k2.precision is None and k2.recall == 0.0
    # held at the goal for k_max - 1 = 2 more ticks (as calibrate() pads demos)
    held = [demo_a + [1, 1], demo_b + [1, 1], fail_c]
    choice = cal.choose_k(held, [4, 4, None], s, k_max=3, min_precision=0.95)
    assert choice.k == 2 and choice.method == "smallest_k_at_precision"
    assert [e.fire_tick for e in choice.detection.episodes] == [5, 5, None]
    assert [r["precision"] for r in choice.per_k] == pytest.approx([1 / 3, 1.0, 1.0])


def test_goal_lost_again_and_k_fallback():
    lost = cal.classify_episode(cal.consecutive_success([5, 5, 5, 1], 2.0, 1), np.array([False, True, False, False]))
    assert lost.outcome == "false_alarm" and lost.goal_tick == 1 and lost.fire_tick == 3
    # a failure that sits below s for good fools every k: precision 1/2 for all k -> max F1, smallest k
    choice = cal.choose_k([[5, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1]], [5, None], 2.0, k_max=3)
    assert choice.method == "max_f1" and choice.k == 1
    with pytest.raises(ValueError):
        cal.goal_mask(7, 5)


def _demo_d(T, near=None):
    """d = true steps to go (T - t); optionally a near-goal frame that already looks like the goal."""
    d = np.arange(T, -1, -1, dtype=float)
    if near is not None:
        d[-1 - near] = 0.0
    return d


def test_calibrate_picks_larger_k_for_single_tick_false_positives():
    demos = [_demo_d(10 + i) for i in range(20)]
    failures = [np.full(30, 20.0) for _ in range(4)]
    failures[0][7] = 0.0                         # one single-tick false positive
    # frame precision 20/21 >= 0.95 -> s = 0.5 (goal frames d = 0, next d = 1)
    one = cal.calibrate(demos, failures, k_max=3, min_episode_precision=0.95)
    assert one.s == pytest.approx(0.5) and one.frame_recall == 1.0 and one.frame_precision == pytest.approx(20 / 21)
    assert one.k == 1 and one.episode_precision == pytest.approx(20 / 21)
    assert one.frame_false_positives == {"near_goal": 0, "demo": 0, "failure": 1}
    strict = cal.calibrate(demos, failures, k_max=3, min_episode_precision=0.99)
    assert strict.k == 2 and strict.k_method == "smallest_k_at_precision"
    assert strict.episode_precision == 1.0 and strict.episode_recall == 1.0
    assert strict.episode_outcomes == {"hit": 20, "early": 0, "false_alarm": 0, "missed": 0, "correct_reject": 4}
    assert (strict.n_positive_frames, strict.n_goal_episodes, strict.n_failure_episodes) == (20, 20, 4)
    assert strict.n_negative_frames == sum(10 + i for i in range(20)) + 4 * 30
    d = json.loads(json.dumps(strict.to_dict()))
    assert d["s"] == strict.s and d["k"] == 2 and "curve" not in d and d["method"].startswith("s: max_recall")
    assert strict.train_meta()["success_threshold"] == strict.s and strict.train_meta()["success_k"] == 2


def test_near_goal_negatives_are_counted_as_such():
    demos = [_demo_d(12, near=1) for _ in range(19)] + [_demo_d(12) for _ in range(81)]
    c = cal.calibrate(demos, [], k_max=2)
    # 19 near-goal frames with d = 0 tie with the 100 goal frames: precision 100/119 < 0.95 -> max F1
    assert c.threshold_method == "max_f1" and c.frame_false_positives["near_goal"] == 19
    assert c.frame_precision == pytest.approx(100 / 119)
    # the frame one step before the goal shares the goal's steps-to-go bin: leave it out of the ROC
    ignoring = cal.calibrate(demos, [], k_max=2, ignore_near_goal=1)
    assert ignoring.threshold_method == "max_recall_at_precision" and ignoring.frame_precision == 1.0
    # next used d above the goal frames' 0 is 2 (T - 2): s = 1, so every T - 1 frame (d 0 or 1) fires
    assert ignoring.s == pytest.approx(1.0) and ignoring.frame_false_positives["near_goal"] == 100
    # ... which the episode level sees as firing one step early at k = 1; at k = 2 d(T-2) = 2 > s
    assert ignoring.k == 2 and ignoring.episode_outcomes["hit"] == 100 and ignoring.ignored_near_goal == 1


class _RecordingD:
    """d = mean pixel value of the frame; records the (frame, prev) pairs it was asked about."""

    def __init__(self):
        self.calls = []

    def __call__(self, frames, prev, instruction):
        self.calls.append((frames.copy(), prev.copy(), instruction))
        return frames.reshape(len(frames), -1).mean(1)


def _episode(values):
    """(frames, instruction) with frame t a uniform image of value values[t]"""
    return np.stack([np.full((4, 4, 3), v, np.uint8) for v in values]), "push the red block to the blue block"


def test_calibrate_model_frame_pairs_and_hold():
    demo = _episode([40, 30, 20, 10, 0])
    failure = _episode([50, 45, 40, 35])
    d_fn = _RecordingD()
    c = cal.calibrate_model(d_fn, [demo], [failure], k_max=2, batch_size=3)
    frames_seen = np.concatenate([f for f, _, _ in d_fn.calls])
    prev_seen = np.concatenate([p for _, p, _ in d_fn.calls])
    means = frames_seen.reshape(len(frames_seen), -1).mean(1).tolist()
    prev_means = prev_seen.reshape(len(prev_seen), -1).mean(1).tolist()
    # demo: 5 frames + the held goal pair (0, 0); prev_frame(0) = frame 0; then the failure
    assert means == [40, 30, 20, 10, 0, 0, 50, 45, 40, 35]
    assert prev_means == [40, 40, 30, 20, 10, 0, 50, 50, 45, 40]
    assert all(len(f) <= 3 for f, _, _ in d_fn.calls)
    assert c.s == pytest.approx(5.0) and c.frame_precision == 1.0 and c.frame_recall == 1.0
    assert c.k == 1 and c.episode_recall == 1.0


def test_calibrate_model_rejects_mislabelled_episodes():
    class Rollout:
        frames = np.zeros((3, 4, 4, 3), np.uint8)
        instruction = "push the red block to the blue block"
        success = False

    with pytest.raises(ValueError, match="did not reach its goal"):
        cal.calibrate_model(lambda f, p, i: f.mean((1, 2, 3)), [Rollout()], [])


def test_sim_failure_rollouts_never_succeed_and_are_reproducible():
    a = cal.sim_failure_rollouts(2, seed=3, image_size=32, max_steps=8)
    b = cal.sim_failure_rollouts(2, seed=3, image_size=32, max_steps=8)
    assert [r.success for r in a] == [False, False] and a[0].frames.shape == (9, 32, 32, 3)
    assert all(np.array_equal(x.frames, y.frames) and x.seed == y.seed for x, y in zip(a, b))
    assert a[0].seed != a[1].seed


def test_plot_roc_writes_png(tmp_path):
    c = cal.calibrate([_demo_d(10 + i) for i in range(10)], [np.linspace(30, 3, 20)], k_max=2)
    path = cal.plot_roc(c, tmp_path / "roc.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_operating_point_on_rollouts_is_the_best_f1_or_the_best_recall_at_a_precision():
    """sweep + choose on rollouts like the policy's: goal episodes reach d 0.5 at their goal and
    hold it, 2.5 one step before and 4.0 two steps before; a failed episode dips once to 0.4 (one
    tick) and otherwise stays above 4. Every k = 1 point fires on the dip (a false alarm); k = 2 with
    s in [0.5, 4) fires at or just after the goal: precision and recall 1. A precision target the sweep cannot reach falls back to
    max F1, and one it can reach gives its best recall."""
    goal_ep = np.array([9.0, 6.0, 4.0, 2.5, 0.5, 0.5, 0.5])          # goal from tick 4 on, held
    fail_ep = np.array([9.0, 7.0, 0.4, 5.0, 4.5, 4.2, 4.1])
    d, goals = [goal_ep] * 3 + [fail_ep] * 2, [4] * 3 + [None] * 2
    points = cal.sweep_operating_points(d, goals, k_max=3)
    assert len(points) == 3 * len(cal.S_GRID)
    best, method = cal.choose_operating_point(points)
    assert method == "max_f1" and best.precision == best.recall == 1.0
    assert (best.k, best.s) == (2, 0.5)                                    # ties: the smaller s
    assert cal.choose_operating_point(points, min_precision=1.01)[1] == "max_f1"
    hard = [goal_ep, goal_ep, fail_ep, np.array([9.0, 5.0, 3.0, 2.0, 1.9, 1.2, 0.9])]   # the last: reached at 6
    pts = cal.sweep_operating_points(hard, [4, 4, None, 6], k_max=2)
    chosen, method = cal.choose_operating_point(pts, min_precision=1.0)
    assert method == "recall_at_precision" and chosen.precision == 1.0
    assert chosen.recall == max(p.recall or 0.0 for p in pts if (p.precision or 0.0) >= 1.0)
    with pytest.raises(ValueError):
        cal.choose_operating_point([])


def test_a_detector_right_no_more_often_than_the_goal_is_reached_is_uninformative():
    """Two of four rollouts reach their goal at tick 4. In one, d drops only at the goal; in every other
    rollout d is low from the start: each point that detects the goal fires in all four, right in one,
    precision 0.25 against a reach share of 0.5, no better than chance. Without those early dips the
    same episodes give an informative detector, and a point that detects nothing is refused too."""
    at_goal = np.array([9.0, 9.0, 9.0, 9.0, 0.5, 0.5, 0.5])
    low = np.full(7, 0.5)
    d, goals = [at_goal, low, low, low], [4, 4, None, None]
    best, _ = cal.choose_operating_point(cal.sweep_operating_points(d, goals, k_max=2))
    assert best.count("hit") == 1 and best.fired == 4 and best.precision == 0.25
    assert "no better than chance" in cal.uninformative(best)
    fine = [at_goal, at_goal, np.full(7, 9.0), np.full(7, 9.0)]
    good, _ = cal.choose_operating_point(cal.sweep_operating_points(fine, goals, k_max=2))
    assert good.precision == 1.0 and cal.uninformative(good) is None
    blind = cal.episode_level_detection(fine, goals, 0.25, 1)
    assert blind.count("hit") == 0 and "no operating point detects" in cal.uninformative(blind)


def test_calibrate_command_exports_the_point_chosen_on_marked_rollouts(tmp_path):
    """efm-ros calibrate: d of every marked bag (by the model's reward graph), the point of best
    F1 on them exported with the model (same weights and graphs, the new s and k, the calibrated
    point and the marks' counts on record); unmarked bags are not used; no marks is a clear error."""
    from efm_ros.data.marks import Mark, append_marks
    from efm_ros.learn.evaluate import main as eval_main
    from efm_ros.model.manifest import verify_manifest
    from efm_ros.model.runtime import load_model

    rec = tmp_path / "rollouts"
    assert eval_main(["--model", "models/efm_sft", "--episodes", "5", "--max-steps", "30", "--record", str(rec),
                      "--out", str(tmp_path / "eval"), "--no-plots", "--quiet"]) == 0
    # episode 4 left unmarked; the others marked failed (whatever happened: no rollout is marked reached yet)
    header, *rows = [line.split(",") for line in (rec / "marks.csv").read_text().splitlines()]
    (rec / "marks.csv").write_text("\n".join(",".join(r) for r in [header] + [[r[0], "failure", "", *r[3:]] for r in rows
                                                                              if r[0] != "eval_s0_e00004"]) + "\n")
    model = load_model("models/efm_sft")
    d_fn = cal.onnx_d_fn(model)
    assert cal.main(["models/efm_sft", "--rollouts", str(rec), "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    assert not (tmp_path / "x").exists()        # none marked reached: no point detects anything, none exported
    # a person marks the episode that comes closest by d (30 steps bring it within s's range) reached where d is lowest
    d, _, marked = cal.marked_rollout_d(d_fn, [rec])
    i = int(np.argmin([x.min() for x in d]))
    append_marks(rec, [Mark(marked.paths[i].name, "success", int(np.argmin(d[i])), "ana")])
    out = tmp_path / "calibrated"
    assert cal.main(["models/efm_sft", "--rollouts", str(rec), "--out", str(out), "--k-max", "3", "--no-progress"]) == 0
    m = verify_manifest(out)
    override = m["training"]["success_override"]
    facts = override["chosen_on"]
    assert facts["marked"] == 4 and facts["unmarked"] == 1 and facts["marked_by"]["ana"] == 1 and facts["hit"] >= 1
    assert override["calibrated"]["threshold_steps"] == verify_manifest("models/efm_sft")["success"]["threshold_steps"]
    # the exported point is the best F1 of the sweep over the same marked bags, recomputed here
    d, goals, _ = cal.marked_rollout_d(d_fn, [rec])
    assert goals[i] == int(np.argmin(d[i])) and len(d) == 4
    want, _ = cal.choose_operating_point(cal.sweep_operating_points(d, goals, k_max=3))
    assert (m["success"]["threshold_steps"], m["success"]["consecutive"]) == (want.s, want.k) == (facts["s"], facts["k"])
    assert m["model_version"] == "calibrated" and set(m["files"]) == set(verify_manifest("models/efm_sft")["files"])
    assert load_model(out).success_threshold == want.s
    (tmp_path / "empty").mkdir()
    assert cal.main(["models/efm_sft", "--rollouts", str(tmp_path / "empty"), "--out", str(tmp_path / "y")]) == 2
