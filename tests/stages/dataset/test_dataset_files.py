"""The dataset kind's files and hub methods on good data: every format gives
the same records, ids and content hash; split slices, limit, seeded sample,
dedup, ShareGPT mapping, and a hash that follows the content, not the path or
mtime."""

import csv
import json
import os
import shutil

import pytest

from pipelines.contract import RunContext
from pipelines.spec import validate
from stages.common.io import read_dataset
from stages.dataset import KIND, METHODS

RECS = [
    {
        "instruction": f"Add {i} and {i + 1}.",
        "input": "" if i % 3 else f"context {i}",
        "output": str(2 * i + 1),
        "family": "add" if i % 2 else "sum",
    }
    for i in range(40)
]
# what JSON must escape, and what it must not: quotes, backslash, control and
# line-separator characters, non-ASCII text
RECS[7]["output"] = 'say "hi"\\ \n\tthere ünï 🚀 \u2028 \x01 end'
RECS[8]["instruction"] = "Résumé: «quote» — 日本語?"
TEXTS = ["The first document.", "A second one, with ünïcode.", "Third."]


def write(fmt, folder, recs):
    """``recs`` written in ``fmt`` under ``folder``; returns the path to give."""
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        f = folder / "d.jsonl"
        f.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    elif fmt == "json":
        f = folder / "d.json"
        f.write_text(json.dumps(recs, indent=1), encoding="utf-8")
    elif fmt == "csv":
        f = folder / "d.csv"
        with open(f, "w", newline="", encoding="utf-8") as h:
            w = csv.DictWriter(h, fieldnames=list(recs[0]))
            w.writeheader()
            w.writerows(recs)
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        f = folder / "d.parquet"
        pq.write_table(pa.Table.from_pylist(recs), f)
    elif fmt == "arrow":
        import pyarrow as pa

        f = folder / "d.arrow"
        table = pa.Table.from_pylist(recs)
        with (
            pa.OSFile(str(f), "wb") as sink,
            pa.ipc.new_stream(sink, table.schema) as w,
        ):
            w.write_table(table)
    elif fmt == "save_to_disk":
        from datasets import Dataset

        f = folder / "saved"
        Dataset.from_list(recs).save_to_disk(str(f))
    elif fmt == "several":
        a, b = (
            write("jsonl", folder / "a", recs[:15]),
            write("csv", folder / "b", recs[15:]),
        )
        return [str(a), str(b)]
    elif fmt == "folder":
        f = folder / "parts"
        f.mkdir()
        for i, chunk in enumerate((recs[:10], recs[10:25], recs[25:])):
            (f / f"part{i}.jsonl").write_text(
                "".join(json.dumps(r) + "\n" for r in chunk)
            )
        (f / "README.md").write_text("not data")
    else:
        raise AssertionError(fmt)
    return str(f)


def imp(out, seed=0, **params):
    """Run the method through the kind; the records, dataset.json and metrics."""
    p = METHODS.load(params.pop("method", "files")).Params(**params)
    res = KIND.run(p, {}, out, RunContext(seed=seed))
    info = json.loads((out / "dataset.json").read_text())
    assert not [f for f in os.listdir(out) if f.startswith(".hf-cache")]
    return read_dataset(out), info, res.metrics


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("ref")
    return imp(d / "out", path=write("jsonl", d, RECS))


@pytest.mark.parametrize(
    "fmt", ["json", "csv", "parquet", "arrow", "save_to_disk", "several", "folder"]
)
def test_every_format_gives_the_same_records_and_hash(fmt, tmp_path, reference):
    recs, info, m = imp(tmp_path / "out", path=write(fmt, tmp_path / "src", RECS))
    ref_recs, ref_info, _ = reference
    assert recs == ref_recs  # same ids, fields and order
    assert info["sha256"] == ref_info["sha256"]
    assert m["records_read"] == m["records_written"] == m["rows"] == len(RECS)


def test_records_keep_content_and_get_content_ids(reference, tmp_path):
    import hashlib

    recs, info, m = reference
    assert [r["instruction"] for r in recs] == [r["instruction"] for r in RECS]
    assert all(r["input"] == s["input"] for r, s in zip(recs, RECS, strict=True))
    for rec, src in zip(recs, RECS, strict=True):
        body = json.dumps(
            {k: src[k] for k in ("instruction", "input", "output", "family")},
            ensure_ascii=False,
        )
        assert rec["id"] == hashlib.sha256(body.encode()).hexdigest()[:16]
    assert recs[7]["output"] == RECS[7]["output"]
    assert len({r["id"] for r in recs}) == len(recs)
    assert info["shape"] == "instruction" and info["count"] == len(RECS)
    again, info2, _ = imp(tmp_path / "again", path=info["source"])
    assert again == recs and info2["sha256"] == info["sha256"]  # stable across runs


