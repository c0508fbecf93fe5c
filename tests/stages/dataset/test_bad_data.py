"""Bad data for the dataset kind's files and hub methods: every case is refused
with one line that names the file (or the declared field) and the row or field
at fault, and says what to do; never a library traceback."""

import json

import pytest

from pipelines.contract import RunContext
from pipelines.spec import DeclarationError, validate
from stages.dataset import KIND

GOOD = {"instruction": "Say hi.", "input": "", "output": "hi"}


def lines(tmp, name, rows):
    """A JSONL file of ``rows`` (dicts are dumped, str/bytes written as is)."""
    f = tmp / name
    with open(f, "wb") as h:
        for r in rows:
            b = (
                r
                if isinstance(r, bytes)
                else (r if isinstance(r, str) else json.dumps(r))
            )
            h.write((b if isinstance(b, bytes) else b.encode()) + b"\n")
    return str(f)


def good(i):
    return {**GOOD, "instruction": f"Say hi {i}."}


def chat(*turns):
    return {"messages": [dict(zip(("role", "content"), t, strict=True)) for t in turns]}


# each case: tmp folder -> (stage params, fragments the message must hold)
def file_missing(t):
    return {"path": str(t / "nope.jsonl")}, ["nope.jsonl", "does not exist"]


def list_with_missing(t):
    ok = lines(t, "a.jsonl", [GOOD])
    return {"path": [ok, str(t / "b.jsonl")]}, ["b.jsonl", "does not exist"]


def folder_empty(t):
    (t / "empty").mkdir()
    return {"path": str(t / "empty")}, ["empty", "no data file"]


def folder_no_data_files(t):
    (t / "docs").mkdir()
    (t / "docs" / "README.md").write_text("# notes")
    return {"path": str(t / "docs")}, ["docs", "no data file"]


def folder_mixed_formats(t):
    (t / "mix").mkdir()
    lines(t / "mix", "a.jsonl", [GOOD])
    (t / "mix" / "b.csv").write_text("instruction,output\nx,y\n")
    return {"path": str(t / "mix")}, ["mix", "mixes formats", "csv", "json"]


def unknown_extension(t):
    (t / "d.xlsx").write_bytes(b"PK\x03\x04")
    return {"path": str(t / "d.xlsx")}, ["d.xlsx", "'.xlsx'", "format"]


def row_not_json(t):
    f = lines(
        t, "d.jsonl", [good(1), good(2), '{"instruction": "x", "output": ', good(4)]
    )
    return {"path": f}, ["d.jsonl", "row 3", "not JSON"]


def row_not_object(t):
    return {"path": lines(t, "d.jsonl", [good(1), "[1, 2]"])}, [
        "d.jsonl",
        "row 2",
        "object",
    ]


def json_one_object(t):
    (t / "d.json").write_text(json.dumps({"meta": 1, "rows": [GOOD]}, indent=2))
    return {"path": str(t / "d.json")}, ["d.json", "one JSON object", "field"]


def json_list_not_records(t):
    (t / "d.json").write_text(json.dumps([GOOD, 5, "x"], indent=1))
    return {"path": str(t / "d.json")}, ["d.json", "row 2"]


def csv_missing_mapped_column(t):
    (t / "d.csv").write_text("question,answer\nWhat?,That.\n")
    return {"path": str(t / "d.csv"), "columns": {"prompt": "instruction"}}, [
        "d.csv",
        "'prompt'",
        "question, answer",
    ]


def csv_empty(t):
    (t / "d.csv").write_text("")
    return {"path": str(t / "d.csv")}, ["d.csv", "empty"]


def csv_not_utf8(t):
    (t / "d.csv").write_bytes(b"instruction,output\nok,fine\ncaf\xe9,x\n")
    return {"path": str(t / "d.csv")}, ["d.csv", "row 3", "UTF-8"]


def mapped_field_absent(t):
    f = lines(t, "d.jsonl", [good(1), {"instruction": "no answer"}, good(3)])
    return {"path": f}, ["d.jsonl", "row 2", "'output'", "missing"]


def wrong_type(t):
    f = lines(t, "d.jsonl", [good(1), {"instruction": "2+2?", "output": 4}])
    return {"path": f}, ["d.jsonl", "row 2", "'output'", "number", "quote"]


def wrong_type_mapped_column(t):
    rows = [{"q": "2+2?", "a": 4}, {"q": "3+3?", "a": 6}]
    return {
        "path": lines(t, "d.jsonl", rows),
        "columns": {"q": "instruction", "a": "output"},
    }, [
        "row 1",
        "'output' (field 'a')",
        "number",
    ]


def empty_instruction(t):
    f = lines(t, "d.jsonl", [good(1), {**GOOD, "instruction": "   "}])
    return {"path": f}, ["d.jsonl", "row 2", "'instruction'", "empty"]


def empty_output(t):
    f = lines(t, "d.jsonl", [{**GOOD, "output": ""}])
    return {"path": f}, ["d.jsonl", "row 1", "'output'", "empty"]


