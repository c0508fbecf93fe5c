"""Evaluation on any dataset: perplexity of a text dataset, generation on an
instruction or chat dataset, multiple choice and lm-evaluation-harness tasks,
for every model, with 95% intervals and paired differences between models on
the same items.

* ``text`` (text records): perplexity in the declared ``protocols``:
  ``paper`` is Wanda/SparseGPT's ``eval_ppl`` (documents joined by a blank
  line, tokenized once as the tokenizer does by default, ``len // seqlen``
  non-overlapping windows, the tail dropped, each window's mean shifted CE ×
  seqlen summed, ``exp(sum / (n·seqlen))``: metric ``ppl_paper``, window
  bootstrap interval); ``lm_eval`` is lm-eval's ``loglikelihood_rolling`` per
  document (bos as context, disjoint ``max_len`` windows): ``ppl`` (token),
  ``word_perplexity``, ``byte_perplexity`` and ``bits_per_byte`` as lm-eval
  defines them (document bootstrap).
* ``instructions`` (instruction or chat records): greedy answers to the prompts
  rendered with the stage's ``template``, cut at the ``until`` strings; exact
  match after the declared ``normalize`` steps, ROUGE-L F (``rouge-score``)
  and the answer perplexity (``ppl_answer``: NLL of the reference response
  tokens given the prompt, the labels recovery trains on); EM per value of
  ``group_by`` (Wilson intervals; ``em/mean`` unweighted over groups).
* ``choices_file`` (question / choices / answer items): ``mc/acc`` and
  ``mc/acc_norm`` from the options' log-likelihoods, as lm-eval scores
  ``multiple_choice`` tasks (Wilson intervals, paired differences).
* ``lm_eval_tasks`` (with ``lm_eval_include``, a folder of local task YAMLs):
  lm-eval's own numbers, ``lm_eval/<task>/<metric>``.

Models run on ``device`` in ``dtype``; batches are length-sorted. Per-model
results are cached in the stage's checkpoint folder (an interrupted stage
resumes). Writes ``table.md``, ``windows/``, ``documents/``, ``predictions/``,
``answers/``, ``choices/`` and ``lm_eval/`` per model.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pipelines.contract import DataPath, Input, RunContext, StageResult
from stages.evaluate import Params as KindParams
from stages.evaluate.scoring import NORMALIZERS

PROTOCOLS = ("paper", "lm_eval")
DOC_JOIN = "\n\n"  # Wanda/SparseGPT: "\n\n".join(test['text'])
DEFAULT_CONTEXT = 2048  # lm-eval HFLM's fallback when a config names none
MAX_ANSWER_TOKENS = 512  # cap of the default generation budget


class Params(KindParams):
    method: Literal["datasets"] = "datasets"
    text: str | None = Input(
        "dataset", "Upstream dataset of text records: perplexity.", default=None
    )
    instructions: str | None = Input(
        "dataset",
        "Upstream dataset of instruction or chat records: generation.",
        default=None,
    )
    choices_file: str | None = DataPath(
        "Multiple choice: a JSONL of question / choices / answer items (answer: "
        "the gold option's index or text; optional id, family); acc and acc_norm "
        "as lm-eval scores them (a DVC dependency).",
        default=None,
    )
    protocols: tuple[Literal["paper", "lm_eval"], ...] = Field(
        ("paper", "lm_eval"),
        description="Perplexity protocols on `text`: `paper` (Wanda/SparseGPT "
        "eval_ppl, ppl_paper) and/or `lm_eval` (rolling per document: ppl, "
        "word_perplexity, byte_perplexity, bits_per_byte).",
    )
    seqlen: int | None = Field(
        None,
        ge=2,
        description="paper protocol window; default: the model's "
        "max_position_embeddings (as Wanda).",
    )
    max_len: int | None = Field(
        None,
        ge=8,
        description="lm_eval protocol and lm-eval tasks: the model's context; "
        f"default: max_position_embeddings, else {DEFAULT_CONTEXT}.",
    )
    max_samples: int | None = Field(
        None, ge=1, description="Score only the first N records of each dataset."
    )
    group_by: str = Field(
        "family",
        description="instructions: the record field EM is broken down by "
        "(records without it: group `all`).",
    )
    normalize: tuple[str, ...] = Field(
        ("strip", "whitespace"),
        description="Exact-match normalisation, in order, of prediction and "
        f"reference; steps: {', '.join(NORMALIZERS)}.",
    )
    until: tuple[str, ...] = Field(
        ("\n\n",),
        description="Stop strings: a generation is cut at the first (lm-eval's until).",
    )
    max_new_tokens: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="Generation budget; default: the longest reference answer + 1, "
        f"at most {MAX_ANSWER_TOKENS}.",
    )
    lm_eval_tasks: tuple[str, ...] = Field(
        (), description="lm-evaluation-harness task names (optional extra lm-eval)."
    )
    lm_eval_include: str | None = DataPath(
        "A local folder of lm-eval task YAML files and their local data (a DVC "
        "dependency; its content is part of the cache key).",
        default=None,
    )
    num_fewshot: int | None = Field(
        None, ge=0, description="lm-eval tasks: few-shot examples (task default)."
    )
    lm_eval_bootstrap: int = Field(
        1000,
        ge=0,
        le=100_000,
        description="lm-eval tasks: bootstrap resamples of lm-eval's standard "
        "errors (the table's 95% intervals are value ∓ 1.96 × stderr; 0: none).",
    )
    compare: Literal["all", "first"] = Field(
        "all",
        description="Paired differences: every pair of models, or each against "
        "the first listed.",
    )

    @field_validator("normalize")
    @classmethod
    def _normalize(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [s for s in v if s not in NORMALIZERS]
        if bad:
            raise ValueError(
                f"normalize: unknown step(s) {bad}; the steps are {list(NORMALIZERS)}"
            )
        return v

    @field_validator("protocols", mode="before")
    @classmethod
    def _protocols(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _something(self) -> Params:
        if not (
            self.text or self.instructions or self.choices_file or self.lm_eval_tasks
        ):
            raise ValueError(
                "give at least one of text (a text dataset), instructions (an "
                "instruction or chat dataset), choices_file or lm_eval_tasks"
            )
        if self.lm_eval_include and not self.lm_eval_tasks:
            raise ValueError(
                "lm_eval_include: name the tasks to run from it in lm_eval_tasks"
            )
        if self.text and not self.protocols:
            raise ValueError("protocols: list paper and/or lm_eval")
        return self


def model_files(params: Params, name: str) -> list[str]:
    """Per-model files this method writes into the output folder."""
    out = []
    if params.text and "paper" in params.protocols:
        out.append(f"windows/{name}.jsonl")
    if params.text and "lm_eval" in params.protocols:
        out.append(f"documents/{name}.jsonl")
    if params.instructions:
        out += [f"predictions/{name}.jsonl", f"answers/{name}.jsonl"]
    if params.choices_file:
        out.append(f"choices/{name}.jsonl")
    if params.lm_eval_tasks:
        out.append(f"lm_eval/{name}.json")
    return out


def context_length(model: Any) -> int:
    """The model's context as lm-eval's HFLM reads it."""
    cfg = model.config
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        v = getattr(cfg, attr, None)
        if isinstance(v, int) and v > 0:
            return v
    return DEFAULT_CONTEXT


def _texts(records: list[dict[str, Any]], where: str) -> list[str]:
    docs = []
    for n, r in enumerate(records, 1):
        t = r.get("text")
        if not isinstance(t, str):
            raise ValueError(
                f"{where}: record {n} ({r.get('id', '?')!r}) has no text field; "
                "perplexity reads text records (a dataset with shape: text)"
            )
        if t.strip():
            docs.append(t)
    if not docs:
        raise ValueError(f"{where}: no non-empty text record to score")
    return docs


def paper_nll(
    model: Any, ids: list[int], seqlen: int, batch_size: int, progress: Any = None
) -> list[float]:
    """Per window of ``paper_windows``: its mean shifted cross-entropy × seqlen
    (Wanda/SparseGPT ``eval_ppl``'s ``neg_log_likelihood``)."""
    import torch
    import torch.nn.functional as F

    from stages.common.device import model_device
    from stages.evaluate.scoring import paper_windows

    windows = paper_windows(ids, seqlen)
    dev = model_device(model)
    starts = range(0, len(windows), batch_size)
    if progress is not None:
        starts = progress(starts, "perplexity (paper)", total=len(starts))
    out: list[float] = []
    model.eval()
    for s in starts:
        x = torch.tensor(windows[s : s + batch_size], dtype=torch.long, device=dev)
        with torch.no_grad():
            logits = model(input_ids=x).logits[:, :-1].float()  # (B, T-1, V)
        ce = F.cross_entropy(logits.transpose(1, 2), x[:, 1:], reduction="none")
        out += (ce.double().mean(-1) * seqlen).cpu().tolist()
    return out


def score_text(
    model: Any,
    tok: Any,
    docs: list[str],
    params: Params,
    ctx: RunContext,
    out_dir: Path | None,
    name: str,
) -> dict[str, float]:
    """Perplexity of ``docs`` in each declared protocol (files for intervals)."""
    from stages.common.io import write_jsonl
    from stages.evaluate.perplexity import rolling_nll
    from stages.evaluate.scoring import (
        bits_per_byte,
        count_bytes,
        count_words,
        perplexity,
    )

    res: dict[str, float] = {}
    bs = params.batch_size
    if "paper" in params.protocols:
        seqlen = params.seqlen or context_length(model)
        ids = tok(DOC_JOIN.join(docs))["input_ids"]  # tokenizer defaults, once
        if len(ids) < seqlen:
            raise ValueError(
                f"text: {len(ids)} tokens, fewer than one paper-protocol window "
                f"(seqlen {seqlen}); lower seqlen or give a larger text dataset"
            )
        nll = paper_nll(model, ids, seqlen, bs, ctx.progress)
        rows = [{"id": i, "nll": v, "tokens": seqlen} for i, v in enumerate(nll)]
        res["ppl_paper"] = perplexity(sum(nll), len(nll) * seqlen)
        res["paper_windows"] = float(len(nll))
        res["paper_seqlen"] = float(seqlen)
        if out_dir is not None:
            (out_dir / "windows").mkdir(exist_ok=True)
            write_jsonl(rows, out_dir / "windows" / f"{name}.jsonl")
    if "lm_eval" in params.protocols:
        toks = [tok(d, add_special_tokens=False)["input_ids"] for d in docs]
        prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        max_len = params.max_len or context_length(model)
        per_doc = rolling_nll(model, toks, prefix, pad, max_len, bs, ctx.progress)
        rows = [
            {"id": i, "nll": v, "tokens": n, "words": count_words(d)}
            | {"bytes": count_bytes(d)}
            for i, (d, (v, n)) in enumerate(zip(docs, per_doc, strict=True))
        ]
        total = sum(r["nll"] for r in rows)
        n_bytes = sum(r["bytes"] for r in rows)
        res["ppl"] = perplexity(total, sum(r["tokens"] for r in rows))
        res["word_perplexity"] = perplexity(total, sum(r["words"] for r in rows))
        res["byte_perplexity"] = perplexity(total, n_bytes)
        res["bits_per_byte"] = bits_per_byte(total, n_bytes)
        if out_dir is not None:
            (out_dir / "documents").mkdir(exist_ok=True)
            write_jsonl(rows, out_dir / "documents" / f"{name}.jsonl")
    return res


def score_instructions(
    model: Any,
    tok: Any,
    records: list[dict[str, Any]],
    params: Params,
    ctx: RunContext,
    out_dir: Path | None,
    name: str,
) -> dict[str, float]:
    """Greedy answers: EM per group, ROUGE-L and answer perplexity."""
    from stages.common.io import write_jsonl
    from stages.common.templates import get_template
    from stages.evaluate.exact_match import answer_budget
    from stages.evaluate.generation import greedy_generate
    from stages.evaluate.mia import rouge_l
    from stages.evaluate.perplexity import answer_nll
    from stages.evaluate.scoring import normalize, perplexity, truncate_at

    tmpl = get_template(params.template)
    refs = [tmpl.response_text(r).strip() for r in records]
    budget = params.max_new_tokens or min(
        answer_budget(tok, records, params.template), MAX_ANSWER_TOKENS
    )
    preds = greedy_generate(
        model,
        tok,
        records,
        budget,
        params.batch_size,
        ctx.progress,
        template=params.template,
        by_length=True,
    )
    preds = [truncate_at(p, params.until).strip() for p in preds]
    em = [
        float(normalize(p, params.normalize) == normalize(r, params.normalize))
        for p, r in zip(preds, refs, strict=True)
    ]
    rl = [rouge_l(p, r) for p, r in zip(preds, refs, strict=True)]
    groups = [str(r.get(params.group_by, "all")) for r in records]
    max_len = params.max_len or context_length(model)
    nlls = answer_nll(
        model, tok, records, max_len, params.batch_size, ctx.progress, params.template
    )
    if out_dir is not None:
        for d in ("predictions", "answers"):
            (out_dir / d).mkdir(exist_ok=True)
        rows = [
            {"id": str(r.get("id", i)), "family": g, "output": ref}
            | {"prediction": p, "em": e, "rougeL": round(x, 9)}
            for i, (r, g, ref, p, e, x) in enumerate(
                zip(records, groups, refs, preds, em, rl, strict=True)
            )
        ]
        write_jsonl(rows, out_dir / "predictions" / f"{name}.jsonl")
        rows = [
            {"id": str(r.get("id", i)), "family": g, "nll": round(v, 9), "tokens": n}
            for i, (r, g, (v, n)) in enumerate(zip(records, groups, nlls, strict=True))
        ]
        write_jsonl(rows, out_dir / "answers" / f"{name}.jsonl")
    res: dict[str, float] = {}
    by_group: dict[str, list[float]] = {}
    for g, e in zip(groups, em, strict=True):
        by_group.setdefault(g, []).append(e)
    for g, hits in sorted(by_group.items()):
        res[f"em/{g}"] = sum(hits) / len(hits)
    res["em/mean"] = sum(res[f"em/{g}"] for g in by_group) / len(by_group)
    res["rougeL"] = sum(rl) / len(rl)
    res["ppl_answer"] = perplexity(sum(v for v, _ in nlls), sum(n for _, n in nlls))
    return res


def score_choices(
    model: Any,
    tok: Any,
    items: list[dict[str, Any]],
    params: Params,
    ctx: RunContext,
    out_dir: Path | None,
    name: str,
) -> dict[str, float]:
    """``mc/acc`` and ``mc/acc_norm`` (lm-eval's multiple_choice scoring)."""
    from stages.evaluate.multiple_choice import choice_results, score_items

    max_len = params.max_len or context_length(model)
    rows = score_items(
        model, tok, items, max_len, params.batch_size, ctx.progress, by_length=True
    )
    return choice_results(rows, out_dir, name)


def score_tasks(
    model: Any,
    tok: Any,
    params: Params,
    ctx: RunContext,
    out_dir: Path | None,
    name: str,
) -> dict[str, float]:
    """lm-eval's tasks on the loaded model and tokenizer."""
    from stages.evaluate.lm_eval import flat_results, run_tasks, write_results

    include = [Path(params.lm_eval_include)] if params.lm_eval_include else []
    res = run_tasks(
        model,
        tok,
        list(params.lm_eval_tasks),
        include,
        batch_size=params.batch_size,
        max_length=params.max_len or context_length(model),
        limit=params.max_samples,
        seed=ctx.seed,
        num_fewshot=params.num_fewshot,
        bootstrap_iters=params.lm_eval_bootstrap,
    )
    if res is None:
        return {}
    write_results(res, out_dir, name)
    return flat_results(res)


def result_key(params: Params, model_fp: str, data_fps: list[str], device: str) -> str:
    """Key of a cached per-model result: params, the inputs' fingerprints, the
    device it ran on, this method's code and the lm-eval include folder's
    content."""
    from pipelines.code import code_files, code_version

    root = Path(__file__).resolve().parents[2]
    mods = [
        __name__,
        "stages.evaluate.perplexity",
        "stages.evaluate.generation",
        "stages.evaluate.multiple_choice",
    ]
    code = code_version(code_files(mods, root), root)
    blob = params.model_dump_json(exclude={"models", "compare"})
    blob += f"|{model_fp}|{'|'.join(data_fps)}|{device}|{code}"
    if params.choices_file:
        blob += "|" + hashlib.sha256(Path(params.choices_file).read_bytes()).hexdigest()
    if params.lm_eval_include:
        folder = Path(params.lm_eval_include)
        for f in sorted(p for p in folder.rglob("*") if p.is_file()):
            blob += f"|{f.relative_to(folder)}|"
            blob += hashlib.sha256(f.read_bytes()).hexdigest()
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def score_model(
    params: Params,
    model_dir: Path,
    data: dict[str, list],
    device: str,
    out_dir: Path | None,
    ctx: RunContext,
    cache: Path | None = None,
) -> dict[str, float]:
    """Every declared evaluation of one model; from / into ``cache``."""
    from stages.common.device import load_on
    from stages.common.io import load_tokenizer
    from stages.evaluate.cache import load_cached, save_cached

    files = model_files(params, model_dir.name)
    cached = load_cached(cache, files, out_dir)
    if cached is not None:
        return cached
    model = load_on(model_dir, device, params.dtype)
    tok = load_tokenizer(model_dir)
    name = model_dir.name
    res: dict[str, float] = {}
    if "text" in data:
        res |= score_text(model, tok, data["text"], params, ctx, out_dir, name)
    if "instructions" in data:
        recs = data["instructions"]
        res |= score_instructions(model, tok, recs, params, ctx, out_dir, name)
    if "choices" in data:
        res |= score_choices(model, tok, data["choices"], params, ctx, out_dir, name)
    if params.lm_eval_tasks:
        res |= score_tasks(model, tok, params, ctx, out_dir, name)
    del model
    save_cached(cache, files, out_dir, res)
    return res


def load_inputs(params: Params, inputs: dict[str, Any]) -> dict[str, list]:
    """The text documents and the instruction records the stage scores."""
    from stages.common.io import read_dataset
    from stages.common.templates import record_shape

    data: dict[str, list] = {}
    if params.text:
        recs = read_dataset(Path(inputs["text"]))[: params.max_samples]
        data["text"] = _texts(recs, f"text ({params.text})")
    if params.instructions:
        recs = read_dataset(Path(inputs["instructions"]))[: params.max_samples]
        if not recs:
            raise ValueError(f"instructions ({params.instructions}): no records")
        for n, r in enumerate(recs, 1):
            if record_shape(r) == "text":
                raise ValueError(
                    f"instructions ({params.instructions}): record {n} is a text "
                    "record; generation needs instruction or chat records (give "
                    "a text dataset as text: for perplexity)"
                )
        data["instructions"] = recs
    if params.choices_file:
        from stages.evaluate.multiple_choice import file_items

        items = file_items(Path(params.choices_file))[: params.max_samples]
        if not items:
            raise ValueError(f"choices_file: {params.choices_file} holds no item")
        data["choices"] = items
    return data


def _cache_file(
    params: Params, ctx: RunContext, i: int, model_dir: Path, device: str
) -> Path | None:
    if ctx.checkpoint_dir is None:
        return None
    fps = ctx.input_fingerprints
    model_fp = (fps.get("models") or [None] * (i + 1))[i]
    if model_fp is None:
        return None
    data_fps = [str(fps.get(f)) for f in ("text", "instructions") if getattr(params, f)]
    key = result_key(params, str(model_fp), data_fps, device)
    return Path(ctx.checkpoint_dir) / f"{model_dir.name}.{key}.json"


def evaluate(
    params: Params, inputs: dict[str, Any], out_dir: Path, ctx: RunContext
) -> StageResult:
    """Score every model, add intervals and paired differences, write the table."""
    from stages.common.device import require_device
    from stages.evaluate.compare import compare
    from stages.evaluate.report import markdown_table

    device = require_device(params.device, ctx.name.split("@")[0])
    out_dir.mkdir(parents=True, exist_ok=True)
    dirs = [Path(p) for p in inputs["models"]]
    names = [d.name for d in dirs]
    if len(set(names)) != len(names):
        raise ValueError(f"models: folder names must be unique, got {names}")
    data = load_inputs(params, inputs)
    results = {}
    for i, d in enumerate(ctx.progress(dirs, "models", total=len(dirs))):
        cache = _cache_file(params, ctx, i, d, device)
        results[d.name] = score_model(params, d, data, device, out_dir, ctx, cache)
    diffs = compare(
        out_dir, names, results, ctx.seed, against_first=params.compare == "first"
    )
    table = markdown_table(results, names, diffs)
    (out_dir / "table.md").write_text(table)
    metrics = {
        f"{m}/{k}": float(v)
        for m, res in [*results.items(), *diffs.items()]
        for k, v in res.items()
    }
    return StageResult(
        metrics=metrics,
        summary=table,
        extra_manifest={"device": device, "dtype": params.dtype},
    )
