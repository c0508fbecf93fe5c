"""The HTML report: built from a pipeline's evaluate and training outputs, one
self-contained page (every image inline, nothing fetched from the network)."""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

from pipelines.runtime import Layout
from pipelines.spec import ReportSpec
from stages.evaluate.html import write_pipeline_report
from stages.evaluate.report import markdown_table, write_csv


class Refs(HTMLParser):
    """Every URL-bearing attribute and tag of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.urls += [v for k, v in attrs if k in {"src", "href", "srcset"} and v]


def fake_run(root: Path) -> SimpleNamespace:
    """Folders as `dvc repro` leaves them: an evaluate table + CSV, a loss CSV."""
    models = ["base", "prune"]
    results = {
        "base": {"em/add": 0.9, "em/add_lo": 0.8, "em/add_hi": 0.95, "em/mean": 0.9},
        "prune": {"em/add": 0.6, "em/add_lo": 0.5, "em/add_hi": 0.7, "em/mean": 0.6},
    }
    diffs = {"prune-vs-base": {"em/add": -0.3, "em/add_lo": -0.4, "em/add_hi": 0.01}}
    out = root / "artifacts" / "eval"
    out.mkdir(parents=True)
    (out / "table.md").write_text(markdown_table(results, models, diffs))
    write_csv(results, models, out / "results.csv")
    plots = root / "reports" / "recover" / "plots"
    plots.mkdir(parents=True)
    (plots / "loss.csv").write_text("step,loss\n1,2.0\n2,1.5\n3,1.2\n")
    sel = root / "artifacts" / "sel"
    sel.mkdir(parents=True)
    meta = {
        "count": 12,
        "shape": "chat",
        "source": "data/chats.jsonl",
        "sha256": "ab" * 32,
    }
    (sel / "dataset.json").write_text(json.dumps(meta))
    inputs = {
        "base": {},
        "recover": {"model": "base", "data": "sel"},
        "eval": {"models": ["base", "recover"]},
    }
    nodes = {
        n: SimpleNamespace(name=n, kind=k, inputs=inputs[n])
        for n, k in [("base", "pretrain"), ("recover", "recover"), ("eval", "evaluate")]
    }
    header = SimpleNamespace(pipeline="demo", report=ReportSpec())
    return SimpleNamespace(nodes=nodes, decl=SimpleNamespace(header=header))


def test_report_page_is_self_contained_with_tables_and_plots(tmp_path: Path):
    graph = fake_run(tmp_path)
    page_path = write_pipeline_report(graph, Layout(tmp_path), tmp_path / "r.html")
    page = page_path.read_text()
    refs = Refs()
    refs.feed(page)
    assert refs.urls and all(u.startswith("data:image/png;base64,") for u in refs.urls)
    assert not refs.tags & {"script", "link", "iframe", "object"}
    # the Data section names what each stage read: recover's data is sel's
    assert "<h2>Data</h2>" in page
    assert "data/chats.jsonl" in page and "abababababab" in page
    assert "http://" not in page and "https://" not in page
    for u in refs.urls:  # two figures: per-family bars and the loss curve
        assert base64.b64decode(u.split(",", 1)[1])[:4] == b"\x89PNG"
    assert len(refs.urls) == 2
    assert "<td>0.900 [0.80, 0.95]</td>" in page
    assert '<td class="ns">-0.300 [-0.40, +0.01] n.s.</td>' in page
    assert "<b>mean EM</b>" in page


def test_report_leaves_out_another_pipelines_outputs(tmp_path: Path):
    graph = fake_run(tmp_path)
    (tmp_path / "artifacts" / "eval" / "carp.json").write_text('{"pipeline": "x"}')
    page = write_pipeline_report(graph, Layout(tmp_path), tmp_path / "r.html")
    assert "0.900" not in page.read_text()
