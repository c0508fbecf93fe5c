"""The `carp` command line: validate, compile, stage, run, serve, deploy, plan,
methods, report."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from pipelines.contract import UnknownName
from pipelines.spec import DeclarationError

DEFAULT_FILE = "params.yaml"


def _load_graph(path: str, local: bool = False):  # -> Graph
    """Validate and expand ``path``; ``local`` also checks the files and folders
    it names on this machine (checkpoints, hostfiles)."""
    from pipelines.graph import build
    from pipelines.spec import DeclarationError, load, local_path_issues

    decl = load(path)
    if local:
        issues = local_path_issues(decl)
        if issues:
            raise DeclarationError(path, issues)
    return build(decl)


def cmd_validate(args: argparse.Namespace) -> int:
    graph = _load_graph(args.file, local=True)
    names = list(graph.nodes)
    print(
        f"{args.file}: OK — {len(graph.decl.stages)} stages, {len(names)} nodes: "
        + ", ".join(names)
    )
    return 0


def _dvc_current(graph, decl_file: str, out: Path) -> bool:
    """Whether ``out`` is what `carp compile decl_file` writes now."""
    from pipelines import dvc

    text = dvc.render(dvc.compile_graph(graph, decl_file, Path.cwd()), decl_file)
    return out.exists() and out.read_text() == text


def _stale_compiled(graph, decl_file: str) -> bool:
    """A ``dvc.yaml`` here that `carp compile decl_file` wrote, but not from
    this version of the declaration."""
    from pipelines import dvc

    out = Path("dvc.yaml")
    if not out.is_file():
        return False
    with open(out) as f:
        first = f.readline()
    made_here = first == dvc.HEADER.format(src=decl_file)
    return made_here and not _dvc_current(graph, decl_file, out)


def cmd_compile(args: argparse.Namespace) -> int:
    from pipelines import dvc

    graph = _load_graph(args.file)
    root = Path.cwd()
    out = Path(args.output)
    if args.check:
        if not _dvc_current(graph, args.file, out):
            print(
                f"{out} is stale: run `carp compile {args.file}` and commit it",
                file=sys.stderr,
            )
            return 1
        print(f"{out} is up to date with {args.file}")
        return 0
    dvc.write(graph, args.file, root, out)
    print(f"wrote {out} ({len(graph.nodes)} stages)")
    return 0


def cmd_stage(args: argparse.Namespace) -> int:
    from pipelines.lineage import NULL_RUN
    from pipelines.runtime import Layout, end_status, open_lineage, run_node

    graph = _load_graph(args.file, local=True)
    if os.environ.get("DVC_STAGE") and _stale_compiled(graph, args.file):
        # run by `dvc repro` from a dvc.yaml that no longer tracks what this
        # declaration says (e.g. a top-level `seed:` added since): DVC would
        # skip the stages it changes
        print(
            f"dvc.yaml is stale with {args.file}: run `carp compile {args.file}`, "
            "then `dvc repro` again",
            file=sys.stderr,
        )
        return 2
    if args.name not in graph.nodes:
        from pipelines.spec import did_you_mean

        print(
            f"no stage '{args.name}' in {args.file}"
            f"{did_you_mean(args.name, list(graph.nodes))}",
            file=sys.stderr,
        )
        return 2
    layout = Layout(Path.cwd())
    run = NULL_RUN if args.no_track else open_lineage(graph, layout, reuse=True)
    try:
        run_node(graph, args.name, layout, run, force=True)
    except BaseException as e:
        run.end(ok=False, status=end_status(e))  # the parent this stage reopened
        if _debug(args) or not isinstance(e, Exception):
            raise
        print(f"carp: stage '{args.name}' failed: {_one_line(e)}", file=sys.stderr)
        print(DEBUG_HINT, file=sys.stderr)
        return 1
    run.end(ok=True)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from flows.pipeline import run_pipeline
    from pipelines.runtime import Layout, check_owner

    graph = _load_graph(args.file, local=True)  # validate before Prefect starts
    check_owner(graph, Layout(Path.cwd()))
    report = run_pipeline(
        args.file,
        root=Path.cwd(),
        track=not args.no_track,
        force=args.force,
        max_parallel=args.max_parallel,
        runner=args.task_runner,
    )
    print(report.summary(), file=sys.stderr if report.failed else sys.stdout)
    return 1 if report.failed else 0


def cmd_serve(args: argparse.Namespace) -> int:
    from flows.pipeline import check_cron, serve

    check_cron(args.cron)
    _load_graph(args.file, local=True)
    serve(args.file, cron=args.cron, name=args.name)
    return 0


def pairs(items: list[str], option: str, form: str) -> dict[str, str]:
    """``A=B`` options (``--route``, ``--model-config``) as a mapping."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"{option} {item!r}: write {form}")
        out[key] = value
    return out


