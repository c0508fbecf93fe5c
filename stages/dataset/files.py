"""Records from local files, read with HF ``datasets``: JSON/JSONL, CSV,
parquet, text, Arrow, or a ``Dataset.save_to_disk`` folder.

``path`` is a file, a list of files or a folder (its files split by name as
datasets does: ``train*.jsonl``, ``test*.jsonl``; otherwise all ``train``).
Each file loads on its own into a private cache inside the output folder that
is deleted afterwards, so an edited file is never served from a stale cache
(datasets keys local files by path and mtime), and every bad row is named by
its file and 1-based row. Columns, shape, limit/sample, dedup and checks are
those of :mod:`stages.dataset.records`.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from pipelines.contract import DataPath, RunContext, StageResult
from stages.common.io import CorruptDataError
from stages.dataset.records import ImportParams, Source, import_records, result

EXTENSIONS = {
    ".json": "json",
    ".jsonl": "json",
    ".ndjson": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".txt": "text",
    ".arrow": "arrow",
}
BUILDERS = {  # the `format` option -> datasets' packaged builder
    "json": "json",
    "jsonl": "json",
    "csv": "csv",
    "parquet": "parquet",
    "txt": "text",
    "arrow": "arrow",
}
UNITS = {"file": "document", "line": "line", "paragraph": "paragraph"}


class Params(ImportParams):
    method: Literal["files"] = "files"
    # a file or a folder: the CLI checks that a single path exists (a list is
    # checked when the stage runs); DVC tracks each, the cache key its content
    path: str | list[str] = DataPath(
        "A file, a list of files, a folder of files, or a folder written by "
        "Dataset.save_to_disk.",
        min_length=1,
    )
    format: Literal["auto", "json", "jsonl", "csv", "parquet", "txt", "arrow"] = Field(
        "auto", description="File format; auto: from each file's extension."
    )
    text_unit: Literal["file", "line", "paragraph"] = Field(
        "line",
        description="txt files: one record per file, line or blank-line-separated "
        "paragraph (blank lines and paragraphs are skipped).",
    )
    field: str | None = Field(
        None, description="JSON files holding one object: the key of its records."
    )


def expose(
    params: Params, inputs: dict[str, Any], out_dir: Path, ctx: RunContext
) -> StageResult:
    """Read the files, check every row, write ``data.jsonl`` + ``dataset.json``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    given = [params.path] if isinstance(params.path, str) else list(params.path)
    cache = Path(tempfile.mkdtemp(prefix=".hf-cache-", dir=out_dir))
    try:
        splits = load_splits(given, params, cache)
        info, tally = import_records(
            splits,
            params,
            out_dir,
            ctx.seed,
            source=", ".join(given),
            format=params.format,
        )
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return result(info, tally)


# ---- finding the files --------------------------------------------------


def load_splits(
    given: list[str], params: Params, cache: Path
) -> dict[str, list[Source]]:
    missing = [p for p in given if not Path(p).expanduser().exists()]
    if missing:
        raise FileNotFoundError(
            f"path: {', '.join(missing)} does not exist; give an existing file or "
            "folder (relative paths start at the project root)"
        )
    paths = [Path(p).expanduser() for p in given]
    if len(paths) == 1 and paths[0].is_dir() and saved_folder(paths[0]):
        return load_saved(paths[0])
    if len(paths) == 1 and paths[0].is_dir():
        named = folder_splits(paths[0], params.format)
    else:
        named = {"train": [f for p in paths for f in data_files(p, params.format)]}
    return {
        split: [load_file(f, params, cache) for f in files]
        for split, files in named.items()
    }


def fmt_of(f: Path, fmt: str) -> str:
    """datasets' builder for ``f``: the declared format, else its extension's."""
    if fmt != "auto":
        return BUILDERS[fmt]
    builder = EXTENSIONS.get(f.suffix.lower())
    if builder is None:  # one of the files given: a folder's are picked by extension
        raise CorruptDataError(
            f"{f}: unknown format of extension '{f.suffix or '(none)'}'; use one of "
            f"{', '.join(EXTENSIONS)} or set format "
            f"({', '.join(BUILDERS)})"
        )
    return builder


