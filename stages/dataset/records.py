"""Rows of a loaded HF ``datasets`` table as carp records: the column mapping,
the shape, per-row validation, stable ids, exact dedup and the streamed write
of ``data.jsonl`` + ``dataset.json``. Shared by the ``files`` and ``hub``
methods, which only differ in how they find the tables.

A record is ``{id, instruction, input, output, family?}`` (instruction),
``{id, messages: [{role, content}], family?}`` (chat) or ``{id, text, family?}``
(text). Its content is the record without ``id``; without an id column the id
is ``sha256(content)[:16]``, so the same content gets the same id from any file
format. A duplicate is a record equal in every field but the id.
"""

from __future__ import annotations

import binascii
import contextlib
import difflib
import hashlib
import json
import operator
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from stages.common.io import DATA_FILE, DATASET_META, CorruptDataError
from stages.dataset import Params as KindParams

CARP_FIELDS = ("id", "instruction", "input", "output", "messages", "text", "family")
SHAPE_FIELDS = {  # content fields in the order they are written; required first
    "instruction": ("instruction", "output", "input"),
    "chat": ("messages",),
    "text": ("text",),
}
REQUIRED = {
    "instruction": ("instruction", "output"),
    "chat": ("messages",),
    "text": ("text",),
}
ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}
AUTO_ALIASES = {"conversations": "messages"}  # ShareGPT, mapped without `columns`
BATCH = 2048


