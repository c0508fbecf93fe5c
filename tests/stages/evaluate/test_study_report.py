"""Study tables of `carp report`: a seed-and-budget sweep against a declared
baseline (paired differences that find a planted gain and call a null n.s.),
the select outputs' ARI and corrupted records, and the report of a declared
study built from its folders."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from pipelines.cli import main
from stages.evaluate.study import read_em, selection_table, sweep_table


def sweep(rng: np.random.Generator, gain: float) -> tuple[dict, list[str]]:
    """base, and rec_random / rec_good / rec_same at budgets 0.1 and 0.2 with
    3 seeds over 2 families x 300 records; rec_good gains ``gain`` on family
    ``a`` (records that are wrong for random turned right)."""
    fams = ["a"] * 300 + ["b"] * 300
    em = {"base": (rng.random(600) < 0.9).astype(float)}
    for budget in ("0.1", "0.2"):
        for s in range(3):
            rnd = (rng.random(600) < 0.5).astype(float)
            good = rnd.copy()
            wrong_a = np.flatnonzero(rnd[:300] == 0)
            good[wrong_a[: int(gain * 300)]] = 1.0
            em[f"rec_random@{budget}-s{s}"] = rnd
            em[f"rec_good@{budget}-s{s}"] = good
            em[f"rec_same@{budget}-s{s}"] = rnd.copy()
    return em, fams


def row(table: str, model: str, label: str) -> list[str]:
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[:2] == [model, label]:
            return cells
    raise AssertionError(f"no row {model} {label} in\n{table}")


def test_sweep_table_finds_a_planted_gain_and_calls_a_null_not_significant():
    em, fams = sweep(np.random.default_rng(0), gain=0.2)
    table = sweep_table(em, fams, "rec_random", n_boot=500)
    for budget in ("0.1", "0.2"):
        good = row(table, "rec_good", budget)
        assert good[2] == "3"  # seeds
        diff = re.match(r"([+-][\d.]+) \[([+-][\d.]+), ([+-][\d.]+)\]$", good[4])
        assert diff, good[4]
        point, lo, hi = map(float, diff.groups())
        assert point == pytest.approx(0.1, abs=1e-9)  # +0.2 on one of 2 families
        assert 0 < lo < point < hi
        assert row(table, "rec_same", budget)[4] == "+0.000 [+0.000, +0.000] n.s."
        assert row(table, "rec_random", budget)[4] == "–"
    assert (
        row(table, "base", "–")[3]
        == f"{np.mean([em['base'][:300].mean(), em['base'][300:].mean()]):.3f}"
    )
    per_family = table.split("Per family")[1]
    cells = row(per_family, "rec_good", "0.1")
    assert cells[2].startswith("+0.20 [") and not cells[2].endswith("n.s.")
    assert cells[3] == "+0.00 [+0.00, +0.00] n.s."


def test_sweep_table_is_empty_without_the_baseline_among_the_models():
    em, fams = sweep(np.random.default_rng(1), gain=0.1)
    assert sweep_table(em, fams, "rec_missing", n_boot=100) == ""


def test_selection_table_counts_corrupted_records_against_randoms_range():
    table = selection_table(
        [
            (
                "sel_paser",
                {
                    "method": "paser",
                    "k": 7,
                    "ari_vs_family": 0.5123,
                    "selected": 100,
                    "pool_size": 1000,
                    "corrupted_in_pool": 100,
                    "corrupted_selected": 0,
                    "noise_flagged": 40,
                    "noise_flagged_corrupted": 30,
                },
            ),
            ("sel_random", {"method": "random", "selected": 100, "pool_size": 1000}),
        ]
    )
    paser = row(table, "sel_paser", "paser")
    assert paser[2:] == ["7", "0.512", "100", "0 / 100", paser[6], "40 (30)"]
    mean, lo, hi = map(float, re.findall(r"[\d.]+", paser[6]))
    assert mean == pytest.approx(10.0) and lo < 10 < hi and lo > 0
    assert row(table, "sel_random", "random")[2:] == ["–", "–", "100", "–", "–", "–"]


def write_predictions(folder: Path, em: dict, fams: list[str]) -> None:
    (folder / "predictions").mkdir(parents=True)
    for model, arr in em.items():
        rows = [
            {"id": f"r{i:04d}", "family": f, "em": float(v)}
            for i, (f, v) in enumerate(zip(fams, arr, strict=True))
        ]
        rows.reverse()  # read_em orders by id
        (folder / "predictions" / f"{model}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows)
        )


def test_read_em_refuses_models_scored_on_other_records(tmp_path: Path):
    write_predictions(tmp_path, {"a": np.ones(3)}, ["x", "y", "x"])
    em, fams = read_em(tmp_path)
    assert fams == ["x", "y", "x"] and em["a"].tolist() == [1, 1, 1]
    (tmp_path / "predictions" / "b.jsonl").write_text(
        json.dumps({"id": "zz", "family": "x", "em": 1}) + "\n"
    )
    with pytest.raises(ValueError, match="b.jsonl: scored on other records"):
        read_em(tmp_path)


STUDY = """\
pipeline: study
report: {baseline: rec_random, bootstrap: 200}
stages:
  world: {kind: world}
  base: {kind: pretrain, data: world}
  random:
    {kind: select, method: random, pool: world, matrix: {budget: [0.1, 0.2]},
     seeds: [0, 1, 2]}
  rec_random: {kind: recover, method: full, model: base, data: random}
  rec_good: {kind: recover, method: full, model: base, data: random}
  rec_same: {kind: recover, method: full, model: base, data: random}
  eval: {kind: evaluate, models: [base, rec_random, rec_good, rec_same], data: world}