def cmd_deploy(args: argparse.Namespace) -> int:
    from flows.deploy import deploy

    _load_graph(args.file, local=True)
    names = deploy(
        args.file,
        pool=args.pool,
        cron=args.cron,
        interval=args.interval,
        name=args.name,
        overrides=args.set,
        routes=pairs(args.route, "--route", "KIND_OR_STAGE=POOL (recover=gpu)"),
    )
    for n in names:
        print(f"deployment {n}: run it with `prefect deployment run '{n}'`")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from pipelines.plan import hardware, model_overrides, plan, render

    graph = _load_graph(args.file)
    root = Path.cwd()
    hw = hardware(args)
    shapes = pairs(
        args.model_config, "--model-config", "STAGE=CONFIG (base=llama-2-7b)"
    )
    rows = plan(graph, hw, root, model_overrides(shapes, root))
    print(render(rows, hw))
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from pipelines.kinds import KINDS, load_kind

    for name in [args.kind] if args.kind else list(KINDS):
        kind = load_kind(name)
        print(f"{name}:")
        for method in kind.methods.names():
            print(f"  {method:<14} {kind.methods.describe(method)}")
        for note in kind.notes:
            print(f"{name} note: {note}")
        for catalog in kind.catalogs:
            print(f"{name} {catalog.plural}:")
            for entry in catalog.names():
                print(f"  {entry:<14} {catalog.describe(entry)}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pipelines.runtime import Layout
    from stages.evaluate.html import pipeline_report, write_text_atomic

    graph = _load_graph(args.file)
    layout = Layout(Path.cwd())
    stage = (args.baseline or "").partition("@")[0]
    if args.baseline and stage not in graph.decl.stages:
        from pipelines.spec import Issue, did_you_mean

        hint = did_you_mean(stage, sorted(graph.decl.stages))
        raise DeclarationError(
            args.file, [Issue("--baseline", f"no stage named '{stage}'{hint}")]
        )
    report = pipeline_report(graph, layout, args.baseline)
    for line in report.skipped:
        print(line, file=sys.stderr)
    if not report.sections:
        print(
            "no evaluation tables or study outputs yet: run `dvc repro` or "
            "`carp run` first",
            file=sys.stderr,
        )
        return 1
    print(report.markdown())
    print(f"Markdown report: {write_text_atomic(Path(args.md), report.markdown())}")
    print(f"HTML report: {write_text_atomic(Path(args.html), report.html())}")
    from pipelines.lineage import tracking_uri

    uri = tracking_uri(layout.home, graph.decl.header.tracking_uri)
    if uri.startswith("sqlite:"):
        print(
            f"MLflow UI: mlflow ui --backend-store-uri {uri} "
            f"--default-artifact-root {(layout.home / 'mlartifacts').resolve()}"
        )
        hdr = graph.decl.header
        exp_id = sqlite_experiment_id(uri, hdr.experiment or f"carp-{hdr.pipeline}")
        if exp_id is not None:
            print(f"  then open http://127.0.0.1:5000/#/experiments/{exp_id}/runs")
    else:
        print(f"MLflow tracking server: {uri}")
    return 0


def sqlite_experiment_id(uri: str, name: str) -> str | None:
    """The id of experiment ``name`` in a sqlite tracking store, read with
    sqlite3 (no MLflow import); None when the store or experiment is absent."""
    import sqlite3

    db = Path(uri.removeprefix("sqlite:///"))
    if not db.is_file():
        return None
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            row = con.execute(
                "SELECT experiment_id FROM experiments WHERE name = ?", (name,)
            ).fetchone()
    except sqlite3.Error:
        return None
    return None if row is None else str(row[0])


DEBUG_HINT = "carp: run again with --debug (or CARP_DEBUG=1) for the traceback"


def _debug(args: argparse.Namespace | None) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get("CARP_DEBUG") == "1"


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the full traceback of an error",
    )
    p = argparse.ArgumentParser(prog="carp", description=__doc__, parents=[common])
    sub = p.add_subparsers(dest="command", required=True)
    _add = sub.add_parser

    def add_parser(*a, **kw):  # every subcommand also takes --debug
        return _add(*a, parents=[common], **kw)

    sub.add_parser = add_parser  # type: ignore[method-assign]

    s = sub.add_parser("validate", help="check a pipeline file before any compute")
    s.add_argument("file", nargs="?", default=DEFAULT_FILE)
    s.set_defaults(fn=cmd_validate)

    s = sub.add_parser("compile", help="write dvc.yaml from a pipeline file")
    s.add_argument("file", nargs="?", default=DEFAULT_FILE)
    s.add_argument("-o", "--output", default="dvc.yaml")
    s.add_argument("--check", action="store_true", help="fail if dvc.yaml is stale")
    s.set_defaults(fn=cmd_compile)

    s = sub.add_parser("stage", help="run one stage (what dvc repro calls)")
    s.add_argument("name")
    s.add_argument("--file", default=DEFAULT_FILE)
    s.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    s.set_defaults(fn=cmd_stage)

    s = sub.add_parser("run", help="run a pipeline as a Prefect flow")
    s.add_argument("file", nargs="?", default=DEFAULT_FILE)
    s.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    s.add_argument("--force", action="store_true", help="re-run unchanged stages")
    s.add_argument(
        "--max-parallel",
        type=int,
        default=None,
        help="stages run at once (default: the declaration's max_parallel)",
    )
    s.add_argument(
        "--task-runner",
        default=None,
        metavar="process|dask|tcp://HOST:PORT",
        help="where nodes run (default: the declaration's task_runner, else "
        "worker processes); dask needs prefect-dask",
    )
    s.set_defaults(fn=cmd_run)

    s = sub.add_parser("serve", help="serve the flow on a cron schedule (Prefect)")
    s.add_argument("file", nargs="?", default=DEFAULT_FILE)
    s.add_argument("--cron", required=True, help='e.g. "0 3 * * *"')
    s.add_argument("--name", default=None, help="deployment name")
    s.set_defaults(fn=cmd_serve)

    s = sub.add_parser("deploy", help="a Prefect deployment on a work pool")
    s.add_argument("file", nargs="?", default=DEFAULT_FILE)
    s.add_argument("--pool", required=True, help="work pool of the flow runs")
    when = s.add_mutually_exclusive_group()
    when.add_argument("--cron", default=None, help='e.g. "0 3 * * *"')
    when.add_argument("--interval", type=float, default=None, help="seconds")
    s.add_argument("--name", default=None, help="deployment name")
    s.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override, e.g. stages.prune.sparsity=0.6 (repeatable)",
    )
    s.add_argument(
        "--route",
        action="append",
        default=[],
        metavar="KIND_OR_STAGE=POOL",
        help="run those nodes on another work pool, e.g. recover=gpu",
    )
    s.set_defaults(fn=cmd_deploy)

    s = sub.add_parser("plan", help="memory and time each stage needs")
    s.add_argument("file", nargs="?", default=DEFAULT_FILE)
    s.add_argument("--gpus", type=int, default=0, help="GPUs per node (default 0)")
    s.add_argument("--nodes", type=int, default=1, help="nodes (default 1)")
    s.add_argument("--gpu-memory", type=float, default=80.0, help="GiB per GPU")
    s.add_argument(
        "--cpu-memory", type=float, default=None, help="GiB per node (default: this)"
    )
    s.add_argument("--gpu-tflops", type=float, default=100.0, help="sustained/GPU")
    s.add_argument("--cpu-tflops", type=float, default=0.05, help="sustained CPU")
    s.add_argument(
        "--model-config",
        action="append",
        default=[],
        metavar="STAGE=CONFIG",
        help="shape of a model stage: a config.json or llama-2-7b/13b/70b",
    )
    s.set_defaults(fn=cmd_plan)

    s = sub.add_parser("methods", help="list registered methods")
    s.add_argument("kind", nargs="?", default=None)
    s.set_defaults(fn=cmd_methods)

    s = sub.add_parser(
        "report",
        help="print the evaluation and study tables, write them as Markdown and HTML",
    )
    s.add_argument("file", nargs="?", default=DEFAULT_FILE)
    s.add_argument(
        "--html",
        default="reports/report.html",
        help="self-contained HTML page (default: %(default)s)",
    )
    s.add_argument(
        "--md",
        default="reports/report.md",
        help="the same tables as Markdown (default: %(default)s)",
    )
    s.add_argument(
        "--baseline",
        help="compare swept models with this stage (or stage@labels, e.g. "
        "rec_paser@faithful) instead of the declared report.baseline",
    )
    s.set_defaults(fn=cmd_report)
    return p