class ImportParams(KindParams):
    """Fields shared by the methods that import records through HF datasets."""

    split: str = Field(
        "train",
        description="Split, in datasets' syntax: `train`, `train[:1000]`, "
        "`train[10%:20%]`, `train[:50%]+test`.",
    )
    columns: dict[str, str] | None = Field(
        None,
        description="Source field -> carp field (instruction, input, output, "
        "messages, text, id, family); fields already named so, and ShareGPT "
        "`conversations`, map themselves.",
    )
    shape: Literal["auto", "instruction", "chat", "text"] = Field(
        "auto", description="Record shape; auto picks it from the mapped fields."
    )
    limit: int | None = Field(None, ge=1, description="Keep the first N rows.")
    sample: float | int | None = Field(
        None,
        gt=0,
        description="Keep a seeded random subset: a fraction in (0, 1] or a "
        "count >= 1 (the seed is the stage's).",
    )
    dedup: Literal["drop", "refuse", "keep"] = Field(
        "drop", description="Exact duplicates of content: drop, refuse, or keep."
    )
    max_record_bytes: int = Field(
        1 << 20, ge=1, description="Refuse a record longer than this (UTF-8 bytes)."
    )

    @model_validator(mode="after")
    def _check(self) -> ImportParams:
        targets: dict[str, str] = {}
        for src, dst in (self.columns or {}).items():
            if dst not in CARP_FIELDS:
                close = difflib.get_close_matches(dst, CARP_FIELDS, n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                raise ValueError(
                    f"columns.{src}: unknown carp field '{dst}'; {hint}give one of "
                    f"{', '.join(CARP_FIELDS)}"
                )
            if dst in targets:
                raise ValueError(
                    f"columns: '{targets[dst]}' and '{src}' both map to '{dst}'; map "
                    "one source field to each carp field"
                )
            targets[dst] = src
            allowed = set(SHAPE_FIELDS.get(self.shape, CARP_FIELDS)) | {"id", "family"}
            if dst not in allowed:
                raise ValueError(
                    f"columns.{src}: maps to '{dst}', which shape {self.shape} has "
                    f"no place for (its fields: {', '.join(sorted(allowed))}); map "
                    "it to one of those or leave it out"
                )
        if isinstance(self.sample, float) and self.sample > 1:
            raise ValueError("sample: a fraction must be <= 1; give a count as int")
        if self.sample is not None and self.limit is not None:
            raise ValueError("limit and sample: give one of them, not both")
        return self


@dataclass
class Source:
    """One loaded table: ``label`` names it in messages (a file, a hub split)."""

    label: str
    ds: Any  # datasets.Dataset
    # txt lines/paragraphs: blank ones are no records; newlines around one
    # (a paragraph after three newlines) are not part of it
    text_units: bool = False


@dataclass
class Segment:
    """Rows of one source to read, as 0-based row numbers (a range or a list)."""

    source: Source
    rows: Any  # range | list[int]


class RowError(ValueError):
    """A bad value in one row: the field and what to do about it."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field = field


# ---- mapping and shape --------------------------------------------------


def column_map(columns: dict[str, str] | None, sources: list[Source]) -> dict[str, str]:
    """Source column -> carp field: the explicit ``columns``, then every column
    already named like a carp field (or ShareGPT ``conversations``)."""
    explicit = dict(columns or {})
    for src in explicit:
        for s in sources:
            if src not in s.ds.column_names:
                raise CorruptDataError(
                    f"{s.label}: no field '{src}' (columns maps it to "
                    f"'{explicit[src]}'); fields there: {', '.join(s.ds.column_names)}"
                )
    taken = set(explicit.values())
    out = dict(explicit)
    names = dict.fromkeys(c for s in sources for c in s.ds.column_names)
    for name in names:
        dst = name if name in CARP_FIELDS else AUTO_ALIASES.get(name)
        if dst is not None and name not in out and dst not in taken:
            out[name] = dst
            taken.add(dst)
    return out


def pick_shape(shape: str, mapping: dict[str, str], sources: list[Source]) -> str:
    """The declared shape, or the one the mapped fields make (auto)."""
    mapped = set(mapping.values())
    where = sources[0].label
    have = ", ".join(sorted({c for s in sources for c in s.ds.column_names})) or "none"
    if shape == "auto":
        found = [s for s in ("chat", "instruction", "text") if REQUIRED[s][0] in mapped]
        if not found:
            raise CorruptDataError(
                f"{where}: cannot tell the record shape: no instruction, messages or "
                f"text field (fields: {have}); map yours with `columns: {{<field>: "
                "instruction}` (or messages / text)"
            )
        if len(found) > 1:
            raise CorruptDataError(
                f"{where}: fields for shapes {' and '.join(found)} are both mapped; "
                "set `shape` to the one you mean"
            )
        shape = found[0]
    for need in REQUIRED[shape]:
        if need not in mapped:
            raise CorruptDataError(
                f"{where}: shape {shape} needs a '{need}' field, which no column "
                f"gives (fields: {have}); map one with `columns: {{<field>: {need}}}`"
            )
    return shape


def shape_map(mapping: dict[str, str], shape: str) -> dict[str, str]:
    """The mapping restricted to the shape's fields (and id, family)."""
    allowed = set(SHAPE_FIELDS[shape]) | {"id", "family"}
    return {s: d for s, d in mapping.items() if d in allowed}


def check_required_columns(
    mapping: dict[str, str], shape: str, sources: list[Source]
) -> None:
    by_field = {d: s for s, d in mapping.items()}
    for s in sources:
        for need in REQUIRED[shape]:
            src = by_field[need]
            if src not in s.ds.column_names:
                raise CorruptDataError(
                    f"{s.label}: no field '{src}' (the records' {need}); fields "
                    f"there: {', '.join(s.ds.column_names)}"
                )


# ---- row selection ------------------------------------------------------


def split_segments(
    splits: dict[str, list[Source]], spec: str, where: str
) -> list[Segment]:
    """The rows datasets' split syntax (``train[:10%]+test``) names, in order."""
    from datasets import ReadInstruction

    try:
        instruction = ReadInstruction.from_spec(spec)
    except (ValueError, AssertionError) as e:
        raise ValueError(
            f"split: '{spec}' is not datasets' split syntax ({e}); write e.g. "
            "train, train[:1000], train[10%:20%] or train[:50%]+test"
        ) from None
    sizes = {name: sum(len(s.ds) for s in srcs) for name, srcs in splits.items()}
    try:
        absolute = instruction.to_absolute(sizes)
    except (ValueError, AssertionError) as e:
        raise ValueError(
            f"split: '{spec}' does not fit {where} ({e}); its splits: "
            + ", ".join(f"{n} ({k} rows)" for n, k in sizes.items())
        ) from None
    out: list[Segment] = []
    for part in absolute:
        start = 0
        for src in splits[part.splitname]:
            lo, hi = max(part.from_, start), min(part.to, start + len(src.ds))
            if lo < hi:
                out.append(Segment(src, range(lo - start, hi - start)))
            start += len(src.ds)
    return out


def choose(
    segments: list[Segment], limit: int | None, sample: float | int | None, seed: int
) -> list[Segment]:
    """First ``limit`` rows, or a seeded ``sample`` (kept in source order)."""
    total = sum(len(s.rows) for s in segments)
    if limit is not None:
        out, left = [], limit
        for seg in segments:
            if left <= 0:
                break
            out.append(Segment(seg.source, seg.rows[:left]))
            left -= len(seg.rows)
        return out
    if sample is None:
        return segments
    k = round(sample * total) if isinstance(sample, float) else int(sample)
    if not 1 <= k <= total:
        raise ValueError(
            f"sample: {sample} of {total} rows keeps {k}; give 1..{total} rows or a "
            "larger fraction"
        )
    picked = sorted(random.Random(f"{seed}:dataset-sample").sample(range(total), k))
    out, start, i = [], 0, 0
    for seg in segments:
        end = start + len(seg.rows)
        rows = []
        while i < len(picked) and picked[i] < end:
            rows.append(seg.rows[picked[i] - start])
            i += 1
        if rows:
            out.append(Segment(seg.source, rows))
        start = end
    return out


# ---- per-row conversion -------------------------------------------------


def kind_of(v: Any) -> str:
    if v is None:
        return "nothing (null)"
    names = {bool: "a boolean", int: "a number", float: "a number", list: "a list"}
    return names.get(type(v), "an object" if isinstance(v, dict) else type(v).__name__)


def text(row: dict[str, Any], name: str, required: bool = True) -> str:
    v = row.get(name)
    if v is None and not required:
        return ""
    if not isinstance(v, str):
        if v is None:
            raise RowError(name, "is missing; give every record this field")
        raise RowError(
            name, f"must be text, got {kind_of(v)} ({str(v)[:40]}); quote it"
        )
    if required and not v.strip():
        raise RowError(name, "is empty; fill it in or drop the record")
    return v


def message(m: Any, n: int) -> dict[str, str]:
    if not isinstance(m, dict):
        raise RowError("messages", f"message {n} is {kind_of(m)}, not an object")
    if m.get("role") is None and m.get("from") is not None:  # ShareGPT
        who = m["from"]
        if who not in SHAREGPT_ROLES:
            raise RowError(
                "messages",
                f"message {n} is from '{who}'; ShareGPT `from` must be one of "
                f"{', '.join(SHAREGPT_ROLES)}",
            )
        role, content = SHAREGPT_ROLES[who], m.get("value")
    else:
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise RowError(
                "messages",
                f"message {n} has role {role!r}; use one of {', '.join(ROLES)}",
            )
    if not isinstance(content, str):
        got = "no content" if content is None else f"content of {kind_of(content)}"
        raise RowError("messages", f"message {n} ({role}) has {got}; give it text")
    if role != "system" and not content.strip():
        raise RowError("messages", f"message {n} ({role}) has empty content")
    return {"role": role, "content": content}


def messages(row: dict[str, Any]) -> list[dict[str, str]]:
    v = row.get("messages")
    if not isinstance(v, list):
        raise RowError(
            "messages",
            f"must be a list of {{role, content}}, got {kind_of(v)}; write "
            '[{"role": "user", "content": ...}, ...]',
        )
    turns = [message(m, i) for i, m in enumerate(v, 1)]
    if not any(t["role"] == "assistant" for t in turns):
        raise RowError(
            "messages", "has no assistant turn; a chat needs one (its response)"
        )
    if turns[-1]["role"] != "assistant":
        raise RowError(
            "messages",
            f"ends with a {turns[-1]['role']} turn; end it with the assistant's "
            "response (drop the unanswered turn)",
        )
    return turns


def content_of(row: dict[str, Any], shape: str) -> dict[str, Any]:
    """The record without its id, in a fixed field order (the hashed content)."""
    if shape == "instruction":
        out: dict[str, Any] = {
            "instruction": text(row, "instruction"),
            "input": text(row, "input", required=False),
            "output": text(row, "output"),
        }
    elif shape == "chat":
        out = {"messages": messages(row)}
    else:
        out = {"text": text(row, "text")}
    fam = row.get("family")
    if fam is not None and fam != "":
        if not isinstance(fam, (str, int)) or isinstance(fam, bool):
            raise RowError("family", f"must be text, got {kind_of(fam)}")
        out["family"] = str(fam)
    return out


def id_of(row: dict[str, Any]) -> str:
    v = row.get("id")
    if isinstance(v, bool) or not isinstance(v, (str, int)) or str(v) == "":
        got = "an empty id" if v == "" else kind_of(v)
        raise RowError(
            "id",
            f"must be a non-empty text or number, got {got}; give every row an "
            "id or leave the id column out of columns",
        )
    return str(v)


# ---- batch encoders: content JSON per row --------------------------------
# The body of a record is ``json.dumps(content, ensure_ascii=False)``; the fast
# paths build the same bytes from json's own string encoder for rows that pass
# the checks, and hand any other row to content_of, which says what is wrong.

ENC = json.encoder.encode_basestring  # what json.dumps(ensure_ascii=False) uses


def general(row: dict[str, Any], shape: str, k: int) -> str:
    try:
        return json.dumps(content_of(row, shape), ensure_ascii=False)
    except RowError as e:
        e.k = k
        raise


def all_text(col: list) -> bool:
    """Every value a non-blank string (checked at C speed: in, map; isspace
    refuses anything that is not a str)."""
    try:
        return "" not in col and not any(map(str.isspace, col))
    except TypeError:
        return False


def opt_text(col: list | None) -> bool:
    return col is None or set(map(type, col)) <= {str, type(None)}


def with_family(heads: list[str], fam: list | None) -> list[str]:
    if fam is None or not any(fam):
        return [h + "}" for h in heads]
    if all_text(fam):
        return list(map('{}, "family": {}}}'.format, heads, map(ENC, fam)))
    pairs = zip(heads, fam, strict=True)
    return [f'{h}, "family": {ENC(f)}}}' if f else h + "}" for h, f in pairs]


INSTRUCTION = '{{"instruction": {}, "input": {}, "output": {}'


def bodies_instruction(cols: dict[str, list], n: int, units: bool) -> list[Any]:
    ins, out = cols["instruction"], cols["output"]
    inp, fam = cols.get("input"), cols.get("family")
    if all_text(ins) and all_text(out) and opt_text(inp) and opt_text(fam):
        if inp is None:
            inp = [""] * n
        elif None in inp:
            inp = ["" if v is None else v for v in inp]
        heads = list(
            map(INSTRUCTION.format, map(ENC, ins), map(ENC, inp), map(ENC, out))
        )
        return with_family(heads, fam)
    none = [None] * n
    inp, fam = inp or none, fam or none
    return [
        general(
            {
                "instruction": ins[k],
                "input": inp[k],
                "output": out[k],
                "family": fam[k],
            },
            "instruction",
            k,
        )
        for k in range(n)
    ]


def bodies_text(cols: dict[str, list], n: int, units: bool) -> list[Any]:
    texts, fam = cols["text"], cols.get("family")
    if units:  # txt lines/paragraphs: blank ones are skipped (None), not refused
        texts = [(v or "").strip("\r\n") for v in texts]
        texts = [v if v.strip() else None for v in texts]
        keep = [k for k, v in enumerate(texts) if v is not None]
        out: list[Any] = [None] * n
        sub = {"text": [texts[k] for k in keep]}
        if fam is not None:
            sub["family"] = [fam[k] for k in keep]
        for k, body in zip(keep, bodies_text(sub, len(keep), False), strict=True):
            out[k] = body
        return out
    if all_text(texts) and opt_text(fam):
        return with_family(["{" + f'"text": {ENC(v)}' for v in texts], fam)
    fam = fam or [None] * n
    return [general({"text": texts[k], "family": fam[k]}, "text", k) for k in range(n)]


def bodies_chat(cols: dict[str, list], n: int, units: bool) -> list[Any]:
    fam = cols.get("family") or [None] * n
    return [
        general({"messages": m, "family": f}, "chat", k)
        for k, (m, f) in enumerate(zip(cols["messages"], fam, strict=True))
    ]


BODIES = {"instruction": bodies_instruction, "chat": bodies_chat, "text": bodies_text}


# ---- the streamed write -------------------------------------------------


@dataclass
class Tally:
    read: int = 0
    written: int = 0
    duplicates: int = 0
    blank: int = 0
    seen: set[bytes] = field(default_factory=set)
    ids: set[str] = field(default_factory=set)
    repeats: dict[bytes, int] = field(default_factory=dict)


def batches(segments: list[Segment], srcs: dict[str, str]) -> Iterator[Any]:
    """(segment, first index into its rows, {carp field: values}, count) per
    Arrow batch of the selected rows (never a whole table as Python objects)."""
    for seg in segments:
        ds = seg.source.ds
        keep = [c for c in srcs if c in ds.column_names]
        rows = seg.rows
        if isinstance(rows, range) and rows.step == 1:
            # a contiguous span (no sample): slice the table, no copy of it
            part, offset = ds.select_columns(keep), rows.start
        else:
            part = ds.select_columns(keep).select(rows, keep_in_memory=True)
            offset = 0
        for i in range(0, len(rows), BATCH):
            n = min(BATCH, len(rows) - i)
            try:
                batch = part[offset + i : offset + i + n]
            except UnicodeDecodeError:
                raise CorruptDataError(not_utf8(seg, part, i, offset)) from None
            cols = {srcs[c]: batch[c] for c in keep}
            yield seg, i, cols, n


def not_utf8(seg: Segment, part: Any, start: int, offset: int = 0) -> str:
    """The first row of a batch whose text does not decode (Arrow keeps the
    bytes; Python refuses them); ``start`` counts the segment's rows, and
    ``part`` row ``offset + j`` is the segment's row j."""
    for j in range(start, min(start + BATCH, len(seg.rows))):
        try:
            part[offset + j]
        except UnicodeDecodeError as e:
            return (
                f"{where(seg, seg.rows[j])}: text that is not UTF-8 ({e.reason}, "
                f"byte 0x{e.object[e.start]:02x}); re-save the file as UTF-8"
            )
    return f"{seg.source.label}: text that is not UTF-8; re-save the file as UTF-8"


def where(seg: Segment, row: int) -> str:
    return f"{seg.source.label}: row {row + 1}"


def rows(segments: list[Segment], srcs: dict[str, str], shape: str) -> Iterator[Any]:
    """(where, body, id value) of every row that passes the checks."""
    for seg, start, cols, n in batches(segments, srcs):
        ids = cols.get("id", [None] * n)
        for k, body in enumerate(BODIES[shape](cols, n, seg.source.text_units)):
            yield where(seg, seg.rows[start + k]), body, ids[k]


def first_row_with(
    segments: list[Segment], srcs: dict[str, str], shape: str, key: Any, by_id: bool
) -> str:
    """Where the first row with this content key (or id) is (error path only)."""
    with contextlib.suppress(RowError):
        for at, body, rid in rows(segments, srcs, shape):
            if body is None:
                continue
            if (str(rid) == key) if by_id else digest(body)[1] == key:
                return at
    return "an earlier row"


def digest(body: str) -> tuple[bytes, bytes, str]:
    """UTF-8 bytes of a body, its dedup key (8 bytes) and its 16-hex id."""
    b = body.encode("utf-8")
    h = hashlib.sha256(b).digest()[:8]
    return b, h, h.hex()


DIGEST, HEAD = operator.methodcaller("digest"), operator.itemgetter(slice(0, 8))


def fast_lines(bodies: list[Any], seen: set[bytes], params: ImportParams) -> Any:
    """The batch's JSONL lines at C speed (map) when it has no blank, no
    duplicate (within or before it) and no record over max_record_bytes;
    None otherwise (the row-by-row loop then handles and names each case)."""
    if None in bodies:
        return None
    try:
        bs = list(map(str.encode, bodies))
    except UnicodeEncodeError:
        return None
    keys = list(map(HEAD, map(DIGEST, map(hashlib.sha256, bs))))
    fresh = set(keys)
    if len(fresh) != len(keys) or not seen.isdisjoint(fresh):
        return None
    pairs = zip(map(binascii.hexlify, keys), bs, strict=True)
    lines = [b'{"id": "' + h + b'", ' + b[1:] + b"\n" for h, b in pairs]
    if lines and max(map(len, lines)) > params.max_record_bytes:
        return None
    seen.update(fresh)
    return lines


def write_records(
    segments: list[Segment],
    mapping: dict[str, str],
    shape: str,
    params: ImportParams,
    out_dir: Path,
) -> tuple[Tally, str]:
    """Convert, check, dedup and write every selected row; returns the tally
    and the sha256 of the written ``data.jsonl``."""
    encode = BODIES[shape]
    t = Tally()
    seen, sha256 = t.seen, hashlib.sha256
    sha = hashlib.sha256()
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / DATA_FILE, "wb") as f:
        for seg, start, cols, n in batches(segments, mapping):
            t.read += n
            ids = cols.get("id")
            lines: list[bytes] = []
            k = 0
            try:
                bodies = encode(cols, n, seg.source.text_units)
                fast = None if ids is not None else fast_lines(bodies, seen, params)
                if fast is not None:
                    lines = fast
                    bodies = []
                for k, body in enumerate(bodies):
                    if body is None:
                        t.blank += 1
                        continue
                    b = body.encode("utf-8")
                    key = sha256(b).digest()[:8]
                    if key in seen:
                        if params.dedup == "drop":
                            t.duplicates += 1
                            continue
                        if params.dedup == "refuse":
                            first = first_row_with(segments, mapping, shape, key, False)
                            at = where(seg, seg.rows[start + k])
                            raise CorruptDataError(
                                f"{at}: duplicates {first} (same content); drop one, "
                                "or set dedup: drop"
                            )
                        t.repeats[key] = t.repeats.get(key, 1) + 1
                        rid = f'"{key.hex()}-{t.repeats[key]}"'
                    else:
                        seen.add(key)
                        rid = f'"{key.hex()}"'
                    if ids is not None:
                        rid = id_of({"id": ids[k]})
                        if rid in t.ids:
                            first = first_row_with(segments, mapping, shape, rid, True)
                            raise CorruptDataError(
                                f"{where(seg, seg.rows[start + k])}: id '{rid}' is "
                                f"also the id of {first}; ids must be unique (fix "
                                "the id column or drop it from columns)"
                            )
                        t.ids.add(rid)
                        rid = ENC(rid)
                    line = b'{"id": ' + rid.encode() + b", " + b[1:] + b"\n"
                    if len(line) > params.max_record_bytes:
                        raise CorruptDataError(
                            f"{where(seg, seg.rows[start + k])}: the record is "
                            f"{len(line):,} bytes, above max_record_bytes "
                            f"({params.max_record_bytes:,}); raise that option or "
                            "drop the record"
                        )
                    lines.append(line)
            except RowError as e:
                at = where(seg, seg.rows[start + getattr(e, "k", k)])
                via = next((s for s, d in mapping.items() if d == e.field), e.field)
                named = f"'{e.field}'" + (f" (field '{via}')" if via != e.field else "")
                raise CorruptDataError(f"{at}: {named} {e}") from None
            except UnicodeEncodeError:
                raise CorruptDataError(
                    f"{where(seg, seg.rows[start + k])}: holds an unpaired surrogate "
                    "(\\ud8xx) that is not UTF-8; fix the text"
                ) from None
            chunk = b"".join(lines)
            sha.update(chunk)
            f.write(chunk)
            t.written += len(lines)
    t.seen.clear()
    t.ids.clear()
    return t, sha.hexdigest()


