"""Reliability: hostile or broken declarations, run-time faults and
two pipelines in one checkout give a message and a non-zero exit, never a
traceback (unless ``--debug``), a hang, a silently accepted value or an
overwritten artifact."""

from __future__ import annotations

import contextlib
import copy
import json
import random
import socket
import threading
import time
from pathlib import Path

import pytest
import yaml

from pipelines.cli import main
from pipelines.graph import build
from pipelines.runtime import Layout, node_lock, run_node
from pipelines.spec import DeclarationError, load, validate

ROOT = Path(__file__).resolve().parents[2]

HEAD = (
    "pipeline: t\nstages:\n  w: {kind: world}\n  b: {kind: pretrain, data: w}\n"
    "  s: {kind: select, method: random, pool: w, budget: 0.2}\n"
)


def _bomb(levels: int = 9) -> str:
    """Billion laughs: ``levels`` lists of 10 aliases of the one before."""
    lines = ['    l0: &l0 ["x","x","x","x","x","x","x","x","x","x"]']
    for i in range(1, levels):
        refs = ",".join([f"*l{i - 1}"] * 10)
        lines.append(f"    l{i}: &l{i} [{refs}]")
    return "\n".join(lines)


# (declaration text, expected YAML path fragment, expected message fragment)
CATALOGUE = [
    ("pipeline: t\nstages:\n  a: {kind: [prune]}\n", "stages.a.kind", "unknown kind"),
    ("pipeline: t\nstages:\n  a: {kind: {x: 1}}\n", "stages.a.kind", "unknown kind"),
    (
        "pipeline: t\nstages:\n  w: {kind: world}\n  w: {kind: world, facts: 6}\n",
        "stages.w",
        "duplicate key 'w'",
    ),
    (
        "pipeline: t\nstages:\n  w: {kind: world, facts: 6, facts: 7}\n",
        "stages.w.facts",
        "duplicate key 'facts'",
    ),
    ("pipeline: t\npipeline: u\nstages: {}\n", "pipeline", "duplicate key"),
    (
        HEAD + "  r: {kind: recover, model: b, data: s, lr: .inf}\n",
        "stages.r.lr",
        "finite",
    ),
    (
        HEAD + "  r: {kind: recover, model: b, data: s, epochs: .inf}\n",
        "stages.r.epochs",
        "finite",
    ),
    (
        HEAD + "  r: {kind: recover, model: b, data: s, lr: .nan}\n",
        "stages.r.lr",
        "finite",
    ),
    (
        HEAD + "  r: {kind: recover, model: b, data: s, warmup: -.inf}\n",
        "stages.r.warmup",
        "finite",
    ),
    (
        HEAD + "  r: {kind: recover, model: b, data: s, steps: 1000000000000}\n",
        "stages.r.steps",
        "less than or equal to 10000000",
    ),
    (
        HEAD + "  r: {kind: recover, model: b, data: s, epochs: 1.0e+6}\n",
        "stages.r.epochs",
        "less than or equal to 10000",
    ),
    (
        HEAD + "  r: {kind: recover, model: b, data: s, micro_batch: 100000000}\n",
        "stages.r.micro_batch",
        "less than or equal",
    ),
    ("pipeline: t\nseed: true\nstages:\n  w: {kind: world}\n", "seed", "integer"),
    (
        "pipeline: t\nstages:\n  w: {kind: world, seed: true}\n",
        "stages.w.seed",
        "a number is needed",
    ),
    (
        HEAD + "  r: {kind: recover, model: b, data: s, steps: true}\n",
        "stages.r.steps",
        "a number is needed",
    ),
    (
        HEAD
        + "  r: {kind: recover, model: b, data: s, deepspeed: {num_nodes: true}}\n",
        "stages.r.deepspeed.num_nodes",
        "a number is needed",
    ),
    (
        "pipeline: t\nmax_parallel: true\nstages:\n  w: {kind: world}\n",
        "max_parallel",
        "",
    ),
    (
        'pipeline: t\nstages:\n  "w\\n": {kind: world}\n',
        "stages.w\\n",
        "bad stage name",
    ),
    (
        "pipeline: t\nstages:\n  " + "a" * 300 + ": {kind: world}\n",
        "stages.aaaa",
        "1-64 characters",
    ),
    ("pipeline: t\nstages:\n  9w: {kind: world}\n", "stages.9w", "bad stage name"),
    ("pipeline: t\nstages:\n  w.x: {kind: world}\n", "stages.w.x", "bad stage name"),
    (
        "pipeline: t\ntracking_uri: 'not a uri!!'\nstages:\n  w: {kind: world}\n",
        "tracking_uri",
        "not an MLflow tracking URI",
    ),
    (
        "pipeline: t\ntracking_uri: 'http://'\nstages:\n  w: {kind: world}\n",
        "tracking_uri",
        "not an MLflow tracking URI",
    ),
    (
        "pipeline: t\ntracking_uri: 'mlruns'\nstages:\n  w: {kind: world}\n",
        "tracking_uri",
        "file:///",
    ),
    (
        "pipeline: t\nstages:\n  w: {kind: world}\n  s:\n    kind: select\n"
        "    pool: w\n    method: random\n    budget: 0.2\n    matrix:\n"
        + _bomb().replace("    l", "      l").replace("      l0", "      l0", 1)
        + "\n",
        "stages.s",
        "expands to more than",
    ),
    (
        HEAD + "  r:\n    kind: recover\n    model: b\n    data: s\n    deepspeed:\n"
        "      config:\n" + _bomb().replace("    l", "        l") + "\n",
        "stages.r.deepspeed.config",
        "expands to more than",
    ),
    (
        "pipeline: t\nstages:\n  w: &w {kind: world, x: *w}\n",
        "",
        "",  # a self-referencing alias: refused (composer or our check)
    ),
    ("pipeline: t\nstages:\n  w: " + "[" * 5000 + "]" * 5000 + "\n", "line", "nested"),
    (
        "pipeline: t\nstages:\n  w: " + "{a: " * 200 + "1" + "}" * 200 + "\n",
        "line",
        "nested",
    ),
    (
        "pipeline: t\nstages:\n  w: {kind: world, pool_size: 90}\n"
        "  s: {kind: select, method: random, pool: w, budget: 500}\n",
        "stages.s.budget",
        "pool 'w' has 90",
    ),
    (
        "pipeline: t\nstages:\n  w: {kind: world, matrix: {pool_size: [90, 1000]}}\n"
        "  s: {kind: select, method: random, pool: w, budget: 500}\n",
        "stages.s.budget",
        "pool 'w' has 90",
    ),
    ("- a\n- b\n", "<root>", "must be a mapping"),
    ("pipeline: t\nstages:\n  w: {kind: world\n", "line", "invalid YAML"),
    ("pipeline: t\nstages: {}\n", "stages", "at least one stage"),
    (
        "pipeline: t\nstages:\n  w: {kind: wrld}\n",
        "stages.w.kind",
        "did you mean 'world'",
    ),
    (
        HEAD + "  r: {kind: recover, model: b, data: s, matrix: {lr: [.inf, 0.1]}}\n",
        "stages.r.matrix.lr[0]",
        "finite",
    ),
    (
        "pipeline: t\nstages:\n  w: {kind: world, !!python/object:os.system x: 1}\n",
        "",
        "",
    ),
]


