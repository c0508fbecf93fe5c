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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipelines.contract import MAX_SEED, RegistryError, StageParams, UnknownName
from pipelines.kinds import KINDS, load_kind

STAGE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")  # fullmatch: no "\n"
MAX_NODE_NAME = 160  # stage@variant: a folder name, with room for .tmp-/.trash-
URI_SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "mssql")
ENGINE_KEYS = ("kind", "matrix", "seeds")
# Top-level keys a stage inherits when it does not set its own (only stages
# whose params have the field). A stage that inherits one depends on it: DVC
# lists the key as a param of that stage, and its resolved value is part of the
# node's params, hence of carp's cache key (see StageDecl.inherits).
STAGE_DEFAULTS = ("seed", "template")


class ReportSpec(BaseModel):
    """``report:``: what `carp report` adds to the evaluation tables of a study
    (read by the report only: no stage's fingerprint depends on it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    baseline: str | None = Field(
        None,
        description="A swept model stage (e.g. `rec_random`, or `stage@labels` "
        "such as `rec_paser@faithful`): every other swept model of an evaluate "
        "stage is compared with this stage's variant of the same budget, seed and "
        "other labels (paired bootstrap over seeds and records, overall and per "
        "family).",
    )
    bootstrap: int = Field(
        2000, strict=True, ge=100, le=100_000, description="Bootstrap replicates."
    )


class PipelineHeader(BaseModel):
    """Top-level keys of a pipeline file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pipeline: str = Field(..., description="Pipeline name (MLflow experiment, flow).")
    description: str | None = Field(None, description="Free text.")
    seed: int = Field(
        0,
        strict=True,
        ge=0,
        le=MAX_SEED,
        description="Default seed of every stage (0 to 2^32-1).",
    )
    template: str = Field(
        "carp",
        min_length=1,
        description="Default prompt template of every stage that renders records "
        "(carp | alpaca | chat | a Jinja string); a stage's own `template` wins.",
    )
    tracking_uri: str | None = Field(
        None,
        description="MLflow tracking URI (sqlite:///, file:///, http(s)://, "
        "postgresql://, mysql://, mssql://, databricks); default "
        "sqlite:///mlflow.db at the root.",
    )
    experiment: str | None = Field(
        None, description="MLflow experiment name; default 'carp-<pipeline>'."
    )
    max_parallel: int | None = Field(
        None,
        strict=True,
        ge=1,
        le=1024,
        description="Prefect flow: most nodes run at once; default one per two "
        "CPU cores (at least 1). `carp run --max-parallel N` overrides it.",
    )
    task_runner: str | None = Field(
        None,
        pattern=r"^(process|dask|tcp://[A-Za-z0-9.\-]+:[0-9]{1,5})$",
        description="Prefect task runner: `process` (default: worker processes), "
        "`dask` (a local Dask cluster of max_parallel workers) or "
        "`tcp://HOST:PORT` (a running Dask scheduler); Dask needs the `dask` extra "
        "(prefect-dask). `carp run --task-runner` overrides it.",
    )
    report: ReportSpec = Field(
        default_factory=ReportSpec,
        description="Study tables `carp report` adds (see ReportSpec).",
    )
    stages: dict[str, Any] = Field(..., description="Named stages, in any order.")

    @field_validator("tracking_uri")
    @classmethod
    def _uri(cls, v: str | None) -> str | None:
        if v is not None:
            check_tracking_uri(v)
        return v

    @field_validator("template")
    @classmethod
    def _template(cls, v: str) -> str:
        from stages.common.templates import check_template

        return str(check_template(v))


