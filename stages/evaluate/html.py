"""A self-contained HTML report: evaluation tables, bar charts with intervals and
training-loss curves, PNGs embedded as base64 (no CDN, no scripts: it opens
offline and can be mailed as one file).

``build_page`` is pure (sections in, HTML out); ``pipeline_sections`` reads a
run's folders: ``artifacts/<eval>/table.md`` and ``results.csv`` of evaluate
nodes, ``reports/<node>/plots/*loss.csv`` of training nodes.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from dataclasses import dataclass, field
from pathlib import Path

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.6em 0 1.2em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right;white-space:nowrap}
td:first-child,th:first-child{text-align:left}
th{background:#f3f3f3} .ns{color:#999} img{max-width:100%}
h1{font-size:1.5em} h2{font-size:1.25em;margin-top:1.6em} p.note{color:#555}
"""


@dataclass
class Section:
    title: str
    markdown: str = ""  # carp's pipe tables and plain paragraphs
    images: list[tuple[str, bytes]] = field(default_factory=list)  # (caption, PNG)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _inline(text: str) -> str:
    out = html.escape(text)
    while out.count("**") >= 2:
        out = out.replace("**", "<b>", 1).replace("**", "</b>", 1)
    while out.count("*") >= 2:
        out = out.replace("*", "<i>", 1).replace("*", "</i>", 1)
    return out


def markdown_to_html(text: str) -> str:
    """carp's markdown (pipe tables, paragraphs) as HTML; n.s. cells greyed."""
    out, table = [], []

    def flush() -> None:
        if not table:
            return
        real = [r for r in table if not set(r) <= set("|-: ")]
        if not real:
            table.clear()
            return
        head, *rows = real
        out.append(
            "<table><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in _cells(head))
        )
        for r in rows:
            tds = [
                f'<td class="ns">{_inline(c)}</td>'
                if c.endswith("n.s.")
                else f"<td>{_inline(c)}</td>"
                for c in _cells(r)
            ]
            out.append("<tr>" + "".join(tds) + "</tr>")
        out.append("</table>")
        table.clear()

    for line in text.splitlines():
        if line.lstrip().startswith("|"):
            table.append(line)
            continue
        flush()
        if line.strip():
            out.append(f'<p class="note">{_inline(line)}</p>')
    flush()
    return "\n".join(out)


def png(fig) -> bytes:
    """A matplotlib figure as PNG bytes (no timestamp metadata)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def build_page(title: str, sections: list[Section], footer: str = "") -> str:
    """One HTML document; images inline as ``data:image/png;base64``."""
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for s in sections:
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.markdown:
            parts.append(markdown_to_html(s.markdown))
        for caption, data in s.images:
            b64 = base64.b64encode(data).decode("ascii")
            alt = html.escape(caption)
            parts.append(
                f'<figure><img alt="{alt}" src="data:image/png;base64,{b64}">'
                f"<figcaption>{alt}</figcaption></figure>"
            )
    if footer:
        parts.append(f'<p class="note">{_inline(footer)}</p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def results_from_csv(path: Path) -> tuple[list[str], dict[str, dict[str, float]]]:
    """(models in order, model -> em/<family>[_lo|_hi]) from ``results.csv``."""
    models: list[str] = []
    results: dict[str, dict[str, float]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            m = row["model"]
            if m not in results:
                models.append(m)
                results[m] = {}
            key = f"em/{row['family']}"
            results[m][key] = float(row["em"])
            for b in ("_lo", "_hi"):
                if row.get(f"em{b}"):
                    results[m][key + b] = float(row[f"em{b}"])
    return models, results


def loss_figure(curves: dict[str, Path]) -> bytes:
    """Training loss against optimizer step, one line per node."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.8))
    for name, path in curves.items():
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("loss")]
        ax.plot(
            [float(r["step"]) for r in rows],
            [float(r["loss"]) for r in rows],
            label=name,
        )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return png(fig)


def pipeline_sections(
    evaluations: dict[str, Path], curves: dict[str, Path]
) -> list[Section]:
    """Sections for evaluate output folders (by node) and loss CSVs (by node)."""
    from stages.evaluate.report import bar_chart

    sections = []
    for node, folder in evaluations.items():
        s = Section(f"Evaluation: {node}", (folder / "table.md").read_text())
        if (folder / "results.csv").exists():
            models, results = results_from_csv(folder / "results.csv")
            buf = io.BytesIO()
            bar_chart(results, models, buf)
            s.images.append(("exact match per family, 95% intervals", buf.getvalue()))
        sections.append(s)
    if curves:
        sections.append(
            Section(
                "Training",
                "Training loss against optimizer step (plotted in the HTML page): "
                + ", ".join(f"`{name}`" for name in curves),
                images=[("training loss", loss_figure(curves))],
            )
        )
    return sections


