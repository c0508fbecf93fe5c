"""Text-perplexity throughput of carp's evaluate `datasets` method against what
a user would run instead, on the same model, documents and batch size, in the
same process, interleaved round by round:

* lm-eval protocol (rolling windows per document): carp's ``score_text``
  against lm-evaluation-harness's HF backend (``HFLM`` + ``simple_evaluate`` on
  a local ``loglikelihood_rolling`` task of the same documents; each timed run
  includes lm-eval building its requests from the task, with the datasets
  cache warm after the untimed round 0, as a user's second run would);
* paper protocol (joined text, non-overlapping windows): carp against a bare
  HF loop (batched forward + cross-entropy, the Wanda loop batched);
* multiple choice (``choices_file`` items, 4 options): carp against lm-eval's
  ``multiple_choice`` task on the same items and against a bare batched loop
  of option log-likelihoods.

Reports tokens/s (items/s for multiple choice) of each and the ratio carp /
baseline per round, with the mean
ratio's 95% t-interval over the rounds. Target: >= 1.0x lm-eval, >= 0.95x the
bare loop. Needs the lm-eval extra for the first comparison (skipped without).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/evaluate_throughput.py
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
RESULTS = ROOT / "benchmarks" / "results"
WORDS = (  # noqa: SIM905
    "the model prunes sparse weights and recovers its layers on text while "
    "calibration data shapes every mask of the pruned network"
).split()

MC_TASK = """\
task: bench_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
  cache_dir: {cache}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
