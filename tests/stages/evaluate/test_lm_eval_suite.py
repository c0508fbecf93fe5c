"""lm_eval suite: lm-evaluation-harness on a tiny model with carp's local task
agrees with carp's own perplexity suite (slow: imports lm-eval); result keys."""

from __future__ import annotations

import os

import pytest

from pipelines.contract import RunContext
from stages.evaluate.lm_eval import flat_results


def test_flat_results_name_task_and_metric_and_turn_stderr_into_bounds():
    res = {
        "results": {
            "carp_world_ppl": {
                "alias": "carp_world_ppl",
                "word_perplexity,none": 12.5,
                "word_perplexity_stderr,none": "N/A",
                "bits_per_byte,none": 1.25,
            },
            "gsm": {
                "exact_match,strict-match": 0.5,
                "exact_match_stderr,strict-match": 0.1,
            },
        }
    }
    z = 1.959963984540054
    assert flat_results(res) == {
        "lm_eval/carp_world_ppl/word_perplexity": 12.5,  # "N/A": no bounds
        "lm_eval/carp_world_ppl/bits_per_byte": 1.25,
        "lm_eval/gsm/exact_match_strict-match": 0.5,
        "lm_eval/gsm/exact_match_strict-match_lo": 0.5 - z * 0.1,
        "lm_eval/gsm/exact_match_strict-match_hi": 0.5 + z * 0.1,
    }


@pytest.mark.slow
@pytest.mark.integration
def test_lm_eval_perplexity_equals_carps_suite_on_a_local_task(tmp_path):
    pytest.importorskip("lm_eval")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import json

    import torch

    from stages.evaluate import lm_eval as suite
    from stages.evaluate import perplexity
    from stages.evaluate.world import Params
    from tests.tiny import micro_world, tiny_llama, world_tokenizer

    torch.set_num_threads(1)
    world = micro_world(tmp_path / "world", ppl_size=9)
    tok = world_tokenizer(world)
    model = tiny_llama(tok, hidden=32, heads=2, kv_heads=1, max_positions=256)
    # short windows, so documents roll over several windows in both harnesses
    p = Params(models=["m"], data="w", suites=["lm_eval"], max_len=16, batch_size=4)
    ours = perplexity.score(model, tok, world, p, RunContext())
    theirs = suite.score(model, tok, world, p, RunContext(), tmp_path, "m")
    task = "lm_eval/carp_world_ppl"
    assert theirs[f"{task}/word_perplexity"] == pytest.approx(
        ours["word_perplexity"], rel=1e-5
    )
    assert theirs[f"{task}/bits_per_byte"] == pytest.approx(
        ours["bits_per_byte"], rel=1e-5
    )
    saved = json.loads((tmp_path / "lm_eval" / "m.json").read_text())
    assert "carp_world_ppl" in saved["results"]
