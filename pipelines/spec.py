"""Pipeline declaration: pydantic models, loading, and whole-file validation.

``validate(raw)`` checks everything before any compute and collects *all*
problems, each with its YAML path and, where one is obvious, the fix.
"""

from __future__ import annotations

import difflib
import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipelines.contract import RegistryError, StageParams, UnknownName
from pipelines.kinds import KINDS, load_kind

STAGE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
ENGINE_KEYS = ("kind", "matrix", "seeds")


class PipelineHeader(BaseModel):
    """Top-level keys of a pipeline file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pipeline: str = Field(..., description="Pipeline name (MLflow experiment, flow).")
    description: str | None = Field(None, description="Free text.")
    seed: int = Field(0, description="Default seed of every stage.")
    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; default sqlite:///mlflow.db at root."
    )
    experiment: str | None = Field(
        None, description="MLflow experiment name; default 'carp-<pipeline>'."
    )
    max_parallel: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="Prefect flow: most nodes run at once; default one per two "
        "CPU cores (at least 1). `carp run --max-parallel N` overrides it.",
    )
    stages: dict[str, Any] = Field(..., description="Named stages, in any order.")


@dataclass(frozen=True)
class Issue:
    """One validation problem, located by its YAML path."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class DeclarationError(Exception):
    """Raised with every :class:`Issue` found in a declaration."""

    def __init__(self, source: str, issues: list[Issue]) -> None:
        self.source = source
        self.issues = issues
        lines = [f"{source}: {len(issues)} error(s)"] + [f"  {i}" for i in issues]
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class StageDecl:
    """A declared stage, validated: one entry per matrix/seed variant."""

    name: str
    kind: str
    variants: tuple[tuple[str, StageParams], ...]  # (label, params); label "" if none
    raw: dict[str, Any]

    @property
    def swept(self) -> bool:
        return bool(self.variants[0][0])


@dataclass(frozen=True)
class Declaration:
    header: PipelineHeader
    stages: dict[str, StageDecl]
    raw: dict[str, Any]
    source: str