def _w(body: str, head: str = "pipeline: t\n") -> str:
    return head + "stages:\n  w: {kind: world" + body + "}\n"


def _r(extra: str) -> str:
    return HEAD + "  r: {kind: recover, model: b, data: s, " + extra + "}\n"


def _p(extra: str) -> str:
    return HEAD + "  p: {kind: prune, method: magnitude, model: b, " + extra + "}\n"


def _ds(extra: str) -> str:
    return _r("launcher: deepspeed, deepspeed: {" + extra + "}")


KNOWN = "one of world"
CATALOGUE += [
    # the shape of a stage and of the file
    ("pipeline: t\nstages:\n  w: {}\n", "stages.w.kind", "required; " + KNOWN),
    ("pipeline: t\nstages:\n  w: {kind: null}\n", "stages.w.kind", "required"),
    ("pipeline: t\nstages:\n  w: {kind: 5}\n", "stages.w.kind", "unknown kind '5'"),
    ("pipeline: t\nstages:\n  w: {kind: ''}\n", "stages.w.kind", "unknown kind"),
    ("pipeline: t\nstages:\n  w: 5\n", "stages.w", "must be a mapping"),
    ("pipeline: t\nstages:\n  w: [kind, world]\n", "stages.w", "must be a mapping"),
    ("pipeline: t\nstages:\n  w:\n", "stages.w", "must be a mapping"),
    ("pipeline: t\nstages: [w]\n", "stages", "valid dictionary"),
    ("pipeline: t\nstages:\n", "stages", "valid dictionary"),
    ("stages:\n  w: {kind: world}\n", "pipeline", "required field is missing"),
    ("pipeline: 5\nstages:\n  w: {kind: world}\n", "pipeline", "valid string"),
    ("pipeline: [a]\nstages:\n  w: {kind: world}\n", "pipeline", "valid string"),
    (
        "pipeline: t\nstagez: {}\nstages:\n  w: {kind: world}\n",
        "stagez",
        "did you mean 'stages'",
    ),
    ("", "<root>", "must be a mapping"),
    ("just a string\n", "<root>", "must be a mapping"),
    ("null\n", "<root>", "must be a mapping"),
    ("42\n", "<root>", "must be a mapping"),
    (_w("") + "---\npipeline: u\n", "line 4", "single document"),
    ("pipeline: t\nstages:\n\tw: {kind: world}\n", "line 3", "invalid YAML"),
    ("pipeline: t\nstages:\n  w: !!binary aGVsbG8=\n", "stages.w", "mapping"),
    ("pipeline: t\nstages:\n  w: !!python/name:os.system\n", "line 3", "tag"),
    (
        "pipeline: t\nstages:\n  w: !!python/object/apply:os.system [ls]\n",
        "line 3",
        "python/object/apply",
    ),
    ("pipeline: t\nstages:\n  w: !custom {kind: world}\n", "line 3", "!custom"),
    ("\ufeff" + _w(", kind: wrld"), "stages.w", "duplicate key 'kind'"),
    (
        "pipeline: t\ndescription: " + "x" * 200_000 + "\n" + _w("")[12:] + "  v: {}\n",
        "stages.v.kind",
        "required",
    ),
    # header fields
    ("pipeline: t\nseed: -1\nstages:\n  w: {kind: world}\n", "seed", "0"),
    (
        "pipeline: t\nseed: 4294967296\nstages:\n  w: {kind: world}\n",
        "seed",
        "less than or equal to 4294967295",
    ),
    ("pipeline: t\nseed: abc\nstages:\n  w: {kind: world}\n", "seed", "integer"),
    ("pipeline: t\nseed: 1.5\nstages:\n  w: {kind: world}\n", "seed", "integer"),
    (_w("", "pipeline: t\nmax_parallel: 0\n"), "max_parallel", "greater than or"),
    (_w("", "pipeline: t\nmax_parallel: 5000\n"), "max_parallel", "less than or"),
    (_w("", "pipeline: t\nexperiment: [a]\n"), "experiment", "valid string"),
    (_w("", "pipeline: t\ntracking_uri: 5\n"), "tracking_uri", "valid string"),
    # stage fields: unknown, out of range, wrong type, non-finite
    (_w(", factz: 6"), "stages.w.factz", "did you mean 'facts'"),
    (_w(", pool_size: -5"), "stages.w.pool_size", "greater than or equal to 0"),
    (_w(", pool_size: 9.5"), "stages.w.pool_size", "fractional part"),
    (_w(", facts: 1e3"), "stages.w.facts", "valid integer"),
    (_w(", method: nope"), "stages.w.method", "unknown world method 'nope'"),
    (_w(", seed: -3"), "stages.w.seed", "greater than or equal to 0"),
    (_w(", seed: .inf"), "stages.w.seed", "finite"),
    # sweeps
    (_w(", matrix: 5"), "stages.w.matrix", "must be a mapping"),
    (_w(", matrix: [1, 2]"), "stages.w.matrix", "must be a mapping"),
    (_w(", matrix: {pool_size: []}"), "stages.w.matrix.pool_size", "non-empty list"),
    (_w(", matrix: {pool_size: 90}"), "stages.w.matrix.pool_size", "non-empty list"),
    (_w(", matrix: {nope: [1, 2]}"), "stages.w.matrix.nope", "not a param"),
    (_w(", matrix: {facts: [6, 6]}"), "stages.w.matrix", "duplicate variant names"),
    (_w(", facts: 6, matrix: {facts: [6, 7]}"), "stages.w.matrix.facts", "keep one"),
    (_w(", matrix: {facts: [6, .nan]}"), "stages.w.matrix.facts[1]", "finite"),
    (_w(", seeds: []"), "stages.w.seeds", "non-empty list of ints"),
    (_w(", seeds: x"), "stages.w.seeds", "non-empty list of ints"),
    (_w(", seeds: [true]"), "stages.w.seeds", "non-empty list of ints"),
    (_w(", seeds: [1.5]"), "stages.w.seeds", "non-empty list of ints"),
    (_w(", seeds: [-1]"), "stages.w.seeds", "from 0 to 4294967295"),
    (_w(", seeds: [1, 1]"), "stages.w.matrix", "duplicate variant names"),
    (
        HEAD + "  r: {kind: recover, data: s, matrix: {model: [b, b]}}\n",
        "stages.r.matrix.model",
        "cannot be swept here",
    ),
    # stage names
    ("pipeline: t\nstages:\n  'a b': {kind: world}\n", "stages.a b", "bad stage"),
    ("pipeline: t\nstages:\n  'é': {kind: world}\n", "stages.é", "bad stage name"),
    ("pipeline: t\nstages:\n  '': {kind: world}\n", "stages.", "bad stage name"),
    ("pipeline: t\nstages:\n  'a@b': {kind: world}\n", "stages.a@b", "variants"),
    ("pipeline: t\nstages:\n  '-a': {kind: world}\n", "stages.-a", "bad stage"),
    ("pipeline: t\nstages:\n  1: {kind: world}\n", "stages.1", "bad stage name"),
    ("pipeline: t\nstages:\n  null: {kind: world}\n", "stages.None", "string"),
    # inputs and the graph
    (HEAD + "  r: {kind: recover, data: s}\n", "stages.r.model", "required field"),
    (_r("model: bb").replace("model: b, ", "", 1), "stages.r.model", "'b'?"),
    (_r("model: w").replace("model: b, ", "", 1), "stages.r.model", "model is needed"),
    (_r("model: r").replace("model: b, ", "", 1), "stages.r", "dependency cycle"),
    (
        HEAD + "  r: {kind: recover, model: q, data: s}\n"
        "  q: {kind: recover, model: r, data: s}\n",
        "stages.r",
        "dependency cycle: r -> q -> r",
    ),
    (_r("model: [b]").replace("model: b, ", "", 1), "stages.r.model", "string"),
    (_r("model: 5").replace("model: b, ", "", 1), "stages.r.model", "string"),
    (_r("data: b").replace("data: s, ", "", 1), "stages.r.data", "dataset is needed"),
    # training fields
    (_r("lr: 0"), "stages.r.lr", "greater than 0"),
    (_r("lr: 2"), "stages.r.lr", "less than or equal to 1"),
    (_r("lr: fast"), "stages.r.lr", "valid number"),
    (_r("lr: 1e309"), "stages.r.lr", "less than or equal to 1"),
    (_r("micro_batch: 0"), "stages.r.micro_batch", "greater than or equal to 1"),
    (_r("max_len: 0"), "stages.r.max_len", "greater than or equal"),
    (_r("steps: 0"), "stages.r.steps", "greater than or equal to 1"),
    (_r("steps: 1.5"), "stages.r.steps", "fractional part"),
    (_r("steps: " + str(2**100)), "stages.r.steps", "less than or equal"),
    (_r("epochs: 0"), "stages.r.epochs", "greater than 0"),
    (_r("precision: fp8"), "stages.r.precision", "'fp32', 'bf16' or 'fp16'"),
    (_r("launcher: mpi"), "stages.r.launcher", "'none' or 'deepspeed'"),
    (_r("method: nope"), "stages.r.method", "unknown recover method"),
    (_r("method: [full]"), "stages.r.method", "must be a method name"),
    (_r("schedule: exp"), "stages.r.schedule", "'cosine'"),
    (_r("weight_decay: .inf"), "stages.r.weight_decay", "finite"),
    (_r("max_grad_norm: .nan"), "stages.r.max_grad_norm", "finite"),
    (_r("checkpoint_every: -1"), "stages.r.checkpoint_every", "greater than or"),
    # pruning and selection
    (_p("sparsity: 1.5"), "stages.p.sparsity", "less than 1"),
    (_p("sparsity: -0.1"), "stages.p.sparsity", "greater than 0"),
    (_p("sparsity: .nan"), "stages.p.sparsity", "finite"),
    (_p("sparsity: true"), "stages.p.sparsity", "a number is needed"),
    (_p("dtype: float8"), "stages.p.dtype", "'float32'"),
    (_p("method: wanda"), "stages.p.method", "duplicate key 'method'"),
    (
        HEAD + "  p: {kind: prune, method: magnitud, model: b}\n",
        "stages.p.method",
        "did you mean 'magnitude'",
    ),
    (
        HEAD + "  t: {kind: select, method: random, pool: w, budget: 0}\n",
        "stages.t.budget",
        ">= 1",
    ),
    (
        HEAD + "  t: {kind: select, method: random, pool: w, budget: .inf}\n",
        "stages.t.budget",
        "finite",
    ),
    (
        HEAD + "  t: {kind: select, method: random, pool: b, budget: 0.2}\n",
        "stages.t.pool",
        "dataset is needed",
    ),
    (
        HEAD + "  t: {kind: select, method: randm, pool: w, budget: 0.2}\n",
        "stages.t.method",
        "did you mean 'random'",
    ),
    # evaluation
    (HEAD + "  e: {kind: evaluate, models: [], data: w}\n", "stages.e.models", "one"),
    (HEAD + "  e: {kind: evaluate, models: [w], data: w}\n", "stages.e.models[0]", ""),
    (
        HEAD + "  e: {kind: evaluate, models: [b, z], data: w}\n",
        "stages.e.models[1]",
        "",
    ),
    (HEAD + "  e: {kind: evaluate, models: b, data: w}\n", "stages.e.models", "list"),
    (HEAD + "  e: {kind: evaluate, models: [b]}\n", "stages.e.data", "required"),
    (
        HEAD + "  e: {kind: evaluate, models: [b], data: w, suites: [[x]]}\n",
        "stages.e.suites",
        "unknown suite",
    ),
    # DeepSpeed
    (_ds("zero_stage: 4"), "stages.r.deepspeed.zero_stage", "1, 2 or 3"),
    (_ds("offload_params: true"), "stages.r.deepspeed", "zero_stage: 3"),
    (_ds("num_nodes: 2"), "stages.r.deepspeed", "hostfile"),
    (_ds("master_port: 80"), "stages.r.deepspeed.master_port", "1024"),
    (_ds("master_addr: 'a b'"), "stages.r.deepspeed.master_addr", "pattern"),
    (_ds("num_gpus: 0"), "stages.r.deepspeed.num_gpus", "greater than or equal"),
    (_ds("nope: 1"), "stages.r.deepspeed.nope", "unknown key"),
    (_ds("config: 5"), "stages.r.deepspeed.config", "valid dictionary"),
    (
        _ds("config: {tensorboard: {enabled: true, output_path: /tmp/tb}}"),
        "stages.r.deepspeed.config",
        "output_path: writes monitor logs",
    ),
    (
        _ds("config: {zero_optimization: {offload_param: {nvme_path: ../../x}}}"),
        "stages.r.deepspeed.config",
        "nvme_path: writes ZeRO-Infinity NVMe swap files",
    ),
    (
        _ds("include: a, exclude: b, hostfile: h"),
        "stages.r.deepspeed",
        "exclude each other",
    ),
    # pretrained checkpoints
    ("pipeline: t\nstages:\n  m: {kind: pretrained, path: ''}\n", "stages.m.path", ""),
    ("pipeline: t\nstages:\n  m: {kind: pretrained}\n", "stages.m.path", "required"),
    (
        "pipeline: t\nstages:\n  m: {kind: pretrained, path: /x, "
        "trust_remote_code: 'yes'}\n",
        "stages.m.trust_remote_code",
        "valid boolean",
    ),
    (
        "pipeline: t\nstages:\n  m: {kind: pretrained, path: /x, "
        "trust_remote_code: 1}\n",
        "stages.m.trust_remote_code",
        "valid boolean",
    ),
]

