"""`distill` on the tiny data: the student learns, the table is complete (the reference row
included), logits are cached, several seeds give the table its seed study."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path
from unittest.mock import patch

import numpy as np
import pytest
from click.testing import CliRunner

import converters.distill as distill_module
import converters.reference as reference_module
from converters.comparison import HEADER, load_comparison
from converters.distill import distill, teacher_soft_targets
from converters.reference import NOTES, reference_row
from converters.search import TARGET_SHARE, Candidate, pareto_front, recommend, search_students
from converters.seed_study import VERDICTS
from edge_lstm.baselines import BASELINE_DIR, BASELINE_NAME, WindowBaseline, fit_window_baseline
from edge_lstm.checkpoint import load_checkpoint, read_meta
from edge_lstm.cli import main
from edge_lstm.data import prepare_data
from edge_lstm.metrics import compute_metrics
from edge_lstm.uncertainty import summarize_seeds
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def teacher(tiny_config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edge_lstm.train_teacher import train_teacher

    return train_teacher(tiny_config, tmp_path_factory.mktemp("teacher"))


@pytest.fixture(scope="module")
def distilled(tiny_config, teacher: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return distill(tiny_config, teacher, tmp_path_factory.mktemp("student"), baseline=True)


def test_student_improves_over_its_initial_accuracy(distilled: Path) -> None:
    meta = read_meta(distilled)
    assert meta.kind == "student" and meta.name == "student-gru8"
    before, after = meta.metrics["initial"], meta.metrics
    assert after["train"]["accuracy"] > before["train"]["accuracy"] + 0.2
    assert after["val"]["accuracy"] > before["val"]["accuracy"]
    student = load_checkpoint(distilled)
    assert student.model.cell == "gru" and student.model.hidden_size == 8
    baseline = read_meta(distilled / "baseline")
    assert baseline.name == "student-gru8-hard"
    assert baseline.metrics["initial"] == meta.metrics["initial"]  # same seed, same start
    for name in ("training_curve.png", "metrics.json"):
        assert (distilled / name).is_file() and (distilled / "baseline" / name).is_file()


def test_comparison_table_has_every_row_and_column(distilled: Path) -> None:
    rows = load_comparison(distilled / "comparison.json")
    names = ["teacher", "student-gru8", "student-gru8-hard", BASELINE_NAME]
    assert [r.model for r in rows] == names
    for row in rows:
        assert (row.runtime, row.precision) == (
            ("sklearn", "fp64") if row.model == BASELINE_NAME else ("torch", "fp32")
        )
        assert 0 <= row.macro_f1 <= 1 and 0 <= row.accuracy <= 1
        assert row.parameters and row.size_bytes > 0
        assert row.latency_ms_b1 > 0 and row.latency_ms_b256 > row.latency_ms_b1
    assert rows[0].parameters > rows[1].parameters == rows[2].parameters
    assert rows[1].macro_f1 == pytest.approx(read_meta(distilled).metrics["test"]["macro_f1"])
    assert rows[1].notes == "distilled (T=2, α=0.5, label smoothing 0)"
    assert rows[2].notes == "hard labels only (label smoothing 0)"

    raw = json.loads((distilled / "comparison.json").read_text())
    assert raw["roles"] == {
        "teacher": "teacher",
        "student": "student-gru8",
        "baseline": "student-gru8-hard",
        "reference": BASELINE_NAME,
    }
    assert set(raw["summary"]) >= {
        "student_f1_over_teacher_f1",
        "kd_minus_hard_macro_f1",
        "student_minus_reference_macro_f1_points",
    }
    assert raw["seeds"]["seeds"] == [0] and raw["seeds"]["verdict"] == "one_seed"
    md = (distilled / "comparison.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert table[0] == "| " + " | ".join(HEADER) + " |"
    assert len(table) == 2 + 4
    assert all(line.count("|") == len(HEADER) + 1 for line in table)
    assert f"- verdict: {VERDICTS['one_seed']}" in md.splitlines()
    gap = raw["summary"]["student_minus_reference_macro_f1_points"]
    assert f"- student-gru8 − the reference {BASELINE_NAME}: {gap:+.2f} points" in md


def test_the_reference_row_is_the_window_baseline_stored_with_the_teacher(
    tiny_config, teacher: Path, distilled: Path
) -> None:
    prepared = prepare_data(tiny_config)
    stored = WindowBaseline.load(teacher / BASELINE_DIR)
    expected = compute_metrics(
        stored.predict_proba(prepared.test.x), prepared.test.y, stored.classes
    )
    row = load_comparison(distilled / "comparison.json")[-1]
    assert row.model == BASELINE_NAME and row.notes == NOTES
    assert row.macro_f1 == pytest.approx(expected["macro_f1"])
    assert row.accuracy == pytest.approx(expected["accuracy"])
    assert (row.size_bytes, row.parameters) == (stored.size_bytes, stored.parameters)

    def refuse(*_args, **_kwargs):
        raise AssertionError("the stored window baseline was fitted again")

    teacher_ckpt = distill_module.load_teacher(teacher, prepared)
    with patch.object(reference_module, "fit_window_baseline", refuse):
        again = reference_row(teacher_ckpt, prepared, lambda x: x, seed=0)
    assert again.macro_f1 == row.macro_f1


def _few_train_windows(prepared, per_class: int = 12):
    """The prepared data with a few training windows per class: a window baseline fits in
    seconds on them."""
    keep = np.concatenate(
        [np.flatnonzero(prepared.train.y == c)[:per_class] for c in range(len(prepared.classes))]
    )
    train = prepared.train
    subset = dataclasses.replace(
        train,
        **{f.name: getattr(train, f.name)[keep] for f in dataclasses.fields(train)},
    )
    return dataclasses.replace(prepared, train=subset)


def test_a_stored_baseline_for_other_sensors_is_fitted_again(
    tiny_config, teacher: Path, tmp_path: Path
) -> None:
    prepared = _few_train_windows(prepare_data(tiny_config))
    other = shutil.copytree(teacher, tmp_path / "teacher")
    shutil.rmtree(other / BASELINE_DIR)
    reversed_sensors = list(reversed(prepared.features))
    WindowBaseline.fit(
        prepared.train.x, prepared.train.y, prepared.classes, channel_names=reversed_sensors
    ).save(other / BASELINE_DIR)
    row = reference_row(distill_module.load_teacher(other, prepared), prepared, lambda x: x, 0)
    fitted = fit_window_baseline(prepared, seed=0)
    expected = compute_metrics(
        fitted.predict_proba(prepared.test.x), prepared.test.y, prepared.classes
    )
    assert row.macro_f1 == pytest.approx(expected["macro_f1"])
    assert row.size_bytes == fitted.size_bytes


def test_teacher_logits_are_cached_by_weights_and_data(tiny_config, teacher, distilled) -> None:
    prepared = prepare_data(tiny_config)
    teacher_ckpt = distill_module.load_teacher(teacher, prepared)
    cached = np.load(distilled / "teacher_logits.npy")
    assert cached.shape == (len(prepared.train.y), len(prepared.classes))

    def refuse(*_args):
        raise AssertionError("teacher logits were recomputed despite a valid cache")

    with patch.object(distill_module, "_teacher_logits_now", refuse):
        np.testing.assert_array_equal(
            teacher_soft_targets(teacher_ckpt, prepared, distilled, cache=True), cached
        )
    prepared.train.x = prepared.train.x[:-1]  # different data -> different key
    fresh = teacher_soft_targets(teacher_ckpt, prepared, distilled, cache=True)
    assert fresh.shape[0] == cached.shape[0] - 1
    np.testing.assert_allclose(fresh, cached[:-1], atol=1e-5)


def test_search_reports_a_pareto_front(tiny_config, teacher, tmp_path) -> None:
    prepared = prepare_data(tiny_config)
    teacher_ckpt = distill_module.load_teacher(teacher, prepared)
    soft = teacher_soft_targets(teacher_ckpt, prepared, tmp_path, cache=False)
    teacher_f1 = distill_module._teacher_val_f1(teacher_ckpt, prepared)
    assert teacher_f1 is not None and teacher_f1 > 0.1  # a real target, not "anything goes"
    grid = {"cell": ("gru", "lstm"), "layers": (1,), "hidden_size": (4,)}
    found = search_students(
        tiny_config, prepared, soft, tmp_path, teacher_val_f1=teacher_f1, grid=grid
    )
    assert [c.name for c in found] == ["student-gru4", "student-lstm4"]

    def beaten(c: Candidate) -> bool:
        return any(
            (o.latency_ms_b1, -o.val_macro_f1) != (c.latency_ms_b1, -c.val_macro_f1)
            and o.latency_ms_b1 <= c.latency_ms_b1
            and o.val_macro_f1 >= c.val_macro_f1
            for o in found
        )

    assert [c.pareto for c in found] == [not beaten(c) for c in found]
    report = json.loads((tmp_path / "search.json").read_text())
    target = TARGET_SHARE * teacher_f1
    assert report["target_val_macro_f1"] == pytest.approx(target)
    meeting = sorted((c for c in found if c.val_macro_f1 >= target), key=lambda c: c.latency_ms_b1)
    assert report["recommended"] == (meeting[0].name if meeting else None)
    md = (tmp_path / "search.md").read_text()
    assert "student-lstm4" in md
    assert (f"**{meeting[0].name}**" if meeting else "No candidate reaches") in md
    assert (tmp_path / "pareto.png").read_bytes()[:4] == b"\x89PNG"


def _cand(name: str, f1: float, ms: float) -> Candidate:
    return Candidate(name, "gru", 1, 8, 100, f1, f1, f1, ms, ms * 10, 1.0)


def test_recommend_picks_the_fastest_candidate_that_meets_the_target() -> None:
    cands = [_cand("fast", 0.70, 0.5), _cand("mid", 0.90, 1.0), _cand("slow", 0.95, 3.0)]
    assert recommend(cands, 0.85).name == "mid"  # the fastest one misses the target
    assert recommend(cands, 0.95).name == "slow"
    assert recommend(cands, 0.99) is None
    assert recommend(cands, None) is None


def test_pareto_front_drops_dominated_candidates() -> None:
    cands = [
        _cand("a", 0.9, 1.0),
        _cand("b", 0.95, 2.0),
        _cand("c", 0.9, 3.0),
        _cand("d", 0.8, 0.5),
    ]
    assert [c.name for c in pareto_front(cands)] == ["d", "a", "b"]


def test_cli_refuses_a_student_as_teacher(distilled: Path, tiny_config_path: Path, tmp_path):
    argv = [
        "distill",
        "--teacher",
        str(distilled),
        "--config",
        str(tiny_config_path),
        "--out",
        str(tmp_path / "s"),
    ]
    with patch.object(sys, "argv", ["edgelstm", *argv]):
        result = CliRunner().invoke(main, argv)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "is a student checkpoint" in lines[0], result.output


def test_cli_distill_prints_the_table_and_one_summary_line(
    teacher: Path, tiny_config_path: Path, tmp_path: Path
) -> None:
    from edge_lstm.units import human_size

    out = tmp_path / "s"
    argv = ["distill", "--teacher", str(teacher), "--config", str(tiny_config_path)]
    result = CliRunner().invoke(main, [*argv, "--out", str(out), "--no-baseline"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert any(line.split()[:3] == ["model", "runtime", "precision"] for line in lines)
    summary = lines[-1]
    size = human_size((out / "model.pt").stat().st_size)
    assert summary.startswith(f"wrote model.pt ({size}), comparison.json (")
    assert f"into {out} in " in summary and "baseline" not in summary
    assert summary.endswith(f"next: edgelstm export {out} --out <deployment folder>")


def test_distill_leaves_no_training_state_and_resumes_an_interrupted_student(
    tiny_config, teacher: Path, distilled: Path, tmp_path: Path
) -> None:
    """A finished distill removes its train_state.pt files. A KD student interrupted after its
    state was written (here: the state of a full run, as a kill after the last epoch leaves it)
    is resumed by --resume without training again, to the same weights."""
    import torch

    from converters.students import train_student
    from edge_lstm.training import STATE_FILE

    assert not (distilled / STATE_FILE).exists()
    assert not (distilled / "baseline" / STATE_FILE).exists()
    out = tmp_path / "student"
    prepared = prepare_data(tiny_config)
    soft = teacher_soft_targets(distill_module.load_teacher(teacher, prepared), prepared, out, True)
    dcfg = tiny_config.distill
    train_student(
        prepared, tiny_config.student, dcfg.train, tiny_config.data.class_balance,
        soft_targets=soft, temperature=dcfg.temperature, alpha=dcfg.alpha,
        state_path=out / STATE_FILE,
    )  # fmt: skip
    assert (out / STATE_FILE).is_file()
    distill(tiny_config, teacher, out, baseline=False, resume=True)
    assert not (out / STATE_FILE).exists()
    training = json.loads((out / "metrics.json").read_text())["training"]
    assert training["resumed_after_epoch"] == training["epochs_run"] > 0
    fresh = load_checkpoint(distilled).model.state_dict()
    for name, tensor in load_checkpoint(out).model.state_dict().items():
        assert torch.equal(tensor, fresh[name]), name


def test_seeds_train_both_students_per_seed_and_the_table_reports_their_difference(
    teacher: Path, distilled: Path, tiny_config_path: Path, tmp_path: Path
) -> None:
    """`--seeds 2`: the primary seed's students are those of a one-seed run, seed 1's go to
    seeds/seed-1/ (a seed folder of an earlier run goes), and the seed study holds each seed's
    test figures and KD − hard."""
    import torch

    out = tmp_path / "s"
    stale = out / "seeds" / "seed-5"  # left by an earlier run with more seeds
    stale.mkdir(parents=True)
    (stale / "model.pt").write_bytes(b"old")
    args = ["--teacher", str(teacher), "--config", str(tiny_config_path), "--out", str(out)]
    result = run_cli("distill", *args, "--seeds", "2")
    assert result.exit_code == 0, result.output
    folders = {"kd": [out, out / "seeds" / "seed-1"]}
    folders["hard"] = [f / "baseline" for f in folders["kd"]]
    for folder in folders["kd"] + folders["hard"]:
        assert (folder / "model.pt").is_file() and (folder / "metrics.json").is_file()
    assert sorted(p.name for p in (out / "seeds").iterdir()) == ["seed-1"]
    for name, tensor in load_checkpoint(out).model.state_dict().items():
        assert torch.equal(tensor, load_checkpoint(distilled).model.state_dict()[name]), name
    seed1 = load_checkpoint(folders["kd"][1]).model.state_dict()
    assert any(
        not torch.equal(t, seed1[n]) for n, t in load_checkpoint(out).model.state_dict().items()
    )

    def figures(folder: Path) -> tuple[float, int]:
        report = json.loads((folder / "metrics.json").read_text())
        return report["test"]["macro_f1"], report["training"]["seed"]

    kd, hard = ([figures(f) for f in folders[k]] for k in ("kd", "hard"))
    assert [seed for _, seed in kd] == [seed for _, seed in hard] == [0, 1]
    study = json.loads((out / "comparison.json").read_text())["seeds"]
    assert study["seeds"] == [0, 1]
    assert study["training"]["label_smoothing"] == 0.0 and study["training"]["epochs"] == 3
    assert study["models"]["student-gru8"]["macro_f1"]["values"] == [f1 for f1, _ in kd]
    assert study["models"]["student-gru8-hard"]["macro_f1"]["values"] == [f1 for f1, _ in hard]
    diff = summarize_seeds([k - h for (k, _), (h, _) in zip(kd, hard, strict=True)])
    assert study["kd_minus_hard"]["macro_f1"]["mean"] == pytest.approx(diff.mean)
    assert study["kd_minus_hard"]["macro_f1"]["low"] == pytest.approx(diff.low)
    verdict = "kd_helps" if diff.low > 0 else "hard_better" if diff.high < 0 else "not_shown"
    assert study["verdict"] == verdict

    md = (out / "comparison.md").read_text().splitlines()
    assert (
        "- the KD and hard-label students trained alike: label smoothing 0, 3 epochs "
        "(patience 2), lr 0.01, seeds 0–1"
    ) in md
    assert any(line.startswith("- KD − hard: ") and "over 2 seeds (95% CI " in line for line in md)
    assert md[-1] == f"- verdict: {VERDICTS[verdict]}"
    printed = result.output.splitlines()
    assert f"- verdict: {VERDICTS[verdict]}" in printed
    assert any(line.startswith("seed 1: students in ") for line in printed)