def empty_text(t):
    f = lines(t, "d.jsonl", [{"text": "a doc"}, {"text": "a doc too"}, {"text": ""}])
    return {"path": f}, ["d.jsonl", "row 3", "'text'", "empty"]


def txt_only_blank_lines(t):
    (t / "d.txt").write_text("\n  \n\n")
    return {"path": str(t / "d.txt")}, ["d.txt", "no record is left", "blank"]


def empty_after_split(t):
    f = lines(t, "d.jsonl", [good(i) for i in range(5)])
    return {"path": f, "split": "train[10:]"}, ["d.jsonl", "no record is left"]


def sample_rounds_to_zero(t):
    f = lines(t, "d.jsonl", [good(i) for i in range(10)])
    return {"path": f, "sample": 0.01}, ["sample", "of 10 rows keeps 0"]


def all_duplicates_refused(t):
    f = lines(t, "d.jsonl", [GOOD, GOOD, GOOD])
    return {"path": f, "dedup": "refuse"}, ["d.jsonl: row 2", "duplicates", "row 1"]


def duplicate_ids(t):
    rows = [dict(good(1), id="a"), dict(good(2), id="b"), dict(good(3), id="a")]
    return {"path": lines(t, "d.jsonl", rows)}, ["row 3", "id 'a'", "row 1", "unique"]


def id_empty(t):
    rows = [dict(good(1), id="a"), dict(good(2), id="")]
    return {"path": lines(t, "d.jsonl", rows)}, ["d.jsonl", "row 2", "'id'"]


def chat_no_assistant(t):
    f = lines(
        t, "d.jsonl", [chat(("user", "hi"), ("assistant", "yo")), chat(("user", "hi"))]
    )
    return {"path": f}, ["d.jsonl", "row 2", "'messages'", "no assistant turn"]


def chat_ends_with_user(t):
    f = lines(
        t, "d.jsonl", [chat(("user", "hi"), ("assistant", "yo"), ("user", "and?"))]
    )
    return {"path": f}, ["d.jsonl", "row 1", "'messages'", "ends with a user turn"]


def chat_unknown_role(t):
    f = lines(t, "d.jsonl", [chat(("user", "hi"), ("bot", "yo"))])
    return {"path": f}, ["row 1", "'messages'", "message 2", "'bot'"]


def chat_message_without_content(t):
    rows = [chat(("user", "hi"), ("assistant", "yo")), {"messages": [{"role": "user"}]}]
    return {"path": lines(t, "d.jsonl", rows)}, ["row 2", "message 1", "no content"]


def sharegpt_unknown_from(t):
    conv = [{"from": "human", "value": "hi"}, {"from": "bard", "value": "yo"}]
    f = lines(t, "d.jsonl", [{"conversations": conv}])
    return {"path": f}, ["row 1", "'messages' (field 'conversations')", "'bard'"]


def messages_not_list(t):
    f = lines(t, "d.jsonl", [{"messages": "hello there"}])
    return {"path": f}, ["d.jsonl", "row 1", "'messages'", "must be a list"]


def txt_not_utf8(t):
    (t / "d.txt").write_bytes(b"fine line\nanother\nna\xefve \xff\n")
    return {"path": str(t / "d.txt")}, ["d.txt", "row 3", "UTF-8"]


def jsonl_line_not_utf8(t):
    f = lines(t, "d.jsonl", [good(1), b'{"instruction": "caf\xe9", "output": "x"}'])
    return {"path": f}, ["d.jsonl", "row 2", "UTF-8"]


def record_too_large(t):
    big = {**GOOD, "output": "x" * (50 << 20)}
    return {"path": lines(t, "d.jsonl", [good(1), big])}, [
        "d.jsonl",
        "row 2",
        "max_record_bytes",
    ]


def parquet_garbage(t):
    (t / "d.parquet").write_bytes(b"this is not parquet at all" * 10)
    return {"path": str(t / "d.parquet")}, ["d.parquet", "cannot read it as parquet"]


def saved_folder_without_state(t):
    from datasets import Dataset

    Dataset.from_list([GOOD]).save_to_disk(str(t / "saved"))
    (t / "saved" / "state.json").unlink()
    return {"path": str(t / "saved")}, ["saved", "state.json"]


def split_does_not_exist(t):
    f = lines(t, "d.jsonl", [GOOD])
    return {"path": f, "split": "test"}, ["split", "'test'", "train (1 rows)"]


def bad_slice_syntax(t):
    f = lines(t, "d.jsonl", [GOOD])
    return {"path": f, "split": "train[:abc]"}, ["split", "train[:abc]", "syntax"]


def shape_text_without_text(t):
    f = lines(t, "d.jsonl", [GOOD])
    return {"path": f, "shape": "text"}, ["d.jsonl", "shape text", "'text'"]


def shape_unclear(t):
    f = lines(t, "d.jsonl", [{"question": "a", "answer": "b"}])
    return {"path": f}, ["d.jsonl", "record shape", "question"]