"""


def study_run(root: Path, seed: int) -> Path:
    """A declared study's folders as `carp run` leaves them: the declaration and
    an evaluate output with per-record predictions of a planted sweep."""
    (root / "study.yaml").write_text(STUDY)
    em, fams = sweep(np.random.default_rng(seed), gain=0.2)
    out = root / "artifacts" / "eval"
    write_predictions(out, em, fams)
    (out / "table.md").write_text("| model | mean EM |\n|---|---|\n| base | 0.9 |\n")
    return out


def test_report_of_a_declared_study_prints_and_writes_its_tables(
    tmp_path: Path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    study_run(tmp_path, seed=2)
    sel = tmp_path / "artifacts" / "random@0.1-s0"
    sel.mkdir(parents=True)
    (sel / "selection.json").write_text(
        json.dumps({"method": "random", "selected": 5, "pool_size": 50})
    )
    assert main(["report", "study.yaml", "--html", "r.html", "--md", "r.md"]) == 0
    printed = capsys.readouterr().out
    md = (tmp_path / "r.md").read_text()
    for text in (printed, md, (tmp_path / "r.html").read_text()):
        assert "Study: eval against rec_random" in text
        assert "rec_good" in text and "random@0.1-s0" in text
    assert row(md, "rec_same", "0.2")[4].endswith("n.s.")
    # another declaration's select output is left out and named
    (sel / "carp.json").write_text(json.dumps({"pipeline": "other"}))
    assert main(["report", "study.yaml", "--html", "r.html", "--md", "r.md"]) == 0
    captured = capsys.readouterr()
    assert "random@0.1-s0" not in captured.out
    assert "holds pipeline 'other'" in captured.err


def test_report_baseline_must_name_a_stage(tmp_path: Path, capsys):
    f = tmp_path / "study.yaml"
    f.write_text(STUDY.replace("baseline: rec_random", "baseline: rec_randm"))
    assert main(["validate", str(f)]) != 0
    err = capsys.readouterr().err
    assert "report.baseline" in err and "did you mean 'rec_random'?" in err


def test_sweep_table_compares_within_the_same_world_and_regime():
    """Labels besides budget and seed (world seed, pruning regime) must match:
    rec_x of regime 2_4 is compared with rec_random of 2_4, not unstructured."""
    rng = np.random.default_rng(3)
    fams = ["a"] * 200 + ["b"] * 200
    em = {}
    for regime, level in (("unstructured", 0.9), ("2_4", 0.3)):
        for s in range(3):
            rnd = (rng.random(400) < level).astype(float)
            em[f"rec_random@s1-{regime}-0.1-s{s}"] = rnd
            em[f"rec_x@s1-{regime}-0.1-s{s}"] = rnd.copy()
    table = sweep_table(em, fams, "rec_random", n_boot=200)
    for regime in ("unstructured", "2_4"):
        assert row(table, f"rec_x@s1-{regime}", "0.1")[4].startswith("+0.000 [")


def test_a_baseline_can_name_labels_of_a_stage():
    """``rec_paser@faithful``: the faithful variants are the baseline, the
    other modes of the same stage are compared with them."""
    rng = np.random.default_rng(4)
    fams = ["a"] * 200 + ["b"] * 200
    em = {}
    for s in range(3):
        faithful = (rng.random(400) < 0.5).astype(float)
        carp = faithful.copy()
        carp[np.flatnonzero(faithful[:200] == 0)[:40]] = 1.0
        em[f"rec_paser@faithful-0.1-s{s}"] = faithful
        em[f"rec_paser@carp-0.1-s{s}"] = carp
    table = sweep_table(em, fams, "rec_paser@faithful", n_boot=200)
    assert row(table, "rec_paser@carp", "0.1")[4].startswith("+0.100 [")
    assert row(table, "rec_paser@faithful", "0.1")[4] == "–"


def test_report_baseline_on_the_command_line_overrides_and_is_checked(
    tmp_path: Path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    study_run(tmp_path, seed=5)
    assert main(["report", "study.yaml", "--baseline", "rec_good"]) == 0
    md = (tmp_path / "reports" / "report.md").read_text()
    assert "Study: eval against rec_good" in md
    assert row(md, "rec_random", "0.1")[4].startswith("-0.100 [")
    assert main(["report", "study.yaml", "--baseline", "rec_god"]) != 0
    assert "did you mean 'rec_good'?" in capsys.readouterr().err


def test_a_full_pool_baseline_stands_for_every_budget_and_seed():
    """``rec_full@<world>-<regime>`` (no budget, no seed: the whole pool,
    recovered once) is the baseline of every budget and seed of its own world
    and regime; a sweep that matches it on one regime and falls short on the
    other is told apart."""
    rng = np.random.default_rng(5)
    fams = ["a"] * 200 + ["b"] * 200
    em = {}
    for regime in ("unstructured", "2_4"):
        full = (rng.random(400) < 0.9).astype(float)
        em[f"rec_full@s1-{regime}"] = full
        for budget in ("0.1", "0.2"):
            for s in range(3):
                run = full.copy()
                if regime == "2_4":  # 40 of family a's right answers lost
                    run[np.flatnonzero(full[:200] == 1)[:40]] = 0.0
                em[f"rec_random@s1-{regime}-{budget}-s{s}"] = run
    table = sweep_table(em, fams, "rec_full", n_boot=200)
    for budget in ("0.1", "0.2"):
        assert row(table, "rec_random@s1-unstructured", budget)[4] == (
            "+0.000 [+0.000, +0.000] n.s."
        )
        assert row(table, "rec_random@s1-2_4", budget)[4].startswith("-0.100 [")
    assert row(table, "rec_full@s1-2_4", "–")[4] == "–"


def test_a_deterministic_selection_run_once_is_compared_with_every_seed():
    """``rec_ppl@0.1`` (a deterministic selection, no seeds: one model) is
    paired with each of random's seeds at its budget."""
    rng = np.random.default_rng(6)
    fams = ["a"] * 200 + ["b"] * 200
    em = {}
    runs = [(rng.random(400) < 0.6).astype(float) for _ in range(3)]
    for s, run in enumerate(runs):
        em[f"rec_random@0.1-s{s}"] = run
    em["rec_ppl@0.1"] = runs[0].copy()
    table = sweep_table(em, fams, "rec_random", n_boot=300)
    cells = row(table, "rec_ppl", "0.1")
    assert cells[2] == "1"
    diff = re.match(r"([+-][\d.]+) \[([+-][\d.]+), ([+-][\d.]+)\]", cells[4])
    point, lo, hi = map(float, diff.groups())
    want = np.mean([runs[0].mean() - r.mean() for r in runs])  # equal families
    assert point == pytest.approx(want, abs=1e-3) and lo <= point <= hi