def data_files(p: Path, fmt: str) -> list[Path]:
    """A file as given, or the data files of a folder (sorted, no hidden)."""
    if p.is_file():
        fmt_of(p, fmt)
        return [p]
    found = sorted(
        f
        for f in p.rglob("*")
        if f.is_file()
        and not any(part.startswith(".") for part in f.relative_to(p).parts)
        and f.suffix.lower() in EXTENSIONS
        and (fmt == "auto" or EXTENSIONS[f.suffix.lower()] == BUILDERS[fmt])
    )
    if not found:
        exts = [e for e, b in EXTENSIONS.items() if fmt == "auto" or b == BUILDERS[fmt]]
        raise CorruptDataError(
            f"{p}: the folder holds no data file ({', '.join(exts)}); put the "
            "records there or list the files in path"
        )
    kinds = {fmt_of(f, fmt) for f in found}
    if len(kinds) > 1:
        raise CorruptDataError(
            f"{p}: the folder mixes formats ({', '.join(sorted(kinds))}); keep one "
            "format per folder or list the files in path"
        )
    return found


def folder_splits(folder: Path, fmt: str) -> dict[str, list[Path]]:
    """Files of a folder by split, from their names as datasets infers them
    (``train*``, ``test*``, ``validation*``; none of those: all ``train``)."""
    from datasets.data_files import DataFilesDict, get_data_patterns

    keep = {f.resolve() for f in data_files(folder, fmt)}
    patterns = get_data_patterns(str(folder))
    named = DataFilesDict.from_patterns(patterns, base_path=str(folder))
    out: dict[str, list[Path]] = {}
    for split, files in named.items():
        chosen = sorted(
            folder / Path(f).resolve().relative_to(folder.resolve())
            for f in files
            if Path(f).resolve() in keep
        )
        if chosen:
            out[str(split)] = chosen
    return out


def saved_folder(p: Path) -> bool:
    """Written by save_to_disk: its state files, or its info beside Arrow data."""
    if (p / "state.json").exists() or (p / "dataset_dict.json").exists():
        return True
    return (p / "dataset_info.json").exists() and any(p.glob("*.arrow"))


def load_saved(folder: Path) -> dict[str, list[Source]]:
    """A ``save_to_disk`` folder: one Dataset (split ``train``) or a DatasetDict."""
    from datasets import DatasetDict, load_from_disk

    if (
        not (folder / "state.json").exists()
        and not (folder / "dataset_dict.json").exists()
    ):
        have = ", ".join(sorted(f.name for f in folder.iterdir())[:6])
        raise CorruptDataError(
            f"{folder}: a save_to_disk folder ({have}) without its state.json; copy "
            "the whole folder again or re-save it with Dataset.save_to_disk"
        )
    try:
        ds = load_from_disk(str(folder))
    except Exception as e:  # noqa: BLE001 - datasets and pyarrow have many types
        raise CorruptDataError(
            f"{folder}: cannot load the save_to_disk folder ({type(e).__name__}: "
            f"{first_line(e)}); copy the whole folder again or re-save it"
        ) from None
    if isinstance(ds, DatasetDict):
        return {name: [Source(f"{folder}/{name}", d)] for name, d in ds.items()}
    return {"train": [Source(str(folder), ds)]}


# ---- loading one file ---------------------------------------------------


