"""World evaluation: every model on a world's held-out sets with carp's suites
(per-family exact match, rolling and answer-only perplexity) with 95% intervals
and paired differences between models (``stages.evaluate.compare``), and for the
seed variants of a swept stage mean ± std across seeds with the t-interval of
the mean (``stages.evaluate.seeds``: ``seeds/<group>/...``); a markdown table, a
CSV and a chart.

Writes ``table.md``, ``results.csv``, ``em.png``, ``predictions/<model>.jsonl``
and ``answers/<model>.jsonl``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pipelines.contract import Input, RunContext, StageResult
from stages.evaluate import SUITES
from stages.evaluate import Params as KindParams


def sizes(params: Params, upstream: Any) -> dict[str, int]:
    """Items scored: each family's first ``max_samples_per_family`` eval
    records, over the world's families."""
    data = upstream.get("data", {})
    per, families = data.get("eval_per_family"), data.get("eval_families")
    if per is None or families is None:
        return {}
    cap = params.max_samples_per_family
    return {"scored": (min(per, cap) if cap else per) * families}


class Params(KindParams):
    method: Literal["world"] = "world"
    data: str = Input("world", "Upstream world stage: eval/<family>.jsonl, ppl.txt.")
    suites: tuple[str, ...] = Field(
        ("perplexity", "exact_match"), description="Suites to run, in order."
    )
    max_samples_per_family: int | None = Field(
        None, ge=1, description="Score only the first N eval records of each family."
    )
    max_len: int = Field(
        256, ge=8, le=131072, description="Perplexity window length in tokens."
    )
    max_new_tokens: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="Generation budget; default: longest reference answer + 1.",
    )

    paired_test: Literal["bootstrap", "mcnemar"] = Field(
        "bootstrap",
        description="What marks a paired difference n.s. in the table: its 95% "
        "paired-bootstrap interval holding 0, or (mcnemar) McNemar's mid-p >= "
        "0.05 for exact-match and accuracy rows; metrics.json has both.",
    )
    compare: Literal["all", "first"] = Field(
        "all",
        description="Paired differences computed: every pair of models (`all`), "
        "or each model against the first listed only (`first`: n-1 pairs instead "
        "of n(n-1)/2, for wide sweeps; `carp report` pairs a study's variants "
        "itself from the predictions either way).",
    )
    choices_file: str | None = Field(
        None,
        description="multiple_choice suite: a JSONL of question/choices/answer "
        "items (answer: the gold option's index or text); default: items built "
        "from the world's eval records.",
        json_schema_extra={"carp_path": "file"},  # checked by `carp validate`
    )
    mc_choices: int = Field(
        4,
        ge=2,
        le=26,
        description="multiple_choice suite without choices_file: options per "
        "item (the reference answer and others of its family).",
    )

    lm_eval_tasks: tuple[str, ...] = Field(
        (),
        description="lm_eval suite: lm-evaluation-harness task names; default: "
        "carp_world_ppl (rolling perplexity of the world's ppl.txt).",
    )
    lm_eval_include: str | None = Field(
        None,
        description="lm_eval suite: a local folder of lm-eval task YAML files "
        "(its content is part of the per-model cache key).",
        json_schema_extra={"carp_path": "dir"},  # checked by `carp validate`
    )

    oracle: str | None = Field(
        None,
        description="unlearning suite: the model among `models` that never saw the "
        "forget set (pretrain with exclude: [forget]); PrivLeak is relative to it.",
    )
    unlearning_samples: int | None = Field(
        None,
        ge=1,
        description="unlearning suite: a seeded sample of N records of each set "
        "(spread over its people).",
    )
    mia_k: float = Field(
        0.4, gt=0, le=1, description="unlearning suite: k of Min-K% / Min-K%++."
    )
    mia_tokens: Literal["response", "document"] = Field(
        "response",
        description="unlearning suite: tokens Min-K% / Min-K%++ and the NLL read: "
        "the response (what the unlearning losses train on) or the whole "
        "document (the prompt names the person).",
    )
    verbmem_prefix: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="unlearning suite: fraction of each forget document given as "
        "the VerbMem prefix.",
    )

    @model_validator(mode="after")
    def _oracle(self) -> Params:
        if self.oracle is not None and self.oracle not in self.models:
            raise ValueError(
                f"oracle: '{self.oracle}' is not among models {self.models}; add it"
            )
        return self

    @field_validator("suites", mode="before")
    @classmethod
    def _known_suites(cls, v: Any) -> Any:
        v = [v] if isinstance(v, str) else v
        if not isinstance(v, list | tuple) or not v:
            raise ValueError("suites: give a non-empty list such as [perplexity]")
        for s in v:
            if s not in SUITES:
                raise ValueError(f"suites: {SUITES.unknown(str(s))}")
        return tuple(dict.fromkeys(v))


