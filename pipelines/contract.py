"""The stage contract: what every stage kind and method plugs into.

A stage kind is a package ``stages/<kind>`` exposing

* ``PROVIDES``: the artifact kinds its output folder satisfies (``{"model"}``),
* ``METHODS``: a :class:`Registry` of method name -> module path (lazy import),
* ``run(params, inputs, out_dir, ctx) -> StageResult``.

A method module exposes ``Params`` (a subclass of the kind's base params, with
``extra="forbid"``) and whatever the kind's ``run`` calls on it. Method modules
import torch & co. inside functions so that validation stays fast.
"""

from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")

# Artifact kinds exchanged between stages (see DESIGN.md, "Artifacts").
ARTIFACT_KINDS = ("world", "dataset", "model", "adapter", "metrics", "tokenizer")


def Input(kind: str, description: str, default: Any = ..., **kw: Any) -> Any:
    """A params field naming upstream stage(s) whose output must provide ``kind``."""
    extra = {"carp_input": kind}
    return Field(default, description=description, json_schema_extra=extra, **kw)


class StageParams(BaseModel):
    """Fields every stage accepts. Kinds subclass this; methods subclass the kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str = Field(..., description="Registered method name (`carp methods`).")
    seed: int | None = Field(
        None, description="Random seed; defaults to the pipeline's `seed`."
    )

    @classmethod
    def input_fields(cls) -> dict[str, str]:
        """Map of field name -> required artifact kind, for fields that are inputs."""
        out = {}
        for name, info in cls.model_fields.items():
            extra = info.json_schema_extra
            if isinstance(extra, dict) and "carp_input" in extra:
                out[name] = str(extra["carp_input"])
        return out


@dataclass
class StageResult:
    """What a stage returns to the engine.

    ``metrics`` is flat (name -> number) and lands in ``metrics.json``, DVC and
    MLflow. ``plots`` are paths relative to the output folder (CSV/JSON for
    ``dvc plots``, PNG for MLflow). ``datasets`` are relative JSONL paths logged
    with ``mlflow.log_input``. ``reports`` are files that describe the run (they
    may hold timings); like plots they are logged to MLflow and left out of the
    output fingerprint, which covers only the deterministic artifact. ``summary``
    is printed at the end of the stage.
    """

    metrics: dict[str, float] = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    reports: list[str] = field(default_factory=list)
    artifact: str = "model"
    summary: str | None = None
    extra_manifest: dict[str, Any] = field(default_factory=dict)


class RunContext:
    """Services the engine hands a stage: step metrics, progress bars, a seed,
    and a persistent checkpoint folder that survives a failed or killed run.

    The base implementation logs nowhere; the engine passes one wired to MLflow.
    """

    def __init__(
        self,
        seed: int = 0,
        checkpoint_dir: Path | None = None,
        log_fn: Callable[[dict[str, float], int], None] | None = None,
        name: str = "stage",
    ) -> None:
        self.seed = seed
        self.checkpoint_dir = checkpoint_dir
        self.name = name
        self._log_fn = log_fn

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self._log_fn is not None:
            self._log_fn({k: float(v) for k, v in metrics.items()}, step)

    def progress(
        self, it: Iterable[T], desc: str, total: int | None = None, **kw: Any
    ) -> Iterator[T]:
        from tqdm.auto import tqdm

        return iter(tqdm(it, desc=f"{self.name}: {desc}", total=total, **kw))


class UnknownMethod(KeyError):
    pass


class Registry:
    """Method name -> ``module`` path, imported on first use.

    ``carp methods`` lists ``name: first docstring line`` for each entry.
    """

    def __init__(self, kind: str, entries: dict[str, str]) -> None:
        self.kind = kind
        self._entries = dict(entries)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def suggest(self, name: str) -> str:
        close = difflib.get_close_matches(name, self.names(), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return f"{hint}known {self.kind} methods: {', '.join(self.names())}"

    def load(self, name: str) -> Any:
        if name not in self._entries:
            raise UnknownMethod(
                f"unknown {self.kind} method '{name}': " + self.suggest(name)
            )
        return importlib.import_module(self._entries[name])

    def describe(self, name: str) -> str:
        """First sentence of the method module's docstring (one line)."""
        para = (self.load(name).__doc__ or "").strip().split("\n\n")[0]
        text = " ".join(para.split())
        # a sentence ends at ". " that is not "et al. " or "e.g. "
        end = re.search(r"(?<!\bal)(?<!e\.g)\.\s", text)
        return text[: end.start() + 1] if end else text