def test_damage_table_ranks_each_score_against_the_em_drop():
    """A score that orders the families as their EM drop gets rho +1, one that
    orders them backwards -1; the pruned and reference models are the ones of
    the select's own world and regime."""
    from stages.evaluate.study import damage_table

    fams = [f for f in "abcd" for _ in range(100)]
    em = {"base@s1": np.ones(400)}
    for regime in ("unstructured", "2_4"):
        pruned = np.ones(400)
        for i in range(4):  # drops 0.1, 0.2, 0.3, 0.4 on families a-d
            pruned[100 * i : 100 * i + 10 * (i + 1)] = 0.0
        em[f"prune@s1-{regime}"] = pruned
    damage = {
        f: {"jsd": 1.0 - 0.1 * i, "loss_increase": 0.5 * i}
        for i, f in enumerate("abcd")
    }
    rep = {"family_damage": damage, "params": {"model": "prune", "reference": "base"}}
    table = damage_table([("paser@s1-2_4-carp-0.1-s0", rep)], [(em, fams)])
    cells = row(table, "prune@s1-2_4", "base@s1")
    assert cells[2:] == ["4", "-1.00", "+1.00"]
    assert "prune@s1-unstructured" not in table
    assert damage_table([("random@0.1-s0", {"params": {}})], [(em, fams)]) == ""


