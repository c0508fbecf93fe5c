"""The real-use preset end to end: a local checkpoint (a tiny Llama with a chat
template, built here), an Alpaca JSONL, a ShareGPT JSONL, a Parquet file and a
text corpus, as `pipelines/presets/local-hf.yaml` declares them; run by
`dvc repro` and by `carp run`. A second `dvc repro` runs nothing; editing one
data file re-runs only the stages that read it and what follows."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import yaml

from tests.integration.project import dvc_status, make_project, sh

ROOT = Path(__file__).resolve().parents[2]
PRESET = ROOT / "pipelines" / "presets" / "local-hf.yaml"
pytestmark = pytest.mark.integration
CHAT = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)
# what shrinks the preset to seconds; everything else is the file as shipped
SMALL = {
    "prune": {"nsamples": 4, "seqlen": 32},
    "select": {"budget": 0.5},
    "recover": {"max_len": 96, "micro_batch": 4},
    "eval": {"seqlen": 32, "max_len": 64, "max_new_tokens": 8},
    "eval_chat": {"max_new_tokens": 8},
}
LOCAL_TASK = """\
task: local_ppl
dataset_path: json
dataset_kwargs:
  data_files:
    test: tasks/local_ppl.jsonl
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{text}}"
metric_list:
  - metric: word_perplexity
"""


def has_lm_eval() -> bool:
    import importlib.util

    return importlib.util.find_spec("lm_eval") is not None


def _words(rng: random.Random, n: int) -> str:
    vocab = [
        "model",
        "data",
        "prune",
        "sparse",
        "weight",
        "layer",
        "token",
        "recover",
        "select",
        "text",
    ]
    return " ".join(rng.choice(vocab) for _ in range(n))


def write_inputs(proj: Path) -> None:
    from tests.tiny import char_tokenizer, records, tiny_llama, write_checkpoint

    tok = char_tokenizer()
    tok.chat_template = CHAT
    write_checkpoint(
        tiny_llama(tok, max_positions=256), tok, proj / "models" / "local-llama"
    )
    data = proj / "data"
    data.mkdir()
    recs = records(40, seed=1)
    with open(data / "alpaca.jsonl", "w") as f:
        for r in recs[:30]:
            f.write(
                json.dumps({k: r[k] for k in ("instruction", "input", "output")}) + "\n"
            )
    import pandas as pd

    pd.DataFrame(
        [
            {k: r[k] for k in ("instruction", "input", "output", "family")}
            for r in recs[30:]
        ]
    ).to_parquet(data / "heldout.parquet")
    rng = random.Random(0)
    with open(data / "sharegpt.jsonl", "w") as f:
        for i in range(8):
            conv = [
                {"from": "human", "value": f"Say {_words(rng, 2)}"},
                {"from": "gpt", "value": _words(rng, 2)},
            ]
            f.write(json.dumps({"id": f"c{i}", "conversations": conv}) + "\n")
    paragraphs = [_words(rng, 12) for _ in range(10)]
    (data / "corpus.txt").write_text("\n\n".join(paragraphs) + "\n")
    tasks = proj / "tasks"
    tasks.mkdir()
    (tasks / "local_ppl.yaml").write_text(LOCAL_TASK)
    rows = [json.dumps({"text": p}) for p in paragraphs[8:]]
    (tasks / "local_ppl.jsonl").write_text("\n".join(rows) + "\n")


def small_preset() -> str:
    decl = yaml.safe_load(PRESET.read_text())
    for stage, over in SMALL.items():
        decl["stages"][stage].update(over)
    if not has_lm_eval():  # an optional extra: the rest of the stage still runs
        for key in ("lm_eval_tasks", "lm_eval_include"):
            del decl["stages"]["eval"][key]
    return yaml.safe_dump(decl, sort_keys=False)


def downstream(decl_file: Path, stage: str) -> set[str]:
    """``stage`` and every stage that reads it, directly or not."""
    from pipelines.spec import load, upstream_names

    decl = load(decl_file)
    out = {stage}
    for _ in decl.stages:
        out |= {n for n, d in decl.stages.items() if set(upstream_names(d)) & out}
    return out


def ran(out: str, stages) -> set[str]:
    return {s for s in stages if f"Running stage '{s}'" in out}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    proj = tmp_path_factory.mktemp("localhf")
    env = make_project(proj, small_preset())
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    write_inputs(proj)
    (proj / ".gitignore").write_text((proj / ".gitignore").read_text() + "/models/\n")
    sh(["git", "init", "-q"], proj, env)
    sh(["dvc", "init", "-q"], proj, env)
    sh(["carp", "validate", "params.yaml"], proj, env)
    sh(["carp", "compile", "params.yaml"], proj, env)
    sh(["git", "add", "-A"], proj, env)
    sh(["git", "commit", "-qm", "local-hf"], proj, env)
    return proj, env


def test_preset_runs_under_dvc_and_reruns_only_what_an_edit_touches(project):
    proj, env = project
    stages = list(yaml.safe_load((proj / "params.yaml").read_text())["stages"])
    out = sh(["dvc", "repro"], proj, env)
    assert ran(out, stages) == set(stages), out[-3000:]
    assert "Running stage" not in sh(["dvc", "repro"], proj, env)
    sh(["carp", "report", "params.yaml"], proj, env)
    check_evaluation(proj)

    chats = proj / "data" / "sharegpt.jsonl"
    lines = chats.read_text().splitlines()
    first = json.loads(lines[0])
    first["conversations"][1]["value"] = "edited answer"
    chats.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    assert set(dvc_status(proj, env)) == {"chats"}
    out = sh(["dvc", "repro"], proj, env)
    touched = downstream(proj / "params.yaml", "chats")
    assert ran(out, stages) == touched, out[-3000:]
    assert "base" not in touched and "prune" not in touched


@pytest.mark.slow  # runs every stage again (the DVC test above runs them all)
def test_preset_runs_under_carp_run(project):
    proj, env = project
    shutil.rmtree(proj / "artifacts")
    out = sh(["carp", "run", "params.yaml"], proj, env)
    stages = list(yaml.safe_load((proj / "params.yaml").read_text())["stages"])
    done = {s for s in stages if f"stage {s} done in" in out}
    assert done == set(stages), out[-3000:]
    man = json.loads((proj / "artifacts" / "recover" / "carp.json").read_text())
    assert man["fingerprint"]
    sh(["carp", "report", "params.yaml"], proj, env)
    check_evaluation(proj)


def check_evaluation(proj: Path) -> None:
    """One evaluate stage: base / pruned / recovered on the held-out text (both
    perplexity protocols), the held-out instructions and, with lm-eval
    installed, the local lm-eval task, with intervals, in the HTML report."""
    metrics = json.loads((proj / "artifacts" / "eval" / "metrics.json").read_text())
    for m in ("base", "prune", "recover"):
        for key in ("ppl_paper", "word_perplexity", "rougeL", "em/mean"):
            assert f"{m}/{key}_lo" in metrics and f"{m}/{key}_hi" in metrics
        if has_lm_eval():
            assert f"{m}/lm_eval/local_ppl/word_perplexity" in metrics
    assert "recover-vs-prune/ppl_paper" in metrics
    man = json.loads((proj / "artifacts" / "eval" / "carp.json").read_text())
    assert man["device"] == "cpu" and man["dtype"] == "auto"
    html = (proj / "reports" / "report.html").read_text()
    assert "perplexity (paper protocol)" in html and "ROUGE-L" in html
    # the report names the data every stage read
    assert "<h2>Data</h2>" in html or ">Data<" in html
    assert "heldout_text" in html and "sharegpt.jsonl" in html