FOOTER = (
    "Intervals: 95%. A difference marked n.s. has an interval that contains 0: "
    "the run does not tell the two models apart."
)


@dataclass
class PipelineReport:
    """What ``carp report`` shows of one declaration's run."""

    title: str
    sections: list[Section]
    tables: int  # evaluate tables among the sections
    skipped: list[str]  # output folders that hold another declaration's results

    def markdown(self) -> str:
        body = "".join(
            f"## {s.title}\n\n{s.markdown.rstrip()}\n\n" for s in self.sections
        )
        return f"# {self.title}\n\n{body}{FOOTER}\n"

    def html(self) -> str:
        return build_page(self.title, self.sections, footer=FOOTER)


def pipeline_report(graph, layout, baseline: str | None = None) -> PipelineReport:
    """The report of a pipeline run (``graph``: a built declaration,
    ``layout``: its folders) from whatever outputs of this pipeline exist: an
    output folder another declaration wrote is left out and named in
    ``skipped``. Evaluation tables, the study tables (``stages.evaluate.study``)
    and training-loss curves; ``baseline`` overrides the declared
    ``report.baseline``."""
    import json

    from stages.evaluate.study import study_sections

    mine = graph.decl.header.pipeline
    skipped: list[str] = []
    seen: dict[str, bool] = {}

    def owned(node) -> bool:
        if node.name not in seen:
            seen[node.name] = _owned(node)
        return seen[node.name]

    def _owned(node) -> bool:
        manifest = layout.out(node.name) / "carp.json"
        owner = (
            json.loads(manifest.read_text()).get("pipeline")
            if manifest.exists()
            else None
        )
        if owner is not None and owner != mine:
            skipped.append(
                f"{layout.out(node.name)} holds pipeline {owner!r}'s results, not "
                f"{mine!r}'s: not shown"
            )
            return False
        return True

    evaluations, curves = {}, {}
    for node in graph.nodes.values():
        out = layout.out(node.name)
        if node.kind == "evaluate" and (out / "table.md").exists() and owned(node):
            evaluations[node.name] = out
        for csv_file in sorted((layout.report(node.name) / "plots").glob("*loss.csv")):
            curves[
                node.name if csv_file.stem == "loss" else f"{node.name}/{csv_file.stem}"
            ] = csv_file
    sections = pipeline_sections(evaluations, curves)
    data = data_section(graph, layout, owned)
    if data is not None:
        sections.append(data)
    studies = [
        Section(title, text)
        for title, text in study_sections(graph, layout, owned, baseline)
    ]
    sections[len(evaluations) : len(evaluations)] = studies
    return PipelineReport(f"carp report: {mine}", sections, len(evaluations), skipped)


def data_section(graph, layout, owned) -> Section | None:
    """ "Data": every dataset a stage read (or a dataset stage wrote), with
    its upstream stage, records, shape, source and content digest, from the
    artifacts' ``dataset.json``."""
    import json

    def meta(name: str) -> dict | None:
        f = layout.out(name) / "dataset.json"
        try:
            return json.loads(f.read_text()) if f.is_file() else None
        except ValueError:
            return None

    rows = []
    for node in graph.nodes.values():
        if not owned(node):
            continue
        reads = [("(writes)", node.name)] if node.kind == "dataset" else []
        for name, ref in node.inputs.items():
            reads += [(name, r) for r in (ref if isinstance(ref, list) else [ref])]
        for name, ref in reads:
            info = meta(ref)
            if info is None:
                continue
            source = str(info.get("source", "?")).replace("|", "/")[:80]
            rows.append(
                f"| {node.name} | {name} | {ref} | {info.get('count', '?')} | "
                f"{info.get('shape', 'instruction')} | {source} | "
                f"`{str(info.get('sha256', '?'))[:12]}` |"
            )
    if not rows:
        return None
    head = (
        "Every dataset a stage read: its upstream stage, records, shape, source "
        "and content digest (dataset.json).\n\n"
        "| stage | input | from | records | shape | source | digest |\n"
        "|---|---|---|---|---|---|---|\n"
    )
    return Section("Data", head + "\n".join(rows) + "\n")


def write_text_atomic(path: Path, text: str) -> Path:
    """``path`` replaced in one step (a temp file beside it, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def write_pipeline_report(graph, layout, path: Path) -> Path:
    """``path``: the HTML page of a pipeline run; returns ``path``."""
    return write_text_atomic(path, pipeline_report(graph, layout).html())