def test_text_units_give_text_records(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "lines.txt").write_text("\n".join(TEXTS) + "\n\n", encoding="utf-8")
    (src / "paras.txt").write_text(
        "The first document.\n\nA second one, with ünïcode.\n\n\nThird.\n",
        encoding="utf-8",
    )
    docs = tmp_path / "docs"
    docs.mkdir()
    for i, t in enumerate(TEXTS):
        (docs / f"{i}.txt").write_text(t, encoding="utf-8")
    (tmp_path / "t.jsonl").write_text(
        "".join(json.dumps({"text": t}) + "\n" for t in TEXTS), encoding="utf-8"
    )
    want, info, _ = imp(tmp_path / "o0", path=str(tmp_path / "t.jsonl"))
    assert info["shape"] == "text"
    lines, _, m = imp(tmp_path / "o1", path=str(src / "lines.txt"))
    paras, _, _ = imp(
        tmp_path / "o2", path=str(src / "paras.txt"), text_unit="paragraph"
    )
    files, _, _ = imp(tmp_path / "o3", path=str(docs), text_unit="file")
    assert lines == paras == files == want
    import hashlib

    for rec, t in zip(want, TEXTS, strict=True):
        body = json.dumps({"text": t}, ensure_ascii=False).encode()
        assert rec == {"id": hashlib.sha256(body).hexdigest()[:16], "text": t}
    assert m["records_read"] == 4 and m["records_written"] == 3  # blank line skipped


@pytest.mark.parametrize(
    "split, want",
    [
        ("train[:5]", slice(0, 5)),
        ("train[25%:50%]", slice(10, 20)),
        ("train[-3:]", slice(37, 40)),
        ("train[:2]+train[-2:]", [0, 1, 38, 39]),
    ],
)
def test_split_slices(split, want, tmp_path, reference):
    recs, info, _ = imp(
        tmp_path / "o", path=write("folder", tmp_path, RECS), split=split
    )
    ref = reference[0]
    expect = ref[want] if isinstance(want, slice) else [ref[i] for i in want]
    assert recs == expect and info["split"] == split


def test_named_splits_of_a_folder_and_a_saved_dict(tmp_path):
    from datasets import Dataset, DatasetDict

    src = tmp_path / "named"
    src.mkdir()
    (src / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECS[:30]))
    (src / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECS[30:]))
    test, _, _ = imp(tmp_path / "o1", path=str(src), split="test")
    train, _, _ = imp(tmp_path / "o2", path=str(src))
    assert [r["instruction"] for r in test] == [r["instruction"] for r in RECS[30:]]
    assert len(train) == 30
    saved = tmp_path / "dict"
    DatasetDict(
        {"train": Dataset.from_list(RECS[:30]), "test": Dataset.from_list(RECS[30:])}
    ).save_to_disk(str(saved))
    test2, _, _ = imp(tmp_path / "o3", path=str(saved), split="test[:4]")
    assert test2 == test[:4]


def test_limit_and_seeded_sample(tmp_path, reference):
    path = write("jsonl", tmp_path / "src", RECS)
    ref = reference[0]
    first, _, _ = imp(tmp_path / "l", path=path, limit=7)
    assert first == ref[:7]
    a, _, _ = imp(tmp_path / "a", seed=1, path=path, sample=10)
    b, _, _ = imp(tmp_path / "b", seed=1, path=path, sample=10)
    c, _, _ = imp(tmp_path / "c", seed=2, path=path, sample=10)
    assert a == b and len(a) == 10 and a != c
    ids = [r["id"] for r in ref]
    assert [ids.index(r["id"]) for r in a] == sorted(ids.index(r["id"]) for r in a)
    half, _, _ = imp(tmp_path / "h", seed=1, path=path, sample=0.5)
    assert len(half) == 20 and set(map(str, a)) != set(map(str, half))


def test_dedup_drop_keep(tmp_path):
    recs = RECS[:5] + [RECS[1], RECS[3], RECS[1]] + [dict(RECS[0], family="other")]
    path = write("jsonl", tmp_path / "src", recs)
    dropped, info, m = imp(tmp_path / "d", path=path)
    assert m["duplicates_dropped"] == 3 == info["duplicates_dropped"]
    assert len(dropped) == 6 and m["records_read"] == 9
    kept, _, m2 = imp(tmp_path / "k", path=path, dedup="keep")
    assert len(kept) == 9 and m2["duplicates_dropped"] == 0
    ids = [r["id"] for r in kept]
    assert len(set(ids)) == 9
    assert ids[5] == f"{ids[1]}-2" and ids[7] == f"{ids[1]}-3"