def check_tracking_uri(uri: str) -> None:
    """Refuse a tracking URI MLflow would misread (it takes any string as a
    folder); ``ValueError`` names the accepted forms."""
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    scheme = parts.scheme.split("+")[0]
    ok = not re.search(r"\s", uri) and (
        uri.startswith("sqlite:///")
        or (scheme == "file" and parts.path.startswith("/"))
        or (scheme in ("http", "https") and bool(parts.hostname))
        or (scheme in URI_SCHEMES[4:] and bool(parts.netloc))
        or scheme == "databricks"
        or uri == "databricks"
    )
    if not ok:
        raise ValueError(
            f"not an MLflow tracking URI: {uri!r}; use sqlite:///<file>.db, "
            "file:///<abs folder>, http(s)://host:port, postgresql://..., "
            "mysql://..., mssql://... or databricks"
        )


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
    inherits: tuple[str, ...] = ()  # STAGE_DEFAULTS some variant took from the top

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


# Bounds on what a declaration may expand to, so a hostile file cannot make
# validation (or the declaration hash a stage computes) hang or eat memory.
MAX_DEPTH = 64  # nested mappings/lists
MAX_NODES = 200_000  # YAML nodes after alias expansion
MAX_FILE_BYTES = 4 << 20
# libyaml when PyYAML has it (a 2,000-stage file parses in a fraction of the time)
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Refused(Exception):
    """A declaration shape carp does not load (depth, size, duplicate keys)."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(message)
        self.where = where


def _check_events(text: str) -> None:
    """Nesting depth, from the parser's event stream (iterative, unlike the
    composer, so a 5000-deep file cannot exhaust the Python stack)."""
    depth = 0
    try:
        for event in yaml.parse(text, Loader=SAFE_LOADER):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    _too_deep(event.start_mark)
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.MarkedYAMLError as e:  # libyaml stops at its own depth limit
        if "nesting depth" not in str(e.problem):
            raise
        _too_deep(e.problem_mark)


def _too_deep(mark: Any) -> None:
    line = mark.line + 1 if mark else 0
    raise _Refused(
        f"line {line}",
        f"nested more than {MAX_DEPTH} levels deep; a declaration needs a handful",
    )


def _key_text(node: yaml.Node) -> str:
    return node.value if isinstance(node, yaml.ScalarNode) else "<complex key>"


def _check_nodes(root: yaml.Node) -> None:
    """Duplicate keys at any level, and the size after alias expansion (an
    alias counts as a full copy of what it names, as validation will see it)."""
    size: dict[int, int] = {}
    stack: list[tuple[yaml.Node, str, bool]] = [(root, "", False)]
    active: set[int] = set()
    while stack:
        node, path, done = stack.pop()
        if isinstance(node, yaml.ScalarNode):
            size[id(node)] = 1
            continue
        if done:
            active.discard(id(node))
            kids = _children(node)
            total = 1 + sum(size[id(k)] for k, _ in kids)
            if total > MAX_NODES:
                raise _Refused(
                    path or "<root>",
                    f"expands to more than {MAX_NODES:,} values (YAML aliases); "
                    "write the values out or use fewer aliases",
                )
            size[id(node)] = total
            continue
        if id(node) in size:
            continue
        if id(node) in active:
            raise _Refused(path or "<root>", "a YAML alias refers to itself")
        active.add(id(node))
        stack.append((node, path, True))
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for k, _ in node.value:
                key = _key_text(k)
                if key != "<<" and key in seen:
                    line = k.start_mark.line + 1 if k.start_mark else 0
                    where = f"{path}.{key}" if path else key
                    raise _Refused(
                        where,
                        f"duplicate key '{key}' (line {line}); a later value would "
                        "silently replace the earlier one — keep one",
                    )
                seen.add(key)
        for child, cpath in _children(node):
            if id(child) not in size:
                stack.append((child, cpath if not path else f"{path}.{cpath}", False))


def _children(node: yaml.Node) -> list[tuple[yaml.Node, str]]:
    if isinstance(node, yaml.SequenceNode):
        return [(v, f"[{i}]") for i, v in enumerate(node.value)]
    out = []
    for k, v in node.value:
        out += [(k, _key_text(k)), (v, _key_text(k))]
    return out


def parse_yaml(text: str) -> Any:
    """``yaml.safe_load`` with bounds: depth, alias expansion, duplicate keys."""
    _check_events(text)
    loader = SAFE_LOADER(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_nodes(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a declaration file with bounded ``yaml.safe_load``; errors name the file."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise DeclarationError(str(path), [Issue("<file>", str(e))]) from None
    if len(data) > MAX_FILE_BYTES:
        raise DeclarationError(
            str(path), [Issue("<file>", f"larger than {MAX_FILE_BYTES >> 20} MiB")]
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DeclarationError(
            str(path),
            [Issue("<file>", f"not UTF-8 text (byte {e.start}); save it as UTF-8")],
        ) from None
    try:
        raw = parse_yaml(text)
    except _Refused as e:
        raise DeclarationError(str(path), [Issue(e.where, str(e))]) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "<file>"
        raise DeclarationError(
            str(path), [Issue(where, f"invalid YAML: {e}")]
        ) from None
    except RecursionError:
        raise DeclarationError(
            str(path), [Issue("<file>", "too deeply nested to read")]
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
            or not all(
                isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SEED
                for s in seeds
            )
        ):
            issues.append(
                Issue(
                    f"{path}.seeds",
                    f"must be a non-empty list of ints from 0 to {MAX_SEED}",
                )
            )
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


def _is_number_type(annotation: Any) -> bool:
    """int/float, or a union of them with None (``int | None``)."""
    import types
    import typing

    if annotation in (int, float):
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return bool(args) and all(a in (int, float) for a in args)
    return False


def _bool_issues(
    values: dict[str, Any], cls: type[BaseModel], path: str
) -> list[Issue]:
    """``seed: true`` where a number is meant (pydantic would read it as 1)."""
    out = []
    for key, value in values.items():
        info = cls.model_fields.get(key)
        if info is None:
            continue
        ann = info.annotation
        if isinstance(value, bool) and _is_number_type(ann):
            out.append(Issue(f"{path}.{key}", f"a number is needed, not {value}"))
        elif (
            isinstance(value, dict)
            and isinstance(ann, type)
            and issubclass(ann, BaseModel)
        ):
            out += _bool_issues(value, ann, f"{path}.{key}")
    return out


def non_finite(raw: Any) -> list[Issue]:
    """Every ``.inf`` / ``.nan`` in a declaration, by YAML path (iterative)."""
    import math

    out = []
    stack: list[tuple[Any, str]] = [(raw, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            out.append(
                Issue(path or "<root>", f"{value} is not a finite number; give one")
            )
        elif isinstance(value, dict):
            stack += [(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()]
        elif isinstance(value, list):
            stack += [(v, f"{path}[{i}]") for i, v in enumerate(value)]
    return sorted(out, key=lambda i: i.path)


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


def stage_defaults(raw: dict[str, Any]) -> dict[str, Any]:
    """Values of :data:`STAGE_DEFAULTS` stages inherit (the header's defaults
    where the file leaves a key out or gives a value of the wrong type, which
    the header's own validation reports)."""
    out: dict[str, Any] = {}
    for key in STAGE_DEFAULTS:
        info = PipelineHeader.model_fields[key]
        value = raw.get(key, info.default)
        out[key] = value if type(value) is type(info.default) else info.default
    return out


def _validate_stage(
    name: str, body: Any, defaults: dict[str, Any], issues: list[Issue]
) -> StageDecl | None:
    path = f"stages.{name}"
    if not STAGE_NAME.fullmatch(name):
        issues.append(
            Issue(
                path.replace("\n", "\\n"),
                f"bad stage name {name!r}: 1-64 characters, starting with a letter, "
                "only letters, digits, '_' and '-' ('@' marks variants)",
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
    matrix = body.get("matrix") if isinstance(body.get("matrix"), dict) else {}
    for key in sorted(inputs & set(matrix)):
        issues.append(
            Issue(
                f"{path}.matrix.{key}",
                f"'{key}' names an upstream stage and cannot be swept here; "
                "sweep the upstream stage instead (its variants fan out)",
            )
        )
    expanded = _variants(name, body, fields, issues)
    method_swept = len(classes) > 1 or "method" in matrix
    inherits: set[str] = set()
    for label, over in expanded:
        values = {**base, **over}
        if method_swept:
            # a stage-level key applies to the swept methods that accept it; a
            # key no swept method accepts stays, and is reported as unknown
            own = classes[str(values["method"])].model_fields
            values = {k: v for k, v in values.items() if k in own or k not in fields}
        cls = classes[str(values["method"])]
        for key, value in defaults.items():
            if key in cls.model_fields and values.get(key) is None:
                values[key] = value
                inherits.add(key)
        for issue in _bool_issues(values, cls, path):
            if str(issue) not in seen:
                seen.add(str(issue))
                issues.append(issue)
        try:
            variants.append((label, cls.model_validate(values)))
        except ValidationError as err:
            for issue in _pydantic_issues(err, path, cls):
                if str(issue) not in seen:
                    seen.add(str(issue))
                    issues.append(issue)
    if len(variants) != len(expanded):
        return None
    order = tuple(k for k in STAGE_DEFAULTS if k in inherits)
    return StageDecl(name, body["kind"], tuple(variants), body, order)


def ref_stage(ref: str) -> str:
    """The declared stage an input names: ``expert`` for ``expert@add_sub`` (one
    variant of a swept stage) and for ``expert`` (all of them)."""
    return ref.split("@", 1)[0] if isinstance(ref, str) else ref


def input_refs(params: StageParams) -> list[tuple[str, str, str]]:
    """``(field, upstream stage, needed artifact kind)`` for every set input,
    with ``field[i]`` for the items of a list input. A variant reference
    (``stage@label``) counts as its stage; the graph resolves the variant."""
    out = []
    for field, need in type(params).input_fields().items():
        value = getattr(params, field)
        if isinstance(value, list | tuple):
            out += [
                (f"{field}[{i}]", ref_stage(ref), need) for i, ref in enumerate(value)
            ]
        elif value is not None:
            out.append((field, ref_stage(value), need))
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


def _check_budgets(stages: dict[str, StageDecl], issues: list[Issue]) -> None:
    """A record-count budget (a field the kind lists in ``Kind.budgets``)
    larger than the records of the input it draws from, where every variant of
    that input declares its size (``Kind.sizes``: a world's ``pool_size``):
    caught now rather than at run time."""
    for decl in stages.values():
        kind = load_kind(decl.kind)
        for _, params in decl.variants:
            for field, source in kind.budgets.items():
                budget, ref = getattr(params, field), getattr(params, source)
                ref = ref_stage(ref) if isinstance(ref, str) else None
                if type(budget) is not int or ref not in stages:
                    continue
                up = stages[ref]
                up_kind = load_kind(up.kind)
                sizes = [up_kind.sizes_of(p).get("records") for _, p in up.variants]
                if None in sizes or budget <= min(sizes):
                    continue
                issue = Issue(
                    f"stages.{decl.name}.{field}",
                    f"{budget} records, but {source} '{ref}' has {min(sizes)}; give "
                    "at most that many, or a fraction such as 0.2",
                )
                if str(issue) not in {str(i) for i in issues}:
                    issues.append(issue)


def upstream_names(decl: StageDecl) -> list[str]:
    """Upstream stages any variant of ``decl`` reads, in field order."""
    out: list[str] = []
    for _, params in decl.variants:
        for _, ref, _ in input_refs(params):
            if ref not in out:
                out.append(ref)
    return out


def topo_order(stages: dict[str, StageDecl], issues: list[Issue]) -> list[str]:
    """Stage names in dependency order (declaration order among equals).

    Depth-first with an explicit stack: a 2,000-stage chain declared in reverse
    must not exhaust Python's recursion limit."""
    order: list[str] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: placed
    end = object()
    for root in stages:
        if root in state:
            continue
        state[root] = 1
        path = [root]
        todo = [iter(upstream_names(stages[root]))]
        while todo:
            up = next(todo[-1], end)
            if up is end:
                name = path.pop()
                todo.pop()
                state[name] = 2
                order.append(name)
            elif up not in stages or state.get(up) == 2:
                continue
            elif state.get(up) == 1:
                cycle = path[path.index(up) :] + [up]
                issues.append(
                    Issue(f"stages.{up}", "dependency cycle: " + " -> ".join(cycle))
                )
            else:
                state[up] = 1
                path.append(up)
                todo.append(iter(upstream_names(stages[up])))
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
    defaults = stage_defaults(raw)
    stages: dict[str, StageDecl] = {}
    for name, body in stages_raw.items():
        decl = _validate_stage(str(name), body, defaults, issues)
        if decl is not None:
            stages[str(name)] = decl
    kinds = {
        str(n): b.get("kind") if isinstance(b, dict) else None
        for n, b in stages_raw.items()
    }
    _check_inputs(stages, kinds, issues)
    _check_budgets(stages, issues)
    baseline = header.report.baseline if header is not None else None
    baseline = baseline.partition("@")[0] if baseline is not None else None
    if baseline is not None and baseline not in stages_raw:
        issues.append(
            Issue(
                "report.baseline",
                f"no stage named '{baseline}'"
                + did_you_mean(baseline, sorted(str(n) for n in stages_raw)),
            )
        )
    topo_order(stages, issues)
    bad_numbers = non_finite(raw)
    if bad_numbers:  # range checks say the same less clearly: keep this one
        paths = {i.path for i in bad_numbers}
        issues = bad_numbers + [i for i in issues if i.path not in paths]
    if issues:
        raise DeclarationError(source, issues)
    assert header is not None
    return Declaration(header, stages, raw, source)


def local_path_issues(decl: Declaration, root: Path | None = None) -> list[Issue]:
    """Local files and folders a declaration names (fields marked
    ``json_schema_extra={"carp_path": "dir" | "file"}``: a pretrained checkpoint,
    a DeepSpeed hostfile) exist and are of the right sort, and models with a
    ``local_issues(base)`` method pass it (a hostfile parses and has the slots
    asked for). Checked by the CLI
    before anything runs, not by :func:`validate`, so a declaration for another
    machine still validates as a document."""
    base = Path.cwd() if root is None else Path(root)
    out: list[Issue] = []
    seen: set[str] = set()
    for decl_stage in decl.stages.values():
        for _, params in decl_stage.variants:
            todo: list[tuple[BaseModel, str]] = [(params, f"stages.{decl_stage.name}")]
            while todo:
                model, path = todo.pop()
                check = getattr(model, "local_issues", None)  # e.g. hostfile slots
                for field, msg in check(base) if callable(check) else []:
                    issue = Issue(f"{path}.{field}", msg)
                    if str(issue) not in seen:
                        seen.add(str(issue))
                        out.append(issue)
                for field, info in type(model).model_fields.items():
                    value = getattr(model, field)
                    if isinstance(value, BaseModel):
                        todo.append((value, f"{path}.{field}"))
                        continue
                    extra = info.json_schema_extra
                    want = extra.get("carp_path") if isinstance(extra, dict) else None
                    if want is None or not isinstance(value, str):
                        continue
                    target = (base / Path(value).expanduser()).resolve()
                    if not target.exists():
                        msg = f"{value} does not exist"
                    elif want == "dir" and not target.is_dir():
                        msg = f"{value} is a file; give the folder"
                    elif want == "file" and not target.is_file():
                        msg = f"{value} is not a file"
                    else:
                        continue
                    issue = Issue(f"{path}.{field}", msg)
                    if str(issue) not in seen:
                        seen.add(str(issue))
                        out.append(issue)
    return out


def load(path: Path | str) -> Declaration:
    """Load and validate a declaration file."""
    return validate(load_yaml(Path(path)), source=str(path))