"""


def mc_items(n: int) -> list[dict]:
    rng = random.Random(1)
    items = []
    for i in range(n):
        q = " ".join(rng.choice(WORDS) for _ in range(rng.randint(12, 40)))
        opts: list[str] = []
        while len(opts) < 4:  # distinct options: a tie would be float noise
            o = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4)))
            if o not in opts:
                opts.append(o)
        items.append(
            {"id": str(i), "family": "mc", "question": q + ":", "choices": opts}
            | {"answer": i % 4}
        )
    return items


def bare_mc(model, tok, items, bs) -> list[int]:
    """Option log-likelihoods by hand: bos + question + " " + option, batched
    and right-padded; the argmax option per item."""
    import torch

    rows, spans = [], []
    for it in items:
        q = tok(it["question"], add_special_tokens=False)["input_ids"]
        for c in it["choices"]:
            whole = tok(it["question"] + " " + c, add_special_tokens=False)["input_ids"]
            rows.append([tok.bos_token_id, *whole])
            spans.append(len(whole) - len(q))
    lls = []
    for s in range(0, len(rows), bs):
        chunk = rows[s : s + bs]
        width = max(map(len, chunk))
        ids = torch.full((len(chunk), width), tok.pad_token_id or 0)
        att = torch.zeros_like(ids)
        for i, r in enumerate(chunk):
            ids[i, : len(r)], att[i, : len(r)] = torch.tensor(r), 1
        with torch.no_grad():
            logp = torch.log_softmax(model(ids, attention_mask=att).logits.float(), -1)
        for i, r in enumerate(chunk):
            n = spans[s + i]
            tgt = torch.tensor(r[len(r) - n :])
            pos = torch.arange(len(r) - n - 1, len(r) - 1)
            lls.append(float(logp[i, pos, tgt].sum()))
    return [max(range(4), key=lambda j, k=k: lls[4 * k + j]) for k in range(len(items))]


def t_interval(xs: list[float]) -> tuple[float, float, float]:
    from scipy import stats

    m = statistics.fmean(xs)
    if len(xs) < 2:
        return m, m, m
    h = stats.t.ppf(0.975, len(xs) - 1) * statistics.stdev(xs) / len(xs) ** 0.5
    return m, m - h, m + h


def build(work: Path, hidden: int, layers: int, docs: int, seqlen: int):
    import torch

    from stages.common.io import load_tokenizer
    from tests.tiny import bpe_tokenizer, tiny_llama, write_checkpoint

    rng = random.Random(0)
    texts = [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(150, 600)))
        for _ in range(docs)
    ]
    tok = bpe_tokenizer(texts, 1000)
    heads = max(2, hidden // 64)
    model = tiny_llama(
        tok,
        hidden=hidden,
        layers=layers,
        heads=heads,
        kv_heads=heads,
        max_positions=seqlen,
    )
    folder = write_checkpoint(model, tok, work / "model")
    torch.manual_seed(0)
    return model.eval(), load_tokenizer(folder), texts


def bare_paper(model, tok, texts, seqlen, bs) -> int:
    """Joined text, non-overlapping windows, batched forward + CE: the loop a
    user writes by hand (the Wanda loop with a batch)."""
    import torch
    import torch.nn.functional as F

    ids = tok("\n\n".join(texts), return_tensors="pt").input_ids[0]
    n = ids.numel() // seqlen
    windows = ids[: n * seqlen].view(n, seqlen)
    total = 0.0
    for s in range(0, n, bs):
        x = windows[s : s + bs]
        with torch.no_grad():
            logits = model(x).logits[:, :-1].float()
        total += float(
            F.cross_entropy(logits.transpose(1, 2), x[:, 1:], reduction="sum")
        )
    return n * seqlen


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--docs", type=int, default=48)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--mc-items", type=int, default=200)
    args = ap.parse_args()
    import torch

    from pipelines.contract import RunContext
    from stages.evaluate.datasets import Params, score_choices, score_text

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    RESULTS.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="evaluate_throughput-", dir=RESULTS))
    model, tok, texts = build(work, args.hidden, args.layers, args.docs, args.seqlen)
    common = {"models": ["m"], "text": "t", "batch_size": args.batch_size}
    p_roll = Params(**common, protocols=["lm_eval"], max_len=args.seqlen)
    p_paper = Params(**common, protocols=["paper"], seqlen=args.seqlen)
    items = mc_items(args.mc_items)
    mc_file = work / "mc.jsonl"
    mc_file.write_text("".join(json.dumps(it) + "\n" for it in items))
    p_mc = Params(
        models=["m"], choices_file=str(mc_file), batch_size=args.batch_size * 4
    )
    ctx = RunContext()
    n_roll = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)

    lm_eval_run = lm_eval_mc_run = None
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager, get_task_dict

        from stages.evaluate.lm_eval import rolling_task_yaml

        data = work / "docs.jsonl"
        data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        (work / "bench_rolling.yaml").write_text(
            rolling_task_yaml("bench_rolling", data, work / "hf")
        )
        lm = HFLM(
            pretrained=model,
            tokenizer=tok,
            batch_size=args.batch_size,
            max_length=args.seqlen,
            add_bos_token=False,
        )
        (work / "bench_mc.yaml").write_text(
            MC_TASK.format(
                data=json.dumps(str(mc_file)), cache=json.dumps(str(work / "hf"))
            )
        )
        manager = TaskManager(include_path=[str(work)])

        def lm_eval_run() -> float:
            tasks = get_task_dict(["bench_rolling"], manager)
            res = simple_evaluate(
                model=lm, tasks=list(tasks.values()), bootstrap_iters=0
            )
            return res["results"]["bench_rolling"]["word_perplexity,none"]

        lm_mc = HFLM(  # bos before each question, as carp and the bare loop
            pretrained=model,
            tokenizer=tok,
            batch_size=args.batch_size * 4,
            max_length=args.seqlen,
            add_bos_token=True,
        )

        def lm_eval_mc_run() -> float:
            tasks = get_task_dict(["bench_mc"], manager)
            res = simple_evaluate(
                model=lm_mc, tasks=list(tasks.values()), bootstrap_iters=0
            )
            return res["results"]["bench_mc"]["acc,none"]

    except ImportError:
        print("lm-eval not installed: its comparison is skipped")

    names = ["carp_roll", "lm_eval", "carp_paper", "bare", "carp_mc", "lm_eval_mc"]
    names.append("bare_mc")
    rows: dict[str, list[float]] = {k: [] for k in names}
    check = {}
    for r in range(args.rounds + 1):  # round 0 warms every path up, untimed
        order = list(names)
        if r % 2:
            order.reverse()
        for name in order:
            t0 = time.perf_counter()
            if name == "carp_roll":
                out = score_text(model, tok, texts, p_roll, ctx, None, "m")
                check["carp_word_ppl"], n = out["word_perplexity"], n_roll
            elif name == "lm_eval":
                if lm_eval_run is None:
                    continue
                check["lm_eval_word_ppl"], n = lm_eval_run(), n_roll
            elif name == "carp_mc":
                out = score_choices(model, tok, items, p_mc, ctx, None, "m")
                check["carp_mc_acc"], n = out["mc/acc"], len(items)
            elif name == "lm_eval_mc":
                if lm_eval_mc_run is None:
                    continue
                check["lm_eval_mc_acc"], n = lm_eval_mc_run(), len(items)
            elif name == "bare_mc":
                picks = bare_mc(model, tok, items, args.batch_size * 4)
                acc = sum(p == it["answer"] for p, it in zip(picks, items, strict=True))
                check["bare_mc_acc"], n = acc / len(items), len(items)
            elif name == "carp_paper":
                out = score_text(model, tok, texts, p_paper, ctx, None, "m")
                n = int(out["paper_windows"]) * args.seqlen
            else:
                n = bare_paper(model, tok, texts, args.seqlen, args.batch_size)
            dt = time.perf_counter() - t0
            if r:
                rows[name].append(n / dt)
    lines = [
        "# evaluate throughput (tokens/s; ratio = carp / baseline per round)",
        "",
        f"model: Llama hidden {args.hidden}, {args.layers} layers; {args.docs} "
        f"documents, {n_roll} tokens; seqlen/max_len {args.seqlen}; batch "
        f"{args.batch_size}; {args.rounds} interleaved rounds; torch threads "
        f"{torch.get_num_threads()}",
        "",
        "| comparison | carp tok/s | baseline tok/s | ratio (mean, 95% t-interval) "
        "| target |",
        "|---|---|---|---|---|",
    ]
    result = {"args": vars(args), "check": check}
    for label, ours, theirs, target in [
        ("rolling: carp vs lm-eval HFLM", "carp_roll", "lm_eval", 1.0),
        ("paper: carp vs bare HF loop", "carp_paper", "bare", 0.95),
        (
            "multiple choice: carp vs lm-eval HFLM (items/s)",
            "carp_mc",
            "lm_eval_mc",
            1.0,
        ),
        ("multiple choice: carp vs bare HF loop (items/s)", "carp_mc", "bare_mc", 0.95),
    ]:
        if not rows[theirs]:
            lines.append(f"| {label} | - | - | skipped | {target} |")
            continue
        ratios = [a / b for a, b in zip(rows[ours], rows[theirs], strict=True)]
        m, lo, hi = t_interval(ratios)
        lines.append(
            f"| {label} | {statistics.median(rows[ours]):.0f} | "
            f"{statistics.median(rows[theirs]):.0f} | {m:.3f} [{lo:.3f}, {hi:.3f}] "
            f"| >= {target} |"
        )
        result[ours + "_vs_" + theirs] = {"ratios": ratios, "mean": m, "ci": [lo, hi]}
    if "lm_eval_word_ppl" in check:
        rel = abs(check["carp_word_ppl"] / check["lm_eval_word_ppl"] - 1)
        lines += [
            "",
            f"same number: word perplexity carp {check['carp_word_ppl']:.6f}, "
            f"lm-eval {check['lm_eval_word_ppl']:.6f} (relative difference {rel:.1e})",
        ]
    if "carp_mc_acc" in check:
        lines.append(
            f"same number: MC acc carp {check['carp_mc_acc']:.4f}, lm-eval "
            f"{check.get('lm_eval_mc_acc', float('nan')):.4f}, bare loop "
            f"{check['bare_mc_acc']:.4f} ({len(items)} items; carp and the bare "
            "loop score each option after bos, lm-eval only when the tokenizer "
            "adds one, which this benchmark's BPE tokenizer does not)"
        )
    text = "\n".join(lines) + "\n"
    (RESULTS / "evaluate_throughput.md").write_text(text)
    (RESULTS / "evaluate_throughput.json").write_text(json.dumps(result, indent=2))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
