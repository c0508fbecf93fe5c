"""lm-evaluation-harness as a backend: its tasks on a model artifact (optional
extra ``pip install carp[lm-eval]``; EleutherAI's ``lm-eval`` package).

The model and tokenizer carp loaded are wrapped in lm-eval's ``HFLM`` (on
the model's device, ``max_length`` = the stage's ``max_len``,
``add_bos_token=False``: bos is context, not scored) and run with
``simple_evaluate``.
``lm_eval_tasks`` names the tasks; ``lm_eval_include`` a local folder of task
YAML files (with local JSON/JSONL data nothing is downloaded; on a machine with
a hub the same suite runs standard tasks such as ``hellaswag``). Without
``lm_eval_tasks`` the suite writes one task itself, ``carp_world_ppl``: a
``loglikelihood_rolling`` task over the world's ``ppl.txt`` documents, so its
``word_perplexity`` / ``bits_per_byte`` are directly comparable with carp's
``perplexity`` suite. Every numeric result becomes ``lm_eval/<task>/<metric>``;
lm-eval's own JSON output goes to ``lm_eval/<model>.json``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from pipelines.contract import RunContext
from stages.common.device import model_device
from stages.common.io import write_jsonl

WORLD_TASK = "carp_world_ppl"
# a loglikelihood_rolling task on local JSONL ({"text": document} per line)
WORLD_TASK_YAML = """\
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
  cache_dir: {cache}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
metadata:
  version: 1.0
"""


def rolling_task_yaml(task: str, data: Path, cache: Path) -> str:
    """An lm-eval task YAML: ``loglikelihood_rolling`` over a local JSONL of
    ``{"text": document}`` rows (word / byte perplexity, bits per byte)."""
    return WORLD_TASK_YAML.format(
        task=task, data=json.dumps(str(data)), cache=json.dumps(str(cache))
    )


def model_files(name: str) -> list[str]:
    """Files :func:`score` writes for model ``name`` (relative to out_dir)."""
    return [f"lm_eval/{name}.json"]


def world_task(world_dir: Path, folder: Path) -> Path:
    """Write the ``carp_world_ppl`` task (YAML + JSONL of ppl.txt's documents)
    into ``folder``; returns the folder (an lm-eval ``include_path``)."""
    from stages.evaluate.perplexity import documents

    data = folder / "carp_world_ppl.jsonl"
    write_jsonl([{"text": d} for d in documents(world_dir)], data)
    yaml_text = rolling_task_yaml(WORLD_TASK, data, folder / "hf-datasets")
    (folder / f"{WORLD_TASK}.yaml").write_text(yaml_text)
    return folder


Z95 = 1.959963984540054  # the normal quantile of a 95% interval


def flat_results(results: dict[str, Any]) -> dict[str, float]:
    """``lm_eval/<task>/<metric>`` for every numeric result (lm-eval keys are
    ``<metric>,<filter>``; the ``none`` filter is dropped, others kept), and
    ``_lo`` / ``_hi`` = value ∓ 1.96 × lm-eval's standard error where it
    computed one (a normal 95% interval, as lm-eval's ± column)."""
    out: dict[str, float] = {}
    for task, res in results.get("results", {}).items():
        for key, value in res.items():
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            metric, _, filt = key.partition(",")
            if metric == "alias":
                continue
            stderr = metric.endswith("_stderr")
            metric = metric.removesuffix("_stderr")
            name = metric if filt in ("", "none") else f"{metric}_{filt}"
            if not stderr:
                out[f"lm_eval/{task}/{name}"] = float(value)
        for key, value in res.items():
            metric, _, filt = key.partition(",")
            if not metric.endswith("_stderr") or not isinstance(value, int | float):
                continue
            base = metric.removesuffix("_stderr")
            name = base if filt in ("", "none") else f"{base}_{filt}"
            point = out.get(f"lm_eval/{task}/{name}")
            if point is not None and value == value:  # not nan
                out[f"lm_eval/{task}/{name}_lo"] = point - Z95 * float(value)
                out[f"lm_eval/{task}/{name}_hi"] = point + Z95 * float(value)
    return out


def run_tasks(
    model: Any,
    tokenizer: Any,
    tasks: list[str],
    include: list[Path],
    *,
    batch_size: int,
    max_length: int,
    limit: int | float | None,
    seed: int,
    num_fewshot: int | None = None,
    bootstrap_iters: int = 0,
) -> dict[str, Any] | None:
    """lm-eval's ``simple_evaluate`` on carp's loaded model *and* tokenizer
    (``HFLM`` on the model's own device); None on ranks other than 0."""
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise ImportError(
            "lm-eval tasks need the lm-eval package; install the extra with "
            "`pip install -e .[lm-eval]` (keeps torch as it is)"
        ) from None
    lm = HFLM(
        pretrained=model,
        tokenizer=tokenizer,
        batch_size=batch_size,
        max_length=max_length,
        device=str(model_device(model)),
        # bos is the rolling windows' context (prefix_token_id), never a
        # scored token: lm-eval 0.4.13 otherwise keeps the tokenizer's own
        # add-bos default and scores bos after bos
        add_bos_token=False,
    )
    manager = TaskManager(include_path=[str(p) for p in include] or None)
    return simple_evaluate(
        model=lm,
        tasks=tasks,
        task_manager=manager,
        num_fewshot=num_fewshot,
        limit=limit,
        bootstrap_iters=bootstrap_iters,  # lm-eval's standard errors (0: none)
        log_samples=False,
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
    )


def write_results(res: dict[str, Any], out_dir: Path | None, name: str) -> None:
    """lm-eval's results, versions and n-shot as ``lm_eval/<name>.json``."""
    if out_dir is None:
        return
    (out_dir / "lm_eval").mkdir(exist_ok=True)
    keep = {k: res[k] for k in ("results", "versions", "n-shot") if k in res}
    text = json.dumps(keep, indent=2, sort_keys=True, default=str)
    (out_dir / "lm_eval" / f"{name}.json").write_text(text)


def score(
    model: Any,
    tokenizer: Any,
    world_dir: Path,
    params: Any,
    ctx: RunContext,
    out_dir: Path | None = None,
    name: str = "model",
) -> dict[str, float]:
    """Run the tasks with lm-eval; writes ``lm_eval/<name>.json`` when
    ``out_dir`` is set."""
    with tempfile.TemporaryDirectory(prefix="carp-lm-eval-") as tmp:
        include = [world_task(world_dir, Path(tmp))] if not params.lm_eval_tasks else []
        if params.lm_eval_include:
            include.append(Path(params.lm_eval_include))
        res = run_tasks(
            model,
            tokenizer,
            list(params.lm_eval_tasks) or [WORLD_TASK],
            include,
            batch_size=params.batch_size,
            max_length=params.max_len,
            limit=params.max_samples_per_family,
            seed=ctx.seed,
        )
    if res is None:  # only rank 0 returns results
        return {}
    write_results(res, out_dir, name)
    return flat_results(res)
