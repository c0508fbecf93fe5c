"""The stage contract: what every stage kind and method plugs into.

A stage kind is a package ``stages/<kind>`` that ends with one :class:`Kind`
description, ``KIND = Kind(...)``, registered in :mod:`pipelines.kinds`. The
engine reads a kind only through that object: its params, method registry,
``run`` function, the artifact kinds it provides, whether it resumes, whether it
writes plots, how often Prefect may retry it and which extra modules a node runs.

A method module exposes ``Params`` (a subclass of the kind's ``Params``, with
``extra="forbid"``) and the kind's entry function (``Kind.entry``); the method
registry checks both when it loads the module. Method modules import torch & co.
inside functions so that validation stays fast. See docs/stage-contract.md.
"""

from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")

# Kind.sizes: (params, upstream sizes by input field) -> named counts
Sizes = Callable[[Any, Mapping[str, Mapping[str, int]]], Mapping[str, int]]
# Kind.check_inputs: (params, expanded inputs) -> (field, message) pairs
InputCheck = Callable[[Any, Mapping[str, Any]], Iterable[tuple[str, str]]]

# Artifact kinds exchanged between stages (see DESIGN.md, "Artifacts").
ARTIFACT_KINDS = ("world", "dataset", "model", "adapter", "metrics", "tokenizer")


def DataPath(description: str, default: Any = ..., **kw: Any) -> Any:
    """A params field naming local data files or folders (a path or a list)
    whose *content* makes the stage's result: each becomes a DVC dependency of
    the stage and its content digest part of carp's cache key. The CLI checks
    a single path exists before anything runs."""
    extra = {"carp_path": "any", "carp_data": True}
    return Field(default, description=description, json_schema_extra=extra, **kw)


def Input(kind: str, description: str, default: Any = ..., **kw: Any) -> Any:
    """A params field naming upstream stage(s) whose output must provide ``kind``."""
    if kind not in ARTIFACT_KINDS:
        raise ValueError(f"Input: unknown artifact kind '{kind}'")
    extra = {"carp_input": kind}
    return Field(default, description=description, json_schema_extra=extra, **kw)


MAX_SEED = 2**32 - 1  # NumPy's generators take seeds in [0, 2^32)


class StageParams(BaseModel):
    """Fields every stage accepts. Kinds subclass this; methods subclass the kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str = Field(..., description="Registered method name (`carp methods`).")
    seed: int | None = Field(
        None,
        ge=0,
        le=MAX_SEED,
        description="Random seed (0 to 2^32-1, what NumPy accepts); defaults to "
        "the pipeline's `seed`.",
    )

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """A method that narrows an inherited field (``method: Literal["x"]``)
        keeps the field's description unless it gives its own."""
        super().__pydantic_init_subclass__(**kwargs)
        changed = False
        for name, info in cls.model_fields.items():
            if info.description:
                continue
            for base in cls.__mro__[1:]:
                inherited = getattr(base, "model_fields", {}).get(name)
                if inherited is not None and inherited.description:
                    info.description = inherited.description
                    changed = True
                    break
        if changed:
            cls.model_rebuild(force=True)

    def data_paths(self) -> list[str]:
        """The local data paths this node reads (fields made by
        :func:`DataPath`), in field order."""
        out: list[str] = []
        for name, info in type(self).model_fields.items():
            extra = info.json_schema_extra
            if not (isinstance(extra, dict) and extra.get("carp_data")):
                continue
            value = getattr(self, name)
            for path in value if isinstance(value, list | tuple) else [value]:
                if isinstance(path, str) and path not in out:
                    out.append(path)
        return out

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
    summary: str | None = None
    extra_manifest: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunContext:
    """What the engine hands a stage besides params, inputs and out_dir.

    ``seed`` is the node's resolved seed (the one source: the declaration fills
    ``params.seed`` from the pipeline's ``seed``). ``checkpoint_dir`` is a
    persistent folder that survives a failed or killed run (resumable kinds
    only; None otherwise). ``input_fingerprints`` maps each input field to the
    upstream outputs' content fingerprints (a list for list inputs), for caches
    keyed on input content. ``log_metrics`` sends step metrics to MLflow.
    """

    seed: int = 0
    checkpoint_dir: Path | None = None
    name: str = "stage"
    input_fingerprints: dict[str, Any] = field(default_factory=dict)
    log_fn: Callable[[dict[str, float], int], None] | None = None

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.log_fn is not None:
            self.log_fn({k: float(v) for k, v in metrics.items()}, step)

    def progress(
        self, it: Iterable[T], desc: str, total: int | None = None, **kw: Any
    ) -> Iterator[T]:
        from tqdm.auto import tqdm

        return iter(tqdm(it, desc=f"{self.name}: {desc}", total=total, **kw))


