"""paser, perplexity and ifd end to end on a tiny Llama pair (original and
magnitude-pruned), with the bundled sentence encoder; caching and determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from pipelines.contract import RunContext
from stages.common.io import read_dataset, write_dataset
from stages.select import ifd as ifd_m
from stages.select import paser as paser_m
from stages.select import perplexity as ppl_m
from stages.select import run
from stages.select.ifd import ifd_order

torch.set_num_threads(1)

FAMILIES = {
    "add": ("Add the numbers", lambda i: f"{i} {i + 3}", lambda i: str(2 * i + 3)),
    "reverse": ("Reverse the word", lambda i: "abcdefg"[i % 5 :], lambda i: "gfedcba"),
    "capital": ("Name the capital city of country", lambda i: f"c{i}", lambda i: "zed"),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A 60-record pool plus an original and a 60%-magnitude-pruned model."""
    from tests.tiny import char_tokenizer, magnitude_masks, tiny_llama, write_checkpoint

    root = tmp_path_factory.mktemp("selworld")
    recs = []
    for fam, (instr, inp, out) in FAMILIES.items():
        for i in range(20):
            rid = f"{fam}-{i:02d}"
            recs.append(
                {
                    "id": rid,
                    "family": fam,
                    "instruction": instr,
                    "input": inp(i),
                    "output": out(i),
                    "corrupted": i == 7,
                }
            )
    write_dataset(recs, root / "world", source="test")
    tok = char_tokenizer()
    model = tiny_llama(tok, hidden=32)
    write_checkpoint(model, tok, root / "base")
    magnitude_masks(model, 0.6)  # zeroes in place; no masks file, as a dense model
    write_checkpoint(model, tok, root / "prune")
    return root, recs


def _inputs(root, ref="base"):
    return {"pool": root / "world", "model": root / "prune", "reference": root / ref}


def test_paser_end_to_end_cached_and_deterministic(world, tmp_path):
    root, recs = world
    p = paser_m.Params(
        pool="world",
        model="prune",
        reference="base",
        budget=0.25,
        seed=0,
        k_max=6,
        n_neighbors=5,
    )
    ck = tmp_path / "ck"
    res = run(p, _inputs(root), tmp_path / "a", RunContext(checkpoint_dir=ck))
    got = read_dataset(tmp_path / "a")
    assert 0 < len(got) <= 15 and res.datasets == ["data.jsonl"]
    by_id = {r["id"]: r for r in recs}
    assert all(r == by_id[r["id"]] for r in got)
    rep = json.loads((tmp_path / "a" / "selection.json").read_text())
    k = rep["k"]
    assert len(rep["cluster_sizes"]) == len(rep["cds"]) == len(rep["allocated"]) == k
    assert sum(rep["cluster_sizes"]) == 60 and sum(rep["allocated"]) == 15
    assert sum(rep["taken"]) == len(got)
    assert all(t <= s for t, s in zip(rep["taken"], rep["cluster_sizes"], strict=True))
    assert all(0 <= c <= np.log(2) for c in rep["cds"]) and max(rep["cds"]) > 0
    assert rep["computed"] == {"embeddings": 60, "jsd": 60}
    assert set(rep["seconds"]) >= {"embed", "cluster", "jsd", "allocate_and_fill"}
    for f in res.plots:
        assert (tmp_path / "a" / f).stat().st_size > 0
    # a re-run (other params, same checkpoint dir) recomputes no score
    p2 = p.model_copy(update={"allocation": "uniform"})
    run(p2, _inputs(root), tmp_path / "b", RunContext(checkpoint_dir=ck))
    rep2 = json.loads((tmp_path / "b" / "selection.json").read_text())
    assert rep2["computed"] == {"embeddings": 0, "jsd": 0}
    assert rep2["cds"] == pytest.approx(rep["cds"], abs=1e-7)
    # same params, fresh cache: the same selection
    fresh = RunContext(checkpoint_dir=tmp_path / "new" / "ck")
    run(p, _inputs(root), tmp_path / "c", fresh)
    assert [r["id"] for r in read_dataset(tmp_path / "c")] == [r["id"] for r in got]