def test_id_column_is_kept(tmp_path):
    recs = [dict(r, uid=f"q{i}") for i, r in enumerate(RECS[:4])]
    out, info, _ = imp(
        tmp_path / "o", path=write("csv", tmp_path / "s", recs), columns={"uid": "id"}
    )
    assert [r["id"] for r in out] == ["q0", "q1", "q2", "q3"]
    assert info["columns"]["uid"] == "id"


def test_hash_follows_content_not_path_or_mtime(tmp_path):
    a = tmp_path / "a" / "d.jsonl"
    write("jsonl", a.parent, RECS)
    _, first, _ = imp(tmp_path / "o1", path=str(a))
    b = tmp_path / "elsewhere" / "renamed.jsonl"
    b.parent.mkdir()
    shutil.copy(a, b)
    os.utime(b, (1_000_000, 1_000_000))
    _, moved, _ = imp(tmp_path / "o2", path=str(b))
    assert moved["sha256"] == first["sha256"]
    # an edit of the same size with the mtime put back: datasets' own cache
    # (keyed by path + mtime) would serve the old rows; the private cache does not
    st = a.stat()
    text = a.read_text()
    edited = text.replace('"output": "1"', '"output": "9"', 1)
    assert edited != text and len(edited) == len(text)
    a.write_text(edited)
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert a.stat().st_mtime_ns == st.st_mtime_ns
    recs, after, _ = imp(tmp_path / "o3", path=str(a))
    assert after["sha256"] != first["sha256"]
    assert recs[0]["output"] == "9"


def test_sharegpt_and_mapped_columns(tmp_path):
    convs = [
        {
            "conversations": [
                {"from": "system", "value": "Be brief."},
                {"from": "human", "value": f"Hi {i}?"},
                {"from": "gpt", "value": f"Hello {i}."},
            ]
        }
        for i in range(3)
    ]
    path = write("jsonl", tmp_path / "sg", convs)
    recs, info, _ = imp(tmp_path / "o", path=path)
    assert info["shape"] == "chat" and info["columns"] == {"conversations": "messages"}
    assert recs[1]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi 1?"},
        {"role": "assistant", "content": "Hello 1."},
    ]
    chat = [
        {
            "messages": [
                dict(role=m, content=c)
                for m, c in zip(
                    ("system", "user", "assistant"),
                    (t["value"] for t in c["conversations"]),
                    strict=True,
                )
            ]
        }
        for c in convs
    ]
    same, _, _ = imp(tmp_path / "o2", path=write("jsonl", tmp_path / "chat", chat))
    assert same == recs  # ShareGPT and role/content files give the same ids
    alpaca = [{"prompt": r["instruction"], "response": r["output"]} for r in RECS[:3]]
    mapped, info3, _ = imp(
        tmp_path / "o3",
        path=write("jsonl", tmp_path / "al", alpaca),
        columns={"prompt": "instruction", "response": "output"},
    )
    assert [r["output"] for r in mapped] == [r["output"] for r in RECS[:3]]
    assert info3["columns"] == {"prompt": "instruction", "response": "output"}


def test_declared_stage_runs_through_the_contract(tmp_path, reference):
    path = write("parquet", tmp_path / "src", RECS)
    decl = validate(
        {
            "pipeline": "t",
            "seed": 3,
            "stages": {"d": {"kind": "dataset", "method": "files", "path": path}},
        }
    )
    stage = decl.stages["d"]
    params = stage.variants[0][1]
    assert stage.kind == "dataset" and params.method == "files" and params.seed == 3
    res = KIND.run(params, {}, tmp_path / "out", RunContext(seed=params.seed))
    assert res.datasets == ["data.jsonl"] and res.metrics["records_written"] == 40
    assert read_dataset(tmp_path / "out") == reference[0]


def test_hub_rows_take_the_shared_path(tmp_path, monkeypatch, reference):
    import datasets

    def fake_load(repo, name=None, split=None, **kw):
        assert (repo, name, split) == ("org/data", "cfg", "train")
        return datasets.Dataset.from_list(RECS)

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    recs, info, m = imp(
        tmp_path / "o",
        method="hub",
        id="org/data",
        name="cfg",
        split="train[:10%]",
        revision="v1",
    )
    assert recs == reference[0][:4]
    assert info["source"] == "hub:org/data/cfg" and info["revision"] == "v1"


def test_declared_format_picks_that_format_in_a_folder(tmp_path, reference):
    src = tmp_path / "mixed"
    write("csv", src, RECS)
    (src / "notes.jsonl").write_text(json.dumps({"text": "not these"}) + "\n")
    (src / "README.md").write_text("# about")
    recs, info, _ = imp(tmp_path / "o", path=str(src), format="csv")
    assert recs == reference[0] and info["files"] == [str(src / "d.csv")]