class _StderrHandler(logging.StreamHandler):
    """Writes to the current ``sys.stderr`` (not the one at creation, which a
    caller such as pytest may have closed since)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where carp runs so that cleanup (temp folders, MLflow
    runs ended KILLED) happens as for Ctrl-C."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


@contextlib.contextmanager
def _sigterm_raises():
    """SIGTERM raises :class:`Terminated` while carp runs (main thread only);
    the previous handler comes back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    log = logging.getLogger("carp")  # only carp's own logger: no library chatter
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("carp: %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    args = parser().parse_args(argv)
    try:
        with _sigterm_raises():
            rc = args.fn(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handlers
        return rc
    except DeclarationError as e:
        print(e, file=sys.stderr)
        return 2
    except UnknownName as e:
        print(f"carp: {e}", file=sys.stderr)
        return 2
    except Terminated:
        print(
            "carp: terminated (SIGTERM); the last good outputs are kept",
            file=sys.stderr,
        )
        return 143
    except KeyboardInterrupt:
        print("carp: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `carp methods | head`: the reader left, not an error
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # no second error at exit
        return 0
    except Exception as e:
        if _debug(args):
            raise
        from pipelines.lineage import LineageError
        from pipelines.runtime import StageError

        if isinstance(e, StageError | LineageError):
            print(f"carp: {e}", file=sys.stderr)
        else:
            print(f"carp {args.command} failed: {_one_line(e)}", file=sys.stderr)
            print(DEBUG_HINT, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