def test_pooled_table_averages_cells_with_a_narrower_interval():
    """Two worlds (labels w0, w1) with the same planted gain: the pooled row
    holds both cells, its point is the mean of the cells' differences and its
    interval lies inside the union of theirs; a null method stays n.s."""
    from stages.evaluate.study import pooled_table

    em = {}
    fams: list[str] = []
    for w, seed in (("w0", 2), ("w1", 3)):
        part, fams = sweep(np.random.default_rng(seed), gain=0.1)
        em.update(
            {k.replace("@", f"@{w}-") if "@" in k else k: v for k, v in part.items()}
        )
    pooled: dict = {}
    table = sweep_table(em, fams, "rec_random", n_boot=400, pooled=pooled)
    assert set(pooled) == {
        (stage, (), b) for stage in ("rec_good", "rec_same") for b in (0.1, 0.2)
    }
    cells = pooled[("rec_good", (), 0.1)]
    assert len(cells) == 2 and all(len(c[1]) == 400 for c in cells)
    own = [row(table, f"rec_good@{w}", "0.1")[4] for w in ("w0", "w1")]
    assert all(not c.endswith("n.s.") for c in own)
    text = pooled_table(pooled, "rec_random")
    good = row(text, "rec_good", "0.1")
    assert good[2] == "2" and good[4:] == ["2", "0"]
    point, lo, hi = map(
        float,
        re.match(r"([+-][\d.]+) \[([+-][\d.]+), ([+-][\d.]+)\]$", good[3]).groups(),
    )
    assert point == pytest.approx(np.mean([c[0] for c in cells]), abs=1e-4)
    assert min(c[2] for c in cells) < lo < point < hi < max(c[3] for c in cells)
    assert row(text, "rec_same", "0.2")[3] == "+0.0000 [+0.0000, +0.0000] n.s."