# declarations that must stay accepted (each a (text, expected node count))
CLEAN = [
    (_w(""), 1),
    (_w(", facts: 6, matrix: {pool_size: [90, 120]}"), 2),
    (_w(", seeds: [0, 4294967295]"), 2),
    ("pipeline: t\nstages:\n  w: &a {kind: world}\n  v: *a\n", 2),  # an alias
    ("pipeline: t\nstages:\n  w: {kind: world, <<: {facts: 6}}\n", 1),  # merge key
    (_w(", pool_size: 0x10"), 1),  # YAML 1.1 hex int
    (_ds("config: {tensorboard: {enabled: true, output_path: tb}}"), 4),
    (HEAD + "  e: {kind: evaluate, models: [b], data: w}\n", 4),
    (
        "pipeline: t\nstages:\n  m: {kind: pretrained, path: /x, "
        "trust_remote_code: true}\n",
        1,
    ),
    (HEAD, 3),
]


@pytest.mark.parametrize("text,path,message", CATALOGUE)
def test_bad_declaration_is_a_message_not_a_traceback(text, path, message, tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    t0 = time.perf_counter()
    with pytest.raises(DeclarationError) as err:
        load(f)
    assert time.perf_counter() - t0 < 2.0
    lines = str(err.value).splitlines()[1:]
    assert any(path in ln and message in ln for ln in lines), str(err.value)


@pytest.mark.parametrize("text,nodes", CLEAN)
def test_clean_declarations_stay_accepted(text, nodes, tmp_path):
    f = tmp_path / "ok.yaml"
    f.write_text(text)
    assert len(build(load(f)).nodes) == nodes


def test_the_catalogue_covers_at_least_100_declarations():
    assert len(CATALOGUE) + len(CLEAN) >= 100 and len(CATALOGUE) >= 100


def test_cli_exit_code_and_no_traceback_for_each_catalogue_entry(tmp_path, capsys):
    for i, (text, _, _) in enumerate(CATALOGUE):
        f = tmp_path / f"bad{i}.yaml"
        f.write_text(text)
        assert main(["validate", str(f)]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.strip()


def test_non_utf8_file_is_named(tmp_path, capsys):
    f = tmp_path / "latin1.yaml"
    f.write_bytes("pipeline: caf\xe9\nstages: {}\n".encode("latin-1"))
    assert main(["validate", str(f)]) == 2
    assert "not UTF-8" in capsys.readouterr().err


def test_every_error_is_listed_together(tmp_path):
    f = tmp_path / "two.yaml"
    f.write_text(HEAD + "  r: {kind: recover, model: b, data: s, lr: .inf, steps: 0}\n")
    with pytest.raises(DeclarationError) as err:
        load(f)
    paths = [i.path for i in err.value.issues]
    assert paths == ["stages.r.lr", "stages.r.steps"]


def test_long_reversed_chain_validates_in_under_two_seconds(toy_kinds):
    n = 2000
    stages = {
        f"s{i}": {"kind": "toyadd", "data": f"s{i - 1}"} for i in range(n - 1, 0, -1)
    }
    stages["s0"] = {"kind": "toysrc"}
    t0 = time.perf_counter()
    graph = build(validate({"pipeline": "chain", "stages": stages}))
    assert time.perf_counter() - t0 < 2.0
    assert list(graph.nodes)[:3] == ["s0", "s1", "s2"]


def test_cycle_in_a_long_chain_is_reported_without_recursion(toy_kinds):
    n = 3000
    stages = {f"s{i}": {"kind": "toyadd", "data": f"s{(i + 1) % n}"} for i in range(n)}
    with pytest.raises(DeclarationError, match="dependency cycle"):
        validate({"pipeline": "ring", "stages": stages})


def test_over_long_variant_name_is_refused(toy_kinds):
    stages = {"src": {"kind": "toysrc", "matrix": {"n": list(range(1, 80))}}}
    build(validate({"pipeline": "ok", "stages": stages}))  # short labels: fine
    long = {"a" * 60: {"kind": "toysrc", "matrix": {"n": [10**120, 1]}}}
    with pytest.raises(DeclarationError, match="too long"):
        build(validate({"pipeline": "long", "stages": long}))


# -- files named in a declaration, checked before anything runs ---------------


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_pretrained_path_is_checked_at_validation(kind, tmp_path, capsys, monkeypatch):
    target = tmp_path / "model"
    if kind == "file":
        target.write_text("not a folder")
    f = tmp_path / "p.yaml"
    f.write_text(f"pipeline: t\nstages:\n  m: {{kind: pretrained, path: {target}}}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["validate", str(f)]) == 2
    err = capsys.readouterr().err
    assert "stages.m.path" in err
    assert ("does not exist" if kind == "missing" else "is a file") in err
    assert main(["stage", "m", "--file", str(f), "--no-track"]) == 2


def test_hostfile_is_checked_at_validation(tmp_path, capsys):
    f = tmp_path / "h.yaml"
    f.write_text(
        HEAD + "  r: {kind: recover, model: b, data: s, launcher: deepspeed, "
        "deepspeed: {num_nodes: 2, hostfile: /nonexistent/hostfile}}\n"
    )
    load(f)  # the document itself is valid (it may be meant for another machine)
    assert main(["validate", str(f)]) == 2
    assert "stages.r.deepspeed.hostfile" in capsys.readouterr().err


# -- run-time faults: one paragraph, exit 1, traceback only with --debug -------


def _toy_file(tmp_path: Path, name: str = "one", **extra) -> Path:
    stages = {"a": {"kind": "toysrc"}, "b": {"kind": "toyadd", "data": "a"}}
    f = tmp_path / f"{name}.yaml"
    f.write_text(yaml.safe_dump({"pipeline": name, **extra, "stages": stages}))
    return f


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_mlflow_fails_in_seconds(tmp_path, toy_kinds, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    f = _toy_file(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_closed_port()}")
    t0 = time.perf_counter()
    assert main(["stage", "a", "--file", str(f)]) == 1
    assert time.perf_counter() - t0 < 15
    err = capsys.readouterr().err
    assert "not reachable" in err and "--no-track" in err and "Traceback" not in err
    assert not (tmp_path / "artifacts" / "a").exists()


def test_unwritable_mlflow_store_is_a_message(tmp_path, toy_kinds, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    f = _toy_file(tmp_path)
    (tmp_path / "file").write_text("a file where the store's folder should be")
    uri = f"sqlite:///{tmp_path}/file/m.db"  # unwritable even for root
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert main(["stage", "a", "--file", str(f)]) == 1
    err = capsys.readouterr().err
    assert f"MLflow at {uri} failed" in err and "Traceback" not in err
    (tmp_path / "bad.db").write_bytes(b"not a database" * 100)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/bad.db")
    assert main(["stage", "a", "--file", str(f)]) == 1
    assert "writable" in capsys.readouterr().err
    assert not (tmp_path / "artifacts" / "a").exists()


def test_garbage_tracking_uri_from_the_environment(
    tmp_path, toy_kinds, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    f = _toy_file(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "definitely not a uri")
    assert main(["stage", "a", "--file", str(f)]) == 1
    assert "MLFLOW_TRACKING_URI: not an MLflow tracking URI" in capsys.readouterr().err


def test_stage_failure_is_one_paragraph_and_debug_shows_the_traceback(
    tmp_path, toy_kinds, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    stages = {"a": {"kind": "toysrc"}, "f": {"kind": "toyfail", "data": "a"}}
    f = tmp_path / "fail.yaml"
    f.write_text(yaml.safe_dump({"pipeline": "fail", "stages": stages}))
    assert main(["stage", "a", "--file", str(f), "--no-track"]) == 0
    assert main(["stage", "f", "--file", str(f), "--no-track"]) == 1
    err = capsys.readouterr().err
    assert "stage 'f' failed: RuntimeError: toy failure" in err
    assert "--debug" in err and "Traceback" not in err
    with pytest.raises(RuntimeError, match="toy failure"):
        main(["stage", "f", "--file", str(f), "--no-track", "--debug"])
    with pytest.raises(RuntimeError, match="toy failure"):
        main(["--debug", "stage", "f", "--file", str(f), "--no-track"])


def test_damaged_input_is_caught_before_the_stage_starts(
    tmp_path, toy_kinds, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    f = _toy_file(tmp_path)
    assert main(["stage", "a", "--file", str(f), "--no-track"]) == 0
    data = tmp_path / "artifacts" / "a" / "data.jsonl"
    data.write_bytes(data.read_bytes()[:-7])  # truncated, as a killed copy leaves it
    assert main(["stage", "b", "--file", str(f), "--no-track"]) == 1
    err = capsys.readouterr().err
    assert "input 'data'" in err and "changed since it was written" in err
    assert "`dvc checkout --force artifacts/a`" in err
    assert not (tmp_path / "artifacts" / "b").exists()


def _tiny_checkpoint(folder: Path) -> Path:
    from tests.tiny import char_tokenizer, tiny_llama, write_checkpoint

    tok = char_tokenizer()
    return write_checkpoint(
        tiny_llama(tok, hidden=16, layers=1, heads=2, kv_heads=1), tok, folder
    )


def test_truncated_safetensors_is_a_message(tmp_path, capsys, monkeypatch):
    """A model whose weights file was cut short: once published, its recorded
    fingerprint no longer matches, so the next stage refuses before loading it;
    truncated at the source, loading it names the file."""
    monkeypatch.chdir(tmp_path)
    src = _tiny_checkpoint(tmp_path / "ckpt")
    f = tmp_path / "m.yaml"
    f.write_text(
        f"pipeline: m\nstages:\n  m: {{kind: pretrained, path: {src}, link: false}}\n"
        "  p: {kind: prune, method: magnitude, model: m, sparsity: 0.5}\n"
    )
    assert main(["stage", "m", "--file", str(f), "--no-track"]) == 0
    weights = tmp_path / "artifacts" / "m" / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    assert main(["stage", "p", "--file", str(f), "--no-track"]) == 1
    err = capsys.readouterr().err
    assert "input 'model'" in err and "changed since it was written" in err
    assert "Traceback" not in err and not (tmp_path / "artifacts" / "p").exists()
    (src / "model.safetensors").write_bytes(good[: len(good) // 2])
    assert main(["stage", "m", "--file", str(f), "--no-track"]) == 1
    err = capsys.readouterr().err
    assert f"{src}/model.safetensors: not a complete safetensors file" in err
    assert "stage 'm' failed" in err and "Traceback" not in err


def test_corrupt_jsonl_names_file_and_real_line(tmp_path):
    from stages.common.io import CorruptDataError, read_jsonl

    f = tmp_path / "data.jsonl"
    f.write_text('{"id": 1}\n\n{"id": 2}\n{"id": 3, \n{"id": 4}\n')
    with pytest.raises(CorruptDataError, match=rf"{f}:4: corrupt JSONL line"):
        list(read_jsonl(f))
    f.write_bytes(b'{"id": 1}\n{"id": "\xff"}\n')
    with pytest.raises(CorruptDataError, match=rf"{f}:2:"):
        list(read_jsonl(f))
    f.write_text('{"id": 1}\n[1, 2]\n')
    with pytest.raises(CorruptDataError, match="must be an object"):
        list(read_jsonl(f))


def test_bad_cron_for_serve_is_a_message(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["serve", "params.yaml", "--cron", "every day at 3"]) == 1
    err = capsys.readouterr().err
    assert "not a valid cron schedule" in err and "0 3 * * *" in err
    assert "Traceback" not in err


def test_stale_temp_folders_are_cleaned_at_the_next_run(tmp_path, toy_kinds):
    g = build(validate(yaml.safe_load(_toy_file(tmp_path).read_text())))
    art = tmp_path / "artifacts"
    (art / ".tmp-a-0123abcd").mkdir(parents=True)
    (art / ".trash-a-0123abcd").mkdir()
    (art / ".tmp-ab-0123abcd").mkdir()  # another node's: left alone
    run_node(g, "a", Layout(tmp_path))
    assert sorted(p.name for p in art.iterdir()) == [".tmp-ab-0123abcd", "a"]


def test_a_second_run_of_a_node_waits_and_spares_the_live_temp_folder(
    tmp_path, toy_kinds, caplog
):
    """Two runs of one node at once (two `carp run` of a pipeline, `carp stage`
    beside a flow): the second waits for the first's lock instead of deleting
    its temp folder as a killed run's, then runs."""
    g = build(validate(yaml.safe_load(_toy_file(tmp_path).read_text())))
    layout = Layout(tmp_path)
    live = tmp_path / "artifacts" / ".tmp-a-0123abcd"  # the first run's
    live.mkdir(parents=True)
    done = threading.Event()
    second = threading.Thread(target=lambda: (run_node(g, "a", layout), done.set()))
    with node_lock(layout, "a"):  # the first run holds the node
        second.start()
        time.sleep(1.5)
        assert live.is_dir() and not done.is_set()
        assert not (tmp_path / "artifacts" / "a").exists()
    second.join(120)
    assert done.is_set() and (tmp_path / "artifacts" / "a" / "carp.json").is_file()
    assert not live.exists()  # the holder is gone: now it is a leftover
    assert "stage a is being run by pid" in caplog.text


# -- numerical guard ------------------------------------------------------------


@pytest.mark.parametrize("poison", ["loss", "weights"])
def test_non_finite_training_stops_and_publishes_nothing(poison, tmp_path, monkeypatch):
    """A loss that turns NaN mid-run (what `lr: .inf` did) stops at that step; a
    last step that leaves NaN weights is caught before anything is saved."""
    import torch

    from pipelines.contract import RunContext
    from stages.common.io import write_dataset
    from stages.common.train import launch
    from stages.common.train.loop import NonFiniteError
    from stages.recover import KIND, run
    from tests.tiny import records

    real = launch.load_builder

    def poisoned(spec):
        build_task = real(spec)

        def wrapped(job, device):
            task = build_task(job, device)
            loss_fn = task.loss_fn

            def bad(model, batch, info):
                loss, logs = loss_fn(model, batch, info)
                if info.step == info.total - 1:
                    if poison == "loss":
                        return loss * float("nan"), logs
                    with torch.no_grad():
                        next(model.parameters()).fill_(float("inf"))
                return loss, logs

            task.loss_fn = bad
            return task

        return wrapped

    monkeypatch.setattr(launch, "load_builder", poisoned)
    model_dir = _tiny_checkpoint(tmp_path / "m")
    write_dataset(records(8), tmp_path / "d", source="test")
    params = KIND.params_class("full").model_validate(
        {
            "method": "full",
            "model": "m",
            "data": "d",
            "steps": 2,
            "micro_batch": 4,
            "max_len": 32,
            "checkpoint_every": 0,
            "max_grad_norm": None,
        }
    )
    out = tmp_path / "out"
    out.mkdir()
    inputs = {"model": model_dir, "data": tmp_path / "d"}
    match = "diverged at step 2" if poison == "loss" else "non-finite weights"
    with pytest.raises(NonFiniteError, match=match):
        run(params, inputs, out, RunContext(checkpoint_dir=None))
    assert not (out / "model.safetensors").exists()


# -- one checkout, several pipelines -------------------------------------------


def test_another_pipeline_may_not_overwrite_outputs(
    tmp_path, toy_kinds, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    one, two = _toy_file(tmp_path, "one"), _toy_file(tmp_path, "two")
    assert main(["stage", "a", "--file", str(one), "--no-track"]) == 0
    before = (tmp_path / "artifacts" / "a" / "carp.json").read_text()
    assert json.loads(before)["pipeline"] == "one"
    assert main(["stage", "a", "--file", str(two), "--no-track"]) == 1
    err = capsys.readouterr().err
    assert "would overwrite outputs made by another pipeline" in err
    assert "artifacts/a ('one')" in err and "git worktree" in err
    assert (tmp_path / "artifacts" / "a" / "carp.json").read_text() == before
    assert main(["run", str(two), "--no-track"]) == 1  # refused before Prefect starts
    assert "would overwrite" in capsys.readouterr().err
    assert main(["stage", "a", "--file", str(one), "--no-track"]) == 0  # its own: fine


def test_report_shows_only_the_declarations_own_results(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    f = tmp_path / "mine.yaml"
    f.write_text(
        "pipeline: mine\nstages:\n  w: {kind: world}\n  b: {kind: pretrain, data: w}\n"
        "  eval: {kind: evaluate, models: [b], data: w}\n"
    )
    out = tmp_path / "artifacts" / "eval"
    out.mkdir(parents=True)
    (out / "table.md").write_text("| other | 99.9 |\n")
    (out / "carp.json").write_text(json.dumps({"pipeline": "other"}))
    assert main(["report", str(f)]) == 1
    captured = capsys.readouterr()
    assert "99.9" not in captured.out
    assert "holds pipeline 'other'" in captured.err
    (out / "carp.json").write_text(json.dumps({"pipeline": "mine"}))
    assert main(["report", str(f)]) == 0
    assert "99.9" in capsys.readouterr().out


# -- mutations of valid declarations: errors or OK, never an exception ---------

PRESETS = sorted((ROOT / "pipelines" / "presets").glob("*.yaml")) + [
    ROOT / "params.yaml"
]
ODD = [
    None,
    True,
    -1,
    0,
    1e308,
    float("inf"),
    float("nan"),
    "",
    "x" * 300,
    [],
    {},
    [[[]]],
    {"a": {"b": None}},
    "world",
    "base",
    2**70,
    "\n",
    "@",
    0.5,
]


def _mutate(raw, rng: random.Random):
    """Replace, delete or add one value somewhere in ``raw`` (in place); the
    values put in are copies, so no mutant shares (or cycles through) them."""
    node = raw
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            return
        key = rng.choice(keys)
        child = node[key]
        if isinstance(child, dict | list) and child and rng.random() < 0.7:
            node = child
            continue
        break
    op = rng.random()
    if op < 0.6:
        node[key] = copy.deepcopy(rng.choice(ODD))
    elif op < 0.8 and isinstance(node, dict):
        del node[key]
    elif isinstance(node, dict):
        node[
            rng.choice(["kind", "method", "matrix", "seeds", "zz", str(key) + "x"])
        ] = copy.deepcopy(rng.choice(ODD))


def test_mutated_declarations_give_errors_or_ok_never_an_exception():
    rng = random.Random(14)
    bases = [yaml.safe_load(p.read_text()) for p in PRESETS]
    for i in range(300):
        raw = json.loads(json.dumps(rng.choice(bases)))
        for _ in range(rng.randint(1, 3)):
            _mutate(raw, rng)
        t0 = time.perf_counter()
        with contextlib.suppress(DeclarationError):
            build(validate(raw, source=f"mutant{i}"))
        assert time.perf_counter() - t0 < 2.0, f"mutant {i} took too long"


def test_every_engine_key_of_every_stage_takes_odd_values():
    """Systematic: each stage of params.yaml with ``kind``, ``method``,
    ``matrix`` and ``seeds`` set to each odd value gives errors or OK."""
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    for stage in base["stages"]:
        for key in ("kind", "method", "matrix", "seeds"):
            for value in ODD:
                raw = json.loads(json.dumps(base))
                raw["stages"][stage][key] = copy.deepcopy(value)
                t0 = time.perf_counter()
                with contextlib.suppress(DeclarationError):
                    build(validate(raw, source=f"{stage}.{key}={value!r}"))
                assert time.perf_counter() - t0 < 2.0