class UnknownName(KeyError):
    """A name that is not registered; the message carries "did you mean"."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class RegistryError(TypeError):
    """A registered module does not follow the contract."""


class Registry:
    """Name -> ``"module"`` or ``"module:attribute"``, imported on first use.

    One class for kinds, methods, world families and evaluation suites. When
    ``base`` and/or ``entry`` are given, loading a module checks that it defines
    ``Params`` as a subclass of ``base`` and a callable ``entry``.
    Iterating yields the names in registration order.
    """

    def __init__(
        self,
        what: str,
        entries: dict[str, str],
        base: type | None = None,
        entry: str | None = None,
        plural: str | None = None,
    ) -> None:
        self.what = what
        self.plural = plural or f"{what}s"
        self._entries = dict(entries)
        self.base = base
        self.entry = entry
        self._checked: set[str] = set()

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> dict[str, str]:
        """A copy of name -> target (to re-register in a worker process)."""
        return dict(self._entries)

    def register(self, name: str, target: str) -> None:
        """Add ``name`` -> ``"module"`` or ``"module:attribute"`` (plugins, tests)."""
        self._entries[name] = target
        self._checked.discard(name)

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)
        self._checked.discard(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        # a declaration may hold a list or mapping where a name is meant
        return isinstance(name, str) and name in self._entries

    def target(self, name: str) -> str:
        """The module path (without ``:attribute``) registered as ``name``."""
        self._require(name)
        return self._entries[name].partition(":")[0]

    def suggest(self, name: str) -> str:
        """``did you mean 'x'? known <what>s: a, b, c``."""
        close = difflib.get_close_matches(str(name), self.names(), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return f"{hint}known {self.plural}: {', '.join(self.names())}"

    def unknown(self, name: str) -> str:
        return f"unknown {self.what} '{name}'; {self.suggest(name)}"

    def _require(self, name: str) -> None:
        if name not in self._entries:
            raise UnknownName(self.unknown(name))

    def load(self, name: str) -> Any:
        """The registered module (or attribute), checked against the contract."""
        self._require(name)
        mod_name, _, attr = self._entries[name].partition(":")
        mod = importlib.import_module(mod_name)
        obj = getattr(mod, attr) if attr else mod
        if name not in self._checked:
            self._check(name, obj)
            self._checked.add(name)
        return obj

    def _check(self, name: str, obj: Any) -> None:
        where = f"{self.what} '{name}' ({self._entries[name]})"
        if self.base is not None:
            params = getattr(obj, "Params", None)
            if not (isinstance(params, type) and issubclass(params, self.base)):
                raise RegistryError(
                    f"{where} must define Params as a subclass of "
                    f"{self.base.__module__}.{self.base.__qualname__}"
                )
        if self.entry is not None and not callable(getattr(obj, self.entry, None)):
            raise RegistryError(f"{where} must define a function {self.entry}()")

    def describe(self, name: str) -> str:
        """First sentence of the registered module's docstring (one line)."""
        mod = importlib.import_module(self.target(name))
        para = (mod.__doc__ or "").strip().split("\n\n")[0]
        text = " ".join(para.split())
        # a sentence ends at ". " that is not "et al. " or "e.g. "
        end = re.search(r"(?<!\bal)(?<!e\.g)\.\s", text)
        return text[: end.start() + 1] if end else text