def shapes_both_mapped(t):
    f = lines(t, "d.jsonl", [{**GOOD, **chat(("user", "a"), ("assistant", "b"))}])
    return {"path": f}, ["d.jsonl", "chat and instruction", "shape"]


def hub_offline(t):
    return {"method": "hub", "id": "someone/missing-data"}, [
        "someone/missing-data",
        str(t / "hf-cache"),
        "method files",
    ]


RUN_CASES = [
    file_missing,
    list_with_missing,
    folder_empty,
    folder_no_data_files,
    folder_mixed_formats,
    unknown_extension,
    row_not_json,
    row_not_object,
    json_one_object,
    json_list_not_records,
    csv_missing_mapped_column,
    csv_empty,
    csv_not_utf8,
    mapped_field_absent,
    wrong_type,
    wrong_type_mapped_column,
    empty_instruction,
    empty_output,
    empty_text,
    txt_only_blank_lines,
    empty_after_split,
    sample_rounds_to_zero,
    all_duplicates_refused,
    duplicate_ids,
    id_empty,
    chat_no_assistant,
    chat_ends_with_user,
    chat_unknown_role,
    chat_message_without_content,
    sharegpt_unknown_from,
    messages_not_list,
    txt_not_utf8,
    jsonl_line_not_utf8,
    record_too_large,
    parquet_garbage,
    saved_folder_without_state,
    split_does_not_exist,
    bad_slice_syntax,
    shape_text_without_text,
    shape_unclear,
    shapes_both_mapped,
    hub_offline,
]


def declare(params):
    body = {"kind": "dataset", "method": "files", **params}
    decl = validate({"pipeline": "t", "stages": {"d": body}})
    return decl.stages["d"].variants[0][1]


@pytest.mark.parametrize("case", RUN_CASES, ids=lambda c: c.__name__)
def test_bad_data_is_refused_naming_file_and_row(case, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    params, fragments = case(tmp_path)
    p = declare(params)
    with pytest.raises((ValueError, OSError)) as err:
        KIND.run(p, {}, tmp_path / "out", RunContext(seed=0))
    msg = str(err.value)
    assert "\n" not in msg and "Traceback" not in msg, msg
    assert ";" in msg, f"no fix given: {msg}"  # "<what is wrong>; <what to do>"
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in: {msg}"
    assert not (tmp_path / "out" / "dataset.json").exists()


VALIDATION_CASES = [
    ({"limit": -1}, "stages.d.limit", "greater than or equal to 1"),
    ({"limit": 0}, "stages.d.limit", "greater than or equal to 1"),
    ({"sample": 0}, "stages.d.sample", "greater than 0"),
    ({"sample": 1.5}, "stages.d", "fraction must be <= 1"),
    ({"sample": 3, "limit": 2}, "stages.d", "not both"),
    ({"columns": {"prompt": "question"}}, "stages.d", "columns.prompt: unknown carp"),
    ({"columns": {"q": "instruction", "p": "instruction"}}, "stages.d", "'q' and 'p'"),
    ({"shape": "text", "columns": {"q": "instruction"}}, "stages.d", "shape text"),
    ({"dedup": "sometimes"}, "stages.d.dedup", "drop"),
    ({"format": "xlsx"}, "stages.d.format", "parquet"),
    ({"text_unit": "sentence"}, "stages.d.text_unit", "paragraph"),
    ({"path": []}, "stages.d.path", "at least 1"),
    ({"max_record_bytes": 0}, "stages.d.max_record_bytes", "greater than"),
    ({"method": "hub", "id": "../etc/passwd"}, "stages.d.id", "not a Hub dataset id"),
]


@pytest.mark.parametrize(
    "params, where, fragment",
    VALIDATION_CASES,
    ids=[str(c[0]) for c in VALIDATION_CASES],
)
def test_bad_params_fail_validation_naming_the_field(params, where, fragment):
    full = {"path": "d.jsonl", **params}
    if full.get("method") == "hub":
        full.pop("path")
    with pytest.raises(DeclarationError) as err:
        declare(full)
    msg = str(err.value)
    assert where in msg and fragment in msg, msg


def test_the_catalogue_is_large_enough():
    assert len(RUN_CASES) + len(VALIDATION_CASES) >= 32


def test_cli_checks_a_single_path_before_running(tmp_path):
    from pipelines.spec import local_path_issues

    def issues(path):
        body = {"kind": "dataset", "method": "files", "path": path}
        decl = validate({"pipeline": "t", "stages": {"d": body}})
        return [str(i) for i in local_path_issues(decl, root=tmp_path)]

    (tmp_path / "here.jsonl").write_text(json.dumps(GOOD) + "\n")
    (tmp_path / "folder").mkdir()
    assert issues("here.jsonl") == [] and issues("folder") == []
    assert issues("gone.jsonl") == ["stages.d.path: gone.jsonl does not exist"]
    assert issues(["gone.jsonl"]) == []  # a list is checked when the stage runs