def load_file(f: Path, params: Params, cache: Path) -> Source:
    """One file as a datasets table in the private ``cache``."""
    from datasets import Features, Value, load_dataset

    builder = fmt_of(f, params.format)
    kw: dict[str, Any] = {}
    if builder == "json":
        kw = {"field": params.field, "parse_agent_traces": False}
        if params.field is None:
            refuse_one_object(f)
    elif builder == "csv":
        # every column as text: no type guessing per file ("007" stays "007")
        kw = {"keep_default_na": False, "na_filter": False}
        kw["features"] = Features({c: Value("string") for c in csv_header(f)})
    elif builder == "text":
        kw = {"sample_by": UNITS[params.text_unit]}
    try:
        ds = load_dataset(
            builder, data_files=[str(f)], split="train", cache_dir=str(cache), **kw
        )
    except Exception as e:  # noqa: BLE001 - datasets wraps errors of every library
        raise CorruptDataError(
            diagnose(f, builder) or cannot_read(f, builder, e)
        ) from None
    return Source(
        str(f), ds, text_units=builder == "text" and params.text_unit != "file"
    )


def first_line(e: BaseException) -> str:
    cause = e.__cause__ or e.__context__ or e
    return (str(cause).strip().splitlines() or [type(cause).__name__])[0][:200]


def cannot_read(f: Path, builder: str, e: BaseException) -> str:
    return (
        f"{f}: cannot read it as {builder} ({first_line(e)}); check that the file "
        "is complete and of that format, or set format"
    )


def csv_header(f: Path) -> list[str]:
    with open(f, encoding="utf-8", errors="replace", newline="") as h:
        header = next(csv.reader(h), None)
    if not header:
        raise CorruptDataError(
            f"{f}: the CSV file is empty; give a header row and records"
        )
    return header


def refuse_one_object(f: Path) -> None:
    """A .json file holding one (multi-line) object, not records."""
    with open(f, "rb") as h:
        head = h.readline()
        if not head.lstrip().startswith(b"{"):
            return
        try:
            json.loads(head)
            return  # one record per line
        except ValueError:
            pass
        try:
            obj = json.loads(head + h.read())
        except ValueError:
            return  # diagnosed when datasets fails on it
    keys = ", ".join(list(obj)[:8])
    raise CorruptDataError(
        f"{f}: holds one JSON object (keys: {keys}), not a list of records; set "
        "field to the key of the records or write one record per line"
    )


def diagnose(f: Path, builder: str) -> str | None:
    """The first row that makes a file unreadable, for a clear message."""
    if builder in ("parquet", "arrow"):
        return None
    with open(f, "rb") as h:
        raw = h.read()
    if builder == "json" and raw.lstrip()[:1] == b"[":
        return diagnose_array(f, raw)
    row, types = 0, {}
    for line_no, line in enumerate(io.BytesIO(raw), 1):
        if not line.strip() and builder != "text":
            continue
        row += 1
        at = f"{f}: row {row}" + (f" (line {line_no})" if line_no != row else "")
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as e:
            return (
                f"{at}: not UTF-8 (byte 0x{line[e.start]:02x} at column "
                f"{e.start + 1}); re-save the file as UTF-8"
            )
        if builder != "json":
            continue
        try:
            rec = json.loads(line)
        except ValueError as e:
            return f"{at}: not JSON ({e.msg}); fix or drop the line"
        if not isinstance(rec, dict):
            return (
                f"{at}: a record must be a JSON object, got {type(rec).__name__}; "
                "write one {...} per line"
            )
        for k, v in rec.items():
            t = type(v).__name__ if v is not None else None
            if t is not None and types.setdefault(k, (t, row))[0] != t:
                first, at_row = types[k]
                return (
                    f"{at}: field '{k}' is a {t} here but a {first} in row {at_row}; "
                    "give every value of a field the same type"
                )
    return None


def diagnose_array(f: Path, raw: bytes) -> str:
    try:
        items = json.loads(raw)
    except UnicodeDecodeError as e:
        return f"{f}: not UTF-8 (byte {e.start}); re-save the file as UTF-8"
    except json.JSONDecodeError as e:
        return f"{f}: line {e.lineno}: not JSON ({e.msg}); fix the file"
    for i, item in enumerate(items, 1):
        if not isinstance(item, dict):
            got = type(item).__name__
            return (
                f"{f}: row {i}: a record must be a JSON object, got {got}; make "
                "every item of the list a {...}"
            )
    return f"{f}: datasets cannot read this JSON list; give it as JSONL (one per line)"