def test_paser_without_clustering_and_filter_is_top_ies(world, tmp_path):
    from stages.select.kernels import ies

    root, _ = world
    p = paser_m.Params(
        pool="world",
        model="prune",
        reference="base",
        budget=10,
        clustering=False,
        concept_filter=False,
    )
    run(p, _inputs(root), tmp_path / "o", RunContext(checkpoint_dir=tmp_path / "ck"))
    rep = json.loads((tmp_path / "o" / "selection.json").read_text())
    assert rep["k"] == 1 and rep["filter_rejected_total"] == 0
    # recompute the IES ranking from the cached JSD and the token counts
    from stages.common.io import load_tokenizer
    from stages.select.paser import jsd_scores

    pool = read_dataset(root / "world")
    # the stage keeps its caches beside its checkpoint folder (select-scores/)
    ck = tmp_path / "select-scores"
    scores, ntok, new = jsd_scores(p, pool, _inputs(root), ck, RunContext(), "cpu")
    assert new == 0 and load_tokenizer(root / "prune") is not None
    s = ies(scores, ntok)
    top = {pool[i]["id"] for i in np.lexsort((np.arange(60), -s))[:10]}
    assert {r["id"] for r in read_dataset(tmp_path / "o")} == top


def test_jsd_zero_for_identical_models(world, tmp_path):
    from stages.select.paser import jsd_scores

    root, _ = world
    p = paser_m.Params(pool="world", model="prune", reference="prune", budget=5)
    pool = read_dataset(root / "world")
    inp = _inputs(root, ref="prune")
    scores, ntok, _ = jsd_scores(p, pool, inp, tmp_path, RunContext(), "cpu")
    assert np.abs(scores).max() < 1e-6 and ntok.min() > 5


def test_models_required(world, tmp_path):
    root, _ = world
    with pytest.raises(ValidationError, match="reference\n  Field required"):
        paser_m.Params(pool="world", model="prune", budget=5)
    with pytest.raises(ValidationError, match="model\n  Field required"):
        ppl_m.Params(pool="world", budget=5)
    assert set(paser_m.Params.input_fields()) == {"pool", "model", "reference"}
    assert set(ppl_m.Params.input_fields()) == {"pool", "model"}


def test_perplexity_takes_highest_loss(world, tmp_path):
    root, _ = world
    p = ppl_m.Params(pool="world", model="prune", budget=12)
    run(
        p,
        {"pool": root / "world", "model": root / "prune"},
        tmp_path / "p",
        RunContext(checkpoint_dir=tmp_path / "ck"),
    )
    from stages.select.perplexity import nll_scores

    pool = read_dataset(root / "world")
    ck = tmp_path / "select-scores"  # shared by the checkout's select nodes
    nll, new = nll_scores(p, root / "prune", pool, ck, RunContext())
    assert new == 0
    chosen = {r["id"] for r in read_dataset(tmp_path / "p")}
    picked = [nll[i] for i, r in enumerate(pool) if r["id"] in chosen]
    rest = [nll[i] for i, r in enumerate(pool) if r["id"] not in chosen]
    assert len(chosen) == 12 and min(picked) >= max(rest)


def test_ifd_runs_and_orders(world, tmp_path):
    root, _ = world
    p = ifd_m.Params(pool="world", model="prune", budget=0.2)
    res = run(
        p,
        {"pool": root / "world", "model": root / "prune"},
        tmp_path / "i",
        RunContext(),
    )
    assert res.metrics["selected"] == 12
    order, ifd = ifd_order([2.0, 1.0, 3.0, 0.5], [1.0, 2.0, 4.0, 1.0], True)
    assert ifd.tolist() == [2.0, 0.5, 0.75, 0.5]
    assert order.tolist() == [2, 1, 3, 0]  # IFD >= 1 last; ties by pool order
    assert ifd_order([2.0, 1.0], [1.0, 2.0], False)[0].tolist() == [0, 1]


