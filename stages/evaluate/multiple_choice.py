"""Multiple choice: acc and acc_norm from option log-likelihoods (lm-eval style).

Each item is a question, its options and the gold option. Every option is
scored as lm-eval's ``multiple_choice`` tasks score it: the continuation
``" " + option`` (``target_delimiter``) after the question, encoded like
``_encode_pair`` (the question's trailing whitespace moves to the continuation;
the pair is tokenized whole and split after the question's tokens), with bos in
front when the tokenizer has one, as every carp prompt has. ``acc``: the option
with the highest log-likelihood is the gold one; ``acc_norm``: the same after
dividing each log-likelihood by the option's length in characters (lm-eval's
``completion_len``; bytes for ASCII options).

Items come from ``choices_file`` (JSONL of ``question``, ``choices``,
``answer``: the gold option's index or text; optional ``id``, ``family``) or, by
default, from the world's held-out eval records: the prompt as question, the
reference answer among ``choices - 1`` other answers of the same family (drawn
with the stage seed). Under a ``template`` other than carp a world item keeps
its record: the context is the template's prompt (``prompt_ids``) and each
option is tokenized as the template writes a response (``response_text``),
the way training laid out the record. Per-item results go to
``choices/<model>.jsonl``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from pipelines.contract import RunContext
from stages.common.io import read_jsonl, write_jsonl

TARGET_DELIMITER = " "


def model_files(name: str) -> list[str]:
    """Files :func:`score` writes for model ``name`` (relative to out_dir)."""
    return [f"choices/{name}.jsonl"]


def choice_metrics(lls: list[float], choices: list[str], gold: int) -> dict[str, float]:
    """lm-eval's ``process_results`` for one item: ``acc`` (argmax of the
    log-likelihoods) and ``acc_norm`` (argmax of log-likelihood / characters);
    ties go to the first option, as ``np.argmax``."""
    norm = [ll / len(c) for ll, c in zip(lls, choices, strict=True)]
    return {
        "acc": float(max(range(len(lls)), key=lls.__getitem__) == gold),
        "acc_norm": float(max(range(len(norm)), key=norm.__getitem__) == gold),
    }


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list, list]:
    """(bos + context ids, continuation ids) as lm-eval's ``_encode_pair``."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]

    def enc(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    whole, ctx = enc(context + continuation), enc(context)
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return bos + ctx, whole[len(ctx) :]


def _item(rec: dict[str, Any], where: str, n: int) -> dict[str, Any]:
    """One validated item of a choices file (``where``: file:line)."""
    q, choices, ans = rec.get("question"), rec.get("choices"), rec.get("answer")
    if not isinstance(q, str) or not q:
        raise ValueError(f"{where}: 'question' must be a non-empty string")
    if (
        not isinstance(choices, list)
        or len(choices) < 2
        or not all(isinstance(c, str) and c for c in choices)
    ):
        raise ValueError(f"{where}: 'choices' must list at least 2 non-empty strings")
    if isinstance(ans, str) and ans in choices:
        ans = choices.index(ans)
    if isinstance(ans, bool) or not isinstance(ans, int) or not 0 <= ans < len(choices):
        raise ValueError(
            f"{where}: 'answer' must be an option's index (0..{len(choices) - 1}) "
            "or its text"
        )
    return {
        "id": str(rec.get("id", n)),
        "family": str(rec.get("family", "mc")),
        "question": q,
        "choices": choices,
        "answer": ans,
    }


def file_items(path: Path) -> list[dict[str, Any]]:
    """Items of a question/choices/answer JSONL, each checked."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"choices_file: {path} does not exist")
    return [_item(r, f"{path}:{n + 1}", n) for n, r in enumerate(read_jsonl(path))]


def world_items(
    sets: dict[str, list[dict[str, Any]]],
    n_choices: int,
    seed: int,
    template: str | None = None,
) -> list[dict[str, Any]]:
    """An item per eval record: its prompt, its answer among ``n_choices - 1``
    distinct other answers of its family; records whose family has no other
    answer are left out. A template other than carp keeps the record
    (``record``; ``question`` is then its instruction)."""
    from stages.common.templates import DEFAULT_TEMPLATE
    from stages.common.text import format_prompt

    carp = template in (None, DEFAULT_TEMPLATE)

    items = []
    for fam, recs in sets.items():
        answers = sorted({r["output"] for r in recs})
        for r in recs:
            others = [a for a in answers if a != r["output"]]
            if not others:
                continue
            rng = random.Random(f"{seed}:{fam}:{r['id']}")
            picked = rng.sample(others, min(n_choices - 1, len(others)))
            gold = rng.randrange(len(picked) + 1)
            picked.insert(gold, r["output"])
            item = {
                "id": str(r["id"]),
                "family": fam,
                "question": format_prompt(r) if carp else r["instruction"],
                "choices": picked,
                "answer": gold,
            }
            items.append(item if carp else {**item, "record": r})
    return items


def option_pair(
    tokenizer: Any, item: dict[str, Any], option: str, template: str | None
) -> tuple[list, list]:
    """(context ids, continuation ids) of one option: lm-eval's pair for a
    question, the template's prompt and response tokens for a world record."""
    if "record" not in item:
        return encode_pair(tokenizer, item["question"], TARGET_DELIMITER + option)
    from stages.common.templates import get_template

    tmpl, rec = get_template(template), item["record"]
    text = tmpl.response_text({**rec, "output": option})
    cont = tokenizer(text, add_special_tokens=False)["input_ids"]
    return tmpl.prompt_ids(tokenizer, rec), cont


def score(
    model: Any,
    tokenizer: Any,
    world_dir: Path,
    params: Any,
    ctx: RunContext,
    out_dir: Path | None = None,
    name: str = "model",
) -> dict[str, float]:
    """``mc/acc`` and ``mc/acc_norm`` over every item; writes
    ``choices/<name>.jsonl`` when ``out_dir`` is set."""
    from stages.evaluate.exact_match import eval_sets

    template = getattr(params, "template", None)
    if params.choices_file:
        items = file_items(Path(params.choices_file))
    else:
        sets = eval_sets(world_dir, params.max_samples_per_family)
        items = world_items(sets, params.mc_choices, ctx.seed, template)
    if not items:
        raise ValueError("multiple_choice: no items to score (empty choices file?)")
    rows = score_items(
        model,
        tokenizer,
        items,
        params.max_len,
        params.batch_size,
        ctx.progress,
        template,
    )
    return choice_results(rows, out_dir, name)


def choice_results(
    rows: list[dict[str, Any]], out_dir: Path | None, name: str
) -> dict[str, float]:
    """``mc/acc`` and ``mc/acc_norm`` over the items; ``choices/<name>.jsonl``
    (per item, for intervals and paired differences) when ``out_dir`` is set."""
    if out_dir is not None:
        (out_dir / "choices").mkdir(exist_ok=True)
        write_jsonl(rows, out_dir / "choices" / f"{name}.jsonl")
    return {f"mc/{k}": sum(r[k] for r in rows) / len(rows) for k in ("acc", "acc_norm")}


def score_items(
    model: Any,
    tokenizer: Any,
    items: list[dict[str, Any]],
    max_len: int,
    batch_size: int,
    progress: Any = None,
    template: str | None = None,
    by_length: bool = False,
) -> list[dict[str, Any]]:
    """Per item: ``acc``, ``acc_norm`` and the options' log-likelihoods."""
    from stages.evaluate.perplexity import windows_nll

    windows = []
    for it in items:
        for c in it["choices"]:
            ctx_ids, cont = option_pair(tokenizer, it, c, template)
            windows.append(_truncate(ctx_ids, cont, max_len))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    nll = windows_nll(
        model, windows, pad, batch_size, progress, "multiple choice", by_length
    )
    rows, start = [], 0
    for it in items:
        lls = [-v for v in nll[start : start + len(it["choices"])]]
        start += len(it["choices"])
        m = choice_metrics(lls, it["choices"], it["answer"])
        rows.append({"id": it["id"], "family": it["family"], **m, "lls": lls})
    return rows


def _truncate(context: list[int], cont: list[int], max_len: int) -> tuple:
    """Keep the last ``max_len + 1`` tokens of context + continuation (lm-eval's
    left truncation); the continuation itself is never cut."""
    keep = max(1, max_len + 1 - len(cont))
    return context[-keep:], cont