def import_records(
    splits: dict[str, list[Source]],
    params: ImportParams,
    out_dir: Path,
    seed: int,
    source: str,
    **meta: Any,
) -> tuple[dict[str, Any], Tally]:
    """Select, map, check and write the records of ``splits``; writes
    ``dataset.json`` and returns it with the tally."""
    segments = split_segments(splits, params.split, source)
    segments = choose(segments, params.limit, params.sample, seed)
    used = list(dict.fromkeys(s.source.label for s in segments))
    sources = [s.source for s in segments] or [x for v in splits.values() for x in v]
    sources = list({id(s): s for s in sources}.values())
    mapping = column_map(params.columns, sources)
    shape = pick_shape(params.shape, mapping, sources)
    mapping = shape_map(mapping, shape)
    check_required_columns(mapping, shape, sources)
    t, digest_hex = write_records(segments, mapping, shape, params, out_dir)
    if t.written == 0:
        why = (
            "the split/limit/sample selects no row"
            if t.read == 0
            else "every row is blank"
        )
        raise CorruptDataError(
            f"{source}: no record is left ({why}); widen split, limit or sample"
        )
    info = {
        "source": source,
        "count": t.written,
        "sha256": digest_hex,
        "shape": shape,
        "columns": mapping,
        "split": params.split,
        "records_read": t.read,
        "duplicates_dropped": t.duplicates,
        "blank_skipped": t.blank,
        "files": used,
        **meta,
    }
    (out_dir / DATASET_META).write_text(json.dumps(info, indent=2, sort_keys=True))
    return info, t


def result(info: dict[str, Any], t: Tally) -> Any:
    """The StageResult of an import: metrics, the dataset to log, a summary."""
    from pipelines.contract import StageResult

    metrics = {
        "rows": float(t.written),
        "count": float(t.written),
        "records_read": float(t.read),
        "records_written": float(t.written),
        "duplicates_dropped": float(t.duplicates),
    }
    return StageResult(
        metrics=metrics,
        datasets=[DATA_FILE],
        summary=f"dataset: {t.written} {info['shape']} records from "
        f"{info['source']} ({t.read} read, {t.duplicates} duplicates dropped)",
    )