@dataclass(frozen=True)
class Kind:
    """Everything the engine knows about a stage kind, in one place.

    ``provides`` are the artifact kinds every output of this kind satisfies;
    ``extra_provides(params)`` adds kinds that depend on params (a LoRA stage
    with ``save_adapter: true`` also provides an ``adapter``). ``resumable``
    kinds get a persistent ``checkpoints/<node>`` folder (``ctx.checkpoint_dir``),
    declared ``persist: true`` in dvc.yaml. ``plots``: whether the kind writes
    plots (dvc.yaml declares ``reports/<node>/plots`` only then);
    ``plot_props``: DVC plot properties of that folder (``x``, ``y``,
    ``template``), the same for every file in it. ``retries``:
    Prefect retries for these params (only where a retry can succeed, e.g. a
    DeepSpeed launch that resumes). ``code(params)``: modules a node runs beyond
    the kind and its method (loaded by name at run time, e.g. evaluation suites),
    part of its code identity. ``catalogs``: other registries its params name
    entries of (suites, task families), listed by ``carp methods``.
    ``notes``: conventions that hold for every method of the kind (printed by
    ``carp methods`` under the methods).

    Facts the engine asks before anything runs (validation, ``carp plan``):
    ``sizes(params, upstream)``: named counts of what a node holds or does,
    given its inputs' sizes by field (``{}`` where unknown): ``records`` (rows of
    its dataset output), ``scored`` (items an evaluation scores) and, for a
    world, ``eval_per_family`` / ``eval_families``; a method module may define
    its own ``sizes`` function instead). ``budgets``: params that
    count records drawn from an input (field -> input field), checked against
    that input's ``records``. ``trusts_code(params)``: the node runs code that
    ships with a checkpoint (``trust_remote_code``).
    """

    name: str
    params: type[StageParams]
    methods: Registry
    run: Callable[[Any, dict[str, Any], Path, RunContext], StageResult]
    provides: frozenset[str]
    default_method: str | None = None
    resumable: bool = False
    plots: bool = True
    plot_props: Mapping[str, str] | None = None
    extra_provides: Callable[[Any], Iterable[str]] | None = None
    retries: Callable[[Any], int] | None = None
    code: Callable[[Any], Iterable[str]] | None = None
    catalogs: tuple[Registry, ...] = ()
    notes: tuple[str, ...] = ()
    sizes: Sizes | None = None
    budgets: Mapping[str, str] = field(default_factory=dict)
    trusts_code: Callable[[Any], bool] | None = None
    check_inputs: InputCheck | None = None

    def __post_init__(self) -> None:
        bad = set(self.provides) - set(ARTIFACT_KINDS)
        if bad:
            raise RegistryError(f"kind '{self.name}': unknown artifact kinds {bad}")
        if self.default_method is not None and self.default_method not in (
            self.methods
        ):
            raise RegistryError(
                f"kind '{self.name}': default method '{self.default_method}' "
                "is not registered"
            )

    def method(self, name: str) -> Any:
        """The checked method module registered as ``name``."""
        return self.methods.load(name)

    def params_class(self, method: str) -> type[StageParams]:
        return self.method(method).Params

    def outputs(self, params: Any | None = None) -> frozenset[str]:
        """Artifact kinds of a node's output (``params=None``: the static set)."""
        if params is None or self.extra_provides is None:
            return self.provides
        return self.provides | frozenset(self.extra_provides(params))

    def retries_for(self, params: Any) -> int:
        return int(self.retries(params)) if self.retries else 0

    def sizes_of(
        self, params: Any, upstream: Mapping[str, Mapping[str, int]] | None = None
    ) -> dict[str, int]:
        """:attr:`sizes` for a node, else its method module's ``sizes`` function
        (a method may know what its kind cannot); ``{}``: neither declares any."""
        fn = self.sizes or getattr(self.method(params.method), "sizes", None)
        if fn is None:
            return {}
        got = fn(params, upstream or {})
        return {k: int(v) for k, v in got.items() if v is not None}

    def runs_shipped_code(self, params: Any) -> bool:
        return bool(self.trusts_code(params)) if self.trusts_code else False

    def code_modules(self, params: Any) -> list[str]:
        """Module names a node with ``params`` runs: the kind package, its
        method module and ``code(params)``."""
        mods = [self.run.__module__, self.methods.target(params.method)]
        if self.code is not None:
            mods += list(self.code(params))
        return list(dict.fromkeys(mods))