def did_you_mean(name: str, options: list[str]) -> str:
    """``; did you mean 'x'?`` for free-form names (keys, stage names)."""
    close = difflib.get_close_matches(name, options, n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a declaration file with ``yaml.safe_load``; errors name the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise DeclarationError(str(path), [Issue("<file>", str(e))]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "<file>"
        raise DeclarationError(
            str(path), [Issue(where, f"invalid YAML: {e}")]
        ) from None
    if not isinstance(raw, dict):
        raise DeclarationError(str(path), [Issue("<root>", "must be a mapping")])
    return raw


def _pydantic_issues(err: ValidationError, prefix: str, cls: type) -> list[Issue]:
    out = []
    fields = sorted(cls.model_fields)
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        path = f"{prefix}.{loc}" if loc else prefix
        if e["type"] == "extra_forbidden":
            key = str(e["loc"][-1])
            msg = f"unknown key '{key}'{did_you_mean(key, fields)}"
            if len(e["loc"]) == 1:
                msg += f" (allowed: {', '.join(fields)})"
        elif e["type"] == "missing":
            msg = "required field is missing"
            info = cls.model_fields.get(str(e["loc"][0]))
            if info is not None and info.description:
                msg += f" ({info.description})"
        elif e["type"] == "value_error":
            msg = e["msg"].removeprefix("Value error, ")
            field, sep, rest = msg.partition(": ")
            if sep and field in cls.model_fields and not loc:
                # a model-level check that names its field: report it there
                path, msg = f"{prefix}.{field}", rest
            elif sep and field == loc.rsplit(".", 1)[-1]:
                msg = rest
        else:
            msg = e["msg"]
            if "input" in e and not isinstance(e["input"], dict | list):
                msg += f" (got {e['input']!r})"
        out.append(Issue(path, msg))
    return out


def _variants(
    name: str, body: dict[str, Any], fields: set[str], issues: list[Issue]
) -> list[tuple[str, dict[str, Any]]]:
    """Expand ``matrix`` and ``seeds`` into (label, overrides) pairs."""
    matrix = body.get("matrix") or {}
    seeds = body.get("seeds")
    path = f"stages.{name}"
    axes: list[list[tuple[str, dict[str, Any]]]] = []
    if not isinstance(matrix, dict):
        issues.append(Issue(f"{path}.matrix", "must be a mapping of param -> list"))
        matrix = {}
    for key, values in matrix.items():
        if key not in fields:
            issues.append(
                Issue(
                    f"{path}.matrix.{key}",
                    f"not a param of this stage"
                    f"{did_you_mean(str(key), sorted(fields))}",
                )
            )
            continue
        if key in body:
            issues.append(
                Issue(
                    f"{path}.matrix.{key}",
                    f"'{key}' is both a param and a matrix axis; keep one",
                )
            )
        if not isinstance(values, list) or not values:
            issues.append(Issue(f"{path}.matrix.{key}", "must be a non-empty list"))
            continue
        axes.append([(_label(v), {key: v}) for v in values])
    if seeds is not None:
        if (
            not isinstance(seeds, list)
            or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
        ):
            issues.append(Issue(f"{path}.seeds", "must be a non-empty list of ints"))
        else:
            axes.append([(f"s{s}", {"seed": s}) for s in seeds])
    if not axes:
        return [("", {})]
    out = []
    for combo in itertools.product(*axes):
        label = "-".join(lbl for lbl, _ in combo)
        merged: dict[str, Any] = {}
        for _, over in combo:
            merged.update(over)
        out.append((label, merged))
    labels = [lbl for lbl, _ in out]
    if len(set(labels)) != len(labels):
        issues.append(
            Issue(
                f"{path}.matrix",
                "matrix values give duplicate variant names; use distinct values",
            )
        )
    return out


def _label(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", str(value)).strip("_") or "x"


def _method_classes(
    name: str, body: dict[str, Any], issues: list[Issue]
) -> dict[str, type[StageParams]] | None:
    """Resolve kind + method(s) to Params classes: one per method, since a
    ``matrix`` may sweep ``method`` itself. ``None`` when nothing resolves."""
    path = f"stages.{name}"
    kind_name = body.get("kind")
    if kind_name is None:
        issues.append(Issue(f"{path}.kind", f"required; one of {', '.join(KINDS)}"))
        return None
    if not isinstance(kind_name, str) or kind_name not in KINDS:
        issues.append(Issue(f"{path}.kind", KINDS.unknown(str(kind_name))))
        return None
    kind = load_kind(kind_name)
    matrix = body.get("matrix") if isinstance(body.get("matrix"), dict) else {}
    swept = matrix.get("method")
    if isinstance(swept, list) and swept:
        methods = [(f"{path}.matrix.method[{i}]", m) for i, m in enumerate(swept)]
    else:
        methods = [(f"{path}.method", body.get("method", kind.default_method))]
    out: dict[str, type[StageParams]] = {}
    for where, method in methods:
        if method is None:
            issues.append(
                Issue(where, f"required; known methods: {', '.join(kind.methods)}")
            )
            continue
        if not isinstance(method, str):
            issues.append(Issue(where, f"must be a method name (got {method!r})"))
            continue
        try:
            out[method] = kind.params_class(method)
        except (UnknownName, RegistryError) as e:
            issues.append(Issue(where, str(e)))
    wanted = {m for _, m in methods if isinstance(m, str)}
    return out if out and len(out) == len(wanted) == len(methods) else None


def _validate_stage(
    name: str, body: Any, seed: int, issues: list[Issue]
) -> StageDecl | None:
    path = f"stages.{name}"
    if not STAGE_NAME.match(name):
        issues.append(
            Issue(
                path,
                "stage names start with a letter and use only "
                "letters, digits, '_' and '-' ('@' marks variants)",
            )
        )
    if not isinstance(body, dict):
        issues.append(Issue(path, "must be a mapping with at least 'kind'"))
        return None
    classes = _method_classes(name, body, issues)
    if classes is None:
        return None
    fields = {f for cls in classes.values() for f in cls.model_fields}
    base = {k: v for k, v in body.items() if k not in ENGINE_KEYS}
    base.setdefault("method", next(iter(classes)))
    variants = []
    seen: set[str] = set()
    inputs = {f for cls in classes.values() for f in cls.input_fields()}
    for key in sorted(inputs & set(body.get("matrix") or {})):
        issues.append(
            Issue(
                f"{path}.matrix.{key}",
                f"'{key}' names an upstream stage and cannot be swept here; "
                "sweep the upstream stage instead (its variants fan out)",
            )
        )
    expanded = _variants(name, body, fields, issues)
    method_swept = len(classes) > 1 or "method" in (body.get("matrix") or {})
    for label, over in expanded:
        values = {**base, **over}
        if method_swept:
            # a stage-level key applies to the swept methods that accept it; a
            # key no swept method accepts stays, and is reported as unknown
            own = classes[str(values["method"])].model_fields
            values = {k: v for k, v in values.items() if k in own or k not in fields}
        if values.get("seed") is None:
            values["seed"] = seed
        cls = classes[str(values["method"])]
        try:
            variants.append((label, cls.model_validate(values)))
        except ValidationError as err:
            for issue in _pydantic_issues(err, path, cls):
                if str(issue) not in seen:
                    seen.add(str(issue))
                    issues.append(issue)
    if len(variants) != len(expanded):
        return None
    return StageDecl(name, body["kind"], tuple(variants), body)


def input_refs(params: StageParams) -> list[tuple[str, str, str]]:
    """``(field, upstream stage, needed artifact kind)`` for every set input,
    with ``field[i]`` for the items of a list input."""
    out = []
    for field, need in type(params).input_fields().items():
        value = getattr(params, field)
        if isinstance(value, list | tuple):
            out += [(f"{field}[{i}]", ref, need) for i, ref in enumerate(value)]
        elif value is not None:
            out.append((field, value, need))
    return out


def provided(decl: StageDecl) -> frozenset[str]:
    """Artifact kinds every variant of a declared stage provides."""
    kind = load_kind(decl.kind)
    sets = [kind.outputs(params) for _, params in decl.variants]
    return frozenset.intersection(*sets)


def _check_inputs(
    stages: dict[str, StageDecl], declared: dict[str, Any], issues: list[Issue]
) -> None:
    """Input names exist and their artifact kinds fit, per variant (methods
    declare their own inputs). ``declared`` maps every declared stage to its
    kind, so a stage whose own params are invalid is still checked as an input;
    its params-dependent outputs are then unknown and only its static ones count."""
    names = sorted(declared)
    seen: set[str] = set()
    for decl in stages.values():
        for _, params in decl.variants:
            for field, ref, need in input_refs(params):
                path = f"stages.{decl.name}.{field}"
                if ref == decl.name:
                    msg = "a stage cannot consume its own output"
                elif ref not in declared:
                    msg = f"no stage named '{ref}'{did_you_mean(str(ref), names)}"
                elif not (isinstance(declared[ref], str) and declared[ref] in KINDS):
                    continue  # its unknown kind is reported on its own path
                else:
                    up_kind = declared[ref]
                    has = (
                        provided(stages[ref])
                        if ref in stages
                        else load_kind(up_kind).provides
                    )
                    if need in has:
                        continue
                    article = "an" if need[0] in "aeiou" else "a"
                    msg = (
                        f"'{ref}' ({up_kind}) outputs {'/'.join(sorted(has))}, "
                        f"but {article} {need} is needed"
                    )
                if f"{path}: {msg}" not in seen:
                    seen.add(f"{path}: {msg}")
                    issues.append(Issue(path, msg))


def upstream_names(decl: StageDecl) -> list[str]:
    """Upstream stages any variant of ``decl`` reads, in field order."""
    out: list[str] = []
    for _, params in decl.variants:
        for _, ref, _ in input_refs(params):
            if ref not in out:
                out.append(ref)
    return out


def topo_order(stages: dict[str, StageDecl], issues: list[Issue]) -> list[str]:
    """Stage names in dependency order (declaration order among equals)."""
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = trail[trail.index(name) :] + [name]
            issues.append(
                Issue(f"stages.{name}", "dependency cycle: " + " -> ".join(cycle))
            )
            return
        state[name] = 1
        for up in upstream_names(stages[name]):
            if up in stages:
                visit(up, trail + [name])
        state[name] = 2
        order.append(name)

    for name in stages:
        visit(name, [])
    return order


def validate(raw: dict[str, Any], source: str = "<declaration>") -> Declaration:
    """Validate a whole declaration; raise :class:`DeclarationError` with all issues."""
    issues: list[Issue] = []
    try:
        header = PipelineHeader.model_validate(raw)
    except ValidationError as err:
        issues.extend(_pydantic_issues(err, "", PipelineHeader))
        for issue in issues:
            object.__setattr__(issue, "path", issue.path.lstrip(".") or "<root>")
        header = None
    stages_raw = raw.get("stages") if isinstance(raw.get("stages"), dict) else {}
    if header is not None and not stages_raw:
        issues.append(Issue("stages", "declare at least one stage"))
    seed = raw.get("seed", 0) if isinstance(raw.get("seed"), int) else 0
    stages: dict[str, StageDecl] = {}
    for name, body in stages_raw.items():
        decl = _validate_stage(str(name), body, seed, issues)
        if decl is not None:
            stages[str(name)] = decl
    kinds = {
        str(n): b.get("kind") if isinstance(b, dict) else None
        for n, b in stages_raw.items()
    }
    _check_inputs(stages, kinds, issues)
    topo_order(stages, issues)
    if issues:
        raise DeclarationError(source, issues)
    assert header is not None
    return Declaration(header, stages, raw, source)


def load(path: Path | str) -> Declaration:
    """Load and validate a declaration file."""
    return validate(load_yaml(Path(path)), source=str(path))