def _tokenizer(model_dir: Path, world_dir: Path) -> Any:
    from stages.common.io import load_tokenizer

    has_own = any(
        (model_dir / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")
    )
    return load_tokenizer(model_dir if has_own else world_dir / "tokenizer")


def result_key(params: Params, model_fp: str, world_fp: str) -> str:
    """Key of a cached per-model result: params, both inputs' fingerprints,
    the code of the suites that produce it (a changed suite re-scores) and the
    content of a ``choices_file``."""
    from pipelines.code import code_files, code_version

    root = Path(__file__).resolve().parents[2]
    suites = [SUITES.target(s) for s in params.suites]
    code = code_version(code_files(suites, root), root)
    # paired_test only changes the table, not a model's scores
    blob = params.model_dump_json(exclude={"models", "paired_test"})
    blob += f"|{model_fp}|{world_fp}|{code}"
    for local in (params.choices_file, params.lm_eval_include):
        if local:  # local inputs by content, not only by name
            path = Path(local)
            files = sorted(path.rglob("*")) if path.is_dir() else [path]
            for f in (f for f in files if f.is_file()):
                blob += f"|{f.relative_to(path) if f != path else ''}|"
                blob += hashlib.sha256(f.read_bytes()).hexdigest()
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def score_model(
    params: Params,
    model_dir: Path,
    world_dir: Path,
    out_dir: Path | None,
    ctx: RunContext,
    cache: Path | None = None,
    device: str = "cpu",
) -> dict[str, float]:
    """All suites on one model on ``device``; read from / written to ``cache``
    when given (the cache keeps the suites' per-model files too, e.g.
    predictions)."""
    from stages.evaluate.cache import load_cached, save_cached

    files = _model_files(params, model_dir.name)
    cached = load_cached(cache, files, out_dir)
    if cached is not None:
        return cached
    from stages.common.device import load_on

    model = load_on(model_dir, device, params.dtype)
    tok = _tokenizer(model_dir, world_dir)
    res: dict[str, float] = {}
    for suite in params.suites:
        res.update(
            SUITES.load(suite).score(
                model, tok, world_dir, params, ctx, out_dir, model_dir.name
            )
        )
    save_cached(cache, files, out_dir, res)
    return res


def _model_files(params: Params, name: str) -> list[str]:
    """Per-model files the suites write into the output folder."""
    return [
        rel
        for suite in params.suites
        for rel in getattr(SUITES.load(suite), "model_files", lambda n: [])(name)
    ]


def _cache_file(
    params: Params, ctx: RunContext, i: int, model_dir: Path
) -> Path | None:
    """Where model ``i``'s result is cached (None without a checkpoint folder)."""
    if ctx.checkpoint_dir is None:
        return None
    fps = ctx.input_fingerprints
    model_fp = (fps.get("models") or [None] * (i + 1))[i]
    world_fp = fps.get("data")
    if model_fp is None or world_fp is None:
        return None
    key = result_key(params, str(model_fp), str(world_fp))
    return Path(ctx.checkpoint_dir) / f"{model_dir.name}.{key}.json"


def evaluate(
    params: Params, inputs: dict[str, Any], out_dir: Path, ctx: RunContext
) -> StageResult:
    """Score every model, add intervals and paired differences, then write the
    table, CSV and chart."""
    from stages.common.device import require_device
    from stages.evaluate.compare import compare
    from stages.evaluate.report import bar_chart, markdown_table, write_csv
    from stages.evaluate.seeds import seed_summary, seed_table

    device = require_device(params.device, ctx.name.split("@")[0])
    world = Path(inputs["data"])
    dirs = [Path(p) for p in inputs["models"]]
    names = [d.name for d in dirs]
    if len(set(names)) != len(names):
        raise ValueError(f"models: folder names must be unique, got {names}")
    results = {}
    for i, d in enumerate(ctx.progress(dirs, "models", total=len(dirs))):
        cache = _cache_file(params, ctx, i, d)
        results[d.name] = score_model(params, d, world, out_dir, ctx, cache, device)
    for suite in params.suites:
        relate = getattr(SUITES.load(suite), "compare", None)
        if relate is not None and params.oracle is not None:
            oracle = next((n for n in names if n == params.oracle), None)
            results = relate(results, oracle, out_dir, ctx.seed)
    diffs = compare(
        out_dir, names, results, ctx.seed, against_first=params.compare == "first"
    )
    table = markdown_table(results, names, diffs, params.paired_test)
    across = seed_summary(results, names)  # swept stages with `seeds:`
    if across:
        table += "\n" + seed_table(across)
    (out_dir / "table.md").write_text(table)
    plots = []
    if "exact_match" in params.suites:
        write_csv(results, names, out_dir / "results.csv")
        bar_chart(results, names, out_dir / "em.png")
        plots = ["results.csv", "em.png"]
    seeds = [(f"seeds/{g}", row) for g, row in across.items()]
    metrics = {
        f"{m}/{k}": float(v)
        for m, res in [*results.items(), *diffs.items(), *seeds]
        for k, v in res.items()
    }
    return StageResult(
        metrics=metrics,
        plots=plots,
        summary=table,
        extra_manifest={"device": device, "dtype": params.dtype},
    )