def test_response_logits_skip_prompt_positions_same_scores(world):
    """The LM head only from the first response position on gives the same
    response JSD and NLL as full logits, over fewer positions."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    from stages.common.text import collate
    from stages.select.kernels import response_jsd, response_nll
    from stages.select.paser import jsd_batch_fn
    from stages.select.scoring import encode_records, response_logits

    root, recs = world
    tok = AutoTokenizer.from_pretrained(str(root / "base"))
    ref = LlamaForCausalLM.from_pretrained(str(root / "base")).eval()
    pruned = LlamaForCausalLM.from_pretrained(str(root / "prune")).eval()
    batch = collate(encode_records(tok, recs[::7], 64), tok.pad_token_id)
    kw = {k: batch[k] for k in ("input_ids", "attention_mask")}
    with torch.inference_mode():
        full_o, full_p = ref(**kw).logits, pruned(**kw).logits
        cut, labels = response_logits(ref, batch)
        assert cut.shape[1] == labels.shape[1] < batch["labels"].shape[1]
        want = response_jsd(full_o, full_p, batch["labels"])
        assert torch.allclose(jsd_batch_fn(ref, pruned)(batch), want, atol=1e-6)
        assert torch.allclose(
            response_nll(cut, labels), response_nll(full_o, batch["labels"]), atol=1e-5
        )


def test_paser_carp_mode_deterministic_with_report(world, tmp_path):
    """mode carp: one paired pass gives the loss increase and the noise flag;
    the same params on a fresh cache give the same selection."""
    root, recs = world
    p = paser_m.Params(
        pool="world",
        model="prune",
        reference="base",
        budget=0.25,
        mode="carp",
        k_max=6,
        n_neighbors=5,
    )
    ids = []
    for name in ("a", "b"):
        run(p, _inputs(root), tmp_path / name, RunContext())
        ids.append([r["id"] for r in read_dataset(tmp_path / name)])
    assert ids[0] == ids[1] and 0 < len(ids[0]) <= 15
    rep = json.loads((tmp_path / "a" / "selection.json").read_text())
    assert rep["computed"] == {"embeddings": 60, "jsd": 60}
    assert rep["degradation"] == "loss_increase" and rep["noise_filter"] == "drop"
    assert -1 <= rep["ari_vs_family"] <= 1 and "|C_k|" in rep["allocation_rule"]
    assert min(rep["cds"]) >= 0  # a clipped loss increase
    # per family: both damage scores from the one paired pass
    fd = rep["family_damage"]
    assert fd and all(set(v) == {"jsd", "loss_increase"} for v in fd.values())
    assert all(v["jsd"] >= 0 and v["loss_increase"] >= 0 for v in fd.values())
    flagged = rep["noise_flagged"]
    assert sum(rep["taken"]) == len(ids[0]) and flagged < 60
    # dropped records are never selected
    assert sum(rep["allocated"]) <= 60 - flagged


def test_generation_check_identical_models_no_drop(world, tmp_path):
    """Both sides the same model: the same greedy answers, so every cluster's
    EM drop is exactly 0; a second run generates nothing (cached)."""
    from stages.select.gencheck import generation_hits

    root, _ = world
    p = paser_m.Params(pool="world", model="prune", reference="prune", budget=5)
    pool = read_dataset(root / "world")
    idx = np.arange(0, 60, 4)
    inp = _inputs(root, ref="prune")
    hits, new = generation_hits(p, pool, idx, inp, tmp_path, RunContext(), "cpu")
    assert hits.shape == (15, 2) and new == 15
    assert np.array_equal(hits[:, 0], hits[:, 1])
    again, new2 = generation_hits(p, pool, idx, inp, tmp_path, RunContext(), "cpu")
    assert new2 == 0 and np.array_equal(again, hits)


def _fake_answers(monkeypatch):
    """Greedy answers without generation: the original model answers every
    record right, the pruned one (most weights zero) fails family ``add``."""
    from stages.evaluate import generation

    def fake(model, tok, recs, budget, batch_size=32, progress=None):
        w = model.model.layers[0].mlp.up_proj.weight
        pruned = bool((w == 0).float().mean() > 0.5)
        return [
            "wrong" if pruned and r["family"] == "add" else r["output"] for r in recs
        ]

    monkeypatch.setattr(generation, "greedy_generate", fake)


def test_generation_degradation_follows_the_em_drop(world, tmp_path, monkeypatch):
    _fake_answers(monkeypatch)
    root, _ = world
    p = paser_m.Params(
        pool="world",
        model="prune",
        reference="base",
        budget=0.25,
        mode="carp",
        degradation="generation",
        generation_check=4,
        noise_filter="none",
        k_max=6,
        n_neighbors=5,
    )
    run(p, _inputs(root), tmp_path / "g", RunContext(checkpoint_dir=tmp_path / "ck"))
    rep = json.loads((tmp_path / "g" / "selection.json").read_text())
    chk = rep["generation_check"]
    assert chk["em_original"] == 1.0 and chk["sampled"] <= 4 * rep["k"]
    fam = rep["family_damage"]
    assert fam["add"]["generation"] == 1.0
    assert fam["reverse"]["generation"] == fam["capital"]["generation"] == 0.0
    # a cluster's weight is its EM drop: clusters with no drop get no budget
    # when the damaged ones can hold it
    drop = np.asarray([d or 0.0 for d in chk["cluster_em_drop"]])
    sizes, taken = np.asarray(rep["cluster_sizes"]), np.asarray(rep["taken"])
    assert rep["cds"] == pytest.approx(drop.clip(0), abs=1e-9)
    if sizes[drop > 0].sum() >= 15:
        assert taken[drop <= 0].sum() == 0 and taken.sum() == 15


def test_generation_degradation_needs_the_check():
    with pytest.raises(ValidationError, match="generation_check > 0"):
        paser_m.Params(
            pool="w", model="p", reference="b", budget=5, degradation="generation"
        )


def test_family_groups_spend_the_budget_where_the_em_dropped(
    world, tmp_path, monkeypatch
):
    """groups: family + degradation: generation allocates over the records'
    families by their EM drop: only `add` fails, so the whole budget (15 of
    its 20 records, the corrupted one dropped by the noise filter or not)
    goes to `add`."""
    _fake_answers(monkeypatch)
    root, recs = world
    p = paser_m.Params(
        pool="world",
        model="prune",
        reference="base",
        budget=0.25,
        mode="carp",
        groups="family",
        degradation="generation",
        generation_check=6,
    )
    run(p, _inputs(root), tmp_path / "f", RunContext(checkpoint_dir=tmp_path / "ck"))
    rep = json.loads((tmp_path / "f" / "selection.json").read_text())
    assert rep["groups"] == "family" and rep["group_names"] == sorted(FAMILIES)
    assert rep["k"] == 3 and rep["ari_vs_family"] == 1.0
    assert rep["cluster_sizes"] == [20, 20, 20]
    assert rep["generation_check"]["cluster_em_drop"] == [1.0, 0.0, 0.0]
    assert rep["taken"] == [15, 0, 0]
    got = read_dataset(tmp_path / "f")
    assert len(got) == 15 and {r["family"] for r in got} == {"add"}


def test_family_groups_name_the_record_without_a_family(tmp_path):
    pool = [{"id": "a", "family": "x"}, {"id": "b"}]
    with pytest.raises(ValueError, match=r"record 1 \(id 'b'\) has none"):
        paser_m.family_labels(pool)
