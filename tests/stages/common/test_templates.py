"""Prompt templates: token-by-token masks of alpaca and chat, carp identical to
the encoding carp always had, the errors users meet, packing."""

from __future__ import annotations

import re
from typing import Any

import pytest

from stages.common.templates import check_template, get_template, pack
from stages.common.text import IGNORE_INDEX, encode_example

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<pad>", "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>"]
PIECE = r"\w+|[^\w]"  # a word, or any single other character (space, \n, #, :)
CORPUS = [
    "Below is an instruction that describes a task, paired with an input that "
    "provides further context. Write a response that appropriately completes "
    "the request.\n\n### Instruction:\n### Input:\n### Response:\n",
    "Q: A: user assistant system add sum 2 3 5 7 be brief hello hi there "
    "Task Answer the quick brown fox",
]


def word_tokenizer(chat_template: str | None = None) -> Any:
    """Word-level: every word and every other single character is one token,
    so the expected token lists below can be written by hand."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pieces = sorted({p for t in CORPUS for p in re.findall(PIECE, t)})
    vocab = {t: i for i, t in enumerate(SPECIAL + pieces)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(PIECE), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(SPECIAL)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    fast.chat_template = chat_template
    return fast


def toks(tok: Any, ids: list[int]) -> list[str]:
    return tok.convert_ids_to_tokens(ids)


def labelled(tok: Any, labels: list[int]) -> list[str | None]:
    """Token strings of the labels, None where masked."""
    return [None if x == IGNORE_INDEX else tok.convert_ids_to_tokens(x) for x in labels]


def split(s: str) -> list[str]:
    """A hand-written token list, tokens separated by ``|`` (the ChatML
    markers keep theirs)."""
    marks = {"\x00S": "<|im_start|>", "\x00E": "<|im_end|>"}
    for k, v in marks.items():
        s = s.replace(v, k)
    out = s.split("|")
    for k, v in marks.items():
        out = [t.replace(k, v) for t in out]
    return out


def check_no_unk(tok: Any, ids: list[int]) -> None:
    assert tok.unk_token_id not in ids, toks(tok, ids)


INST = {"id": "r1", "instruction": "add 2 3", "input": "", "output": "5"}
CHAT = {
    "id": "c1",
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi there"},
        {"role": "user", "content": "add 2 3"},
        {"role": "assistant", "content": "5"},
    ],
}


def test_alpaca_no_input_mask_token_by_token() -> None:
    tok = word_tokenizer()
    ids, labels = get_template("alpaca").encode(tok, INST, 512)
    check_no_unk(tok, ids)
    prompt = split(
        "Below| |is| |an| |instruction| |that| |describes| |a| |task|.| |Write| |a"
        "| |response| |that| |appropriately| |completes| |the| |request|.|\n|\n"
        "|#|#|#| |Instruction|:|\n|add| |2| |3|\n|\n|#|#|#| |Response|:|\n"
    )
    assert toks(tok, ids) == ["<s>", *prompt, "5", "</s>"]
    assert labelled(tok, labels) == [None] * (1 + len(prompt)) + ["5", "</s>"]


def test_alpaca_with_input_prompt_text() -> None:
    rec = {**INST, "instruction": "add", "input": "2 3"}
    text = get_template("alpaca").prompt_text(rec)
    assert text == (
        "Below is an instruction that describes a task, paired with an input that "
        "provides further context. Write a response that appropriately completes "
        "the request.\n\n### Instruction:\nadd\n\n### Input:\n2 3\n\n### Response:\n"
    )
    tok = word_tokenizer()
    ids, labels = get_template("alpaca").encode(tok, rec, 512)
    check_no_unk(tok, ids)
    tail = split("|\n|\n|#|#|#| |Input|:|\n|2| |3|\n|\n|#|#|#| |Response|:|\n")[1:]
    assert toks(tok, ids)[-len(tail) - 2 :] == [*tail, "5", "</s>"]
    assert sum(x != IGNORE_INDEX for x in labels) == 2


def test_chat_multi_turn_mask_token_by_token() -> None:
    tok = word_tokenizer(CHATML)
    t = get_template("chat")
    ids, labels = t.encode(tok, CHAT, 512)
    check_no_unk(tok, ids)
    prompt = split(
        "<|im_start|>|system|\n|be| |brief|<|im_end|>|\n"
        "|<|im_start|>|user|\n|hello|<|im_end|>|\n"
        "|<|im_start|>|assistant|\n|hi| |there|<|im_end|>|\n"
        "|<|im_start|>|user|\n|add| |2| |3|<|im_end|>|\n"
        "|<|im_start|>|assistant|\n"
    )
    response = ["5", "<|im_end|>", "\n"]
    assert toks(tok, ids) == ["<s>", *prompt, *response]
    # earlier assistant turns are context: only the last turn is a label
    assert labelled(tok, labels) == [None] * (1 + len(prompt)) + response
    assert t.prompt_ids(tok, CHAT) == ids[: 1 + len(prompt)]
    assert t.response_text(CHAT) == "5"


def test_chat_on_an_instruction_record() -> None:
    tok = word_tokenizer(CHATML)
    ids, labels = get_template("chat").encode(tok, INST, 512)
    prompt = split("<|im_start|>|user|\n|add| |2| |3|<|im_end|>|\n|<|im_start|>")
    prompt += ["assistant", "\n"]
    assert toks(tok, ids) == ["<s>", *prompt, "5", "<|im_end|>", "\n"]
    assert labelled(tok, labels)[: 1 + len(prompt)] == [None] * (1 + len(prompt))


def test_no_double_bos_when_the_chat_template_renders_it() -> None:
    tok = word_tokenizer("{{ bos_token }}" + CHATML)
    t = get_template("chat")
    ids, labels = t.encode(tok, INST, 512)
    assert ids[0] == tok.bos_token_id and ids[1] != tok.bos_token_id
    assert ids.count(tok.bos_token_id) == 1
    assert labels[0] == IGNORE_INDEX
    assert t.prompt_ids(tok, INST).count(tok.bos_token_id) == 1
    # the same rows as a template that does not render bos (bos added once)
    assert ids == get_template("chat").encode(word_tokenizer(CHATML), INST, 512)[0]


def test_chat_without_a_chat_template_names_the_tokenizer() -> None:
    tok = word_tokenizer(None)
    tok.name_or_path = "tiny-words"
    with pytest.raises(ValueError, match="tiny-words.*has no chat template; use "):
        get_template("chat").encode(tok, INST, 512)


def test_chat_record_without_an_assistant_turn_names_the_record() -> None:
    rec = {"id": "lonely", "messages": [{"role": "user", "content": "hello"}]}
    for name in ("chat", "carp", "alpaca"):
        with pytest.raises(ValueError, match="'lonely'.*no assistant message"):
            get_template(name).encode(word_tokenizer(CHATML), rec, 64)


def test_chat_prompt_not_a_prefix_is_an_error() -> None:
    # the generation prompt differs from how the assistant turn is rendered
    odd = CHATML.replace(
        "<|im_start|>assistant\n{% endif %}", "<|im_start|>system\n{% endif %}"
    )
    with pytest.raises(ValueError, match="'r1'.*not a token prefix"):
        get_template("chat").encode(word_tokenizer(odd), INST, 512)


def test_string_templates_read_the_last_user_turn_of_a_chat_record() -> None:
    tok = word_tokenizer()
    carp = get_template("carp")
    ids, labels = carp.encode(tok, CHAT, 512)
    assert toks(tok, ids) == split("<s>|Q|:| |add| |2| |3|\n|A|:| |5|</s>")
    assert labelled(tok, labels) == [None] * 12 + [" ", "5", "</s>"]


def old_encode_example(tokenizer: Any, rec: dict[str, Any], max_len: int) -> tuple:
    """encode_example as it was before templates (the reference to match)."""
    from stages.common.text import format_prompt, format_response

    prompt = tokenizer(format_prompt(rec), add_special_tokens=False)["input_ids"]
    resp = tokenizer(format_response(rec), add_special_tokens=False)["input_ids"]
    resp = resp + [tokenizer.eos_token_id]
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    keep = max_len - len(bos) - len(resp)
    if keep < 1:
        resp = resp[: max_len - len(bos) - 1]
        keep = 1
    prompt = prompt[-keep:]
    return bos + prompt + resp, [IGNORE_INDEX] * (len(bos) + len(prompt)) + resp


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from stages.common.io import read_jsonl
    from tests.tiny import micro_world, world_tokenizer

    out = micro_world(tmp_path_factory.mktemp("world"))
    recs = list(read_jsonl(out / "data.jsonl"))
    for f in [out / "forget.jsonl", *sorted((out / "eval").glob("*.jsonl"))]:
        recs += list(read_jsonl(f))
    return world_tokenizer(out), recs


def test_carp_is_bit_identical_on_world_records(world: Any) -> None:
    tok, recs = world
    assert len(recs) > 50
    for max_len in (256, 24, 6):
        for r in recs:
            old = old_encode_example(tok, r, max_len)
            assert encode_example(tok, r, max_len) == old
            assert encode_example(tok, r, max_len, template="carp") == old
            assert get_template(None).encode(tok, r, max_len) == old


def test_prompt_ids_are_the_leading_tokens_of_encode(world: Any) -> None:
    tok, recs = world
    for name in ("carp", "alpaca", "Task: {{ instruction }} {{ input }}\nAnswer:"):
        t = get_template(name)
        for r in recs[:40]:
            ids, labels = t.encode(tok, r, 10**6)
            p = t.prompt_ids(tok, r)
            assert ids[: len(p)] == p
            assert all(x == IGNORE_INDEX for x in labels[: len(p)])
            assert all(x != IGNORE_INDEX for x in labels[len(p) :])


def test_truncation_cuts_the_prompt_from_the_left() -> None:
    tok = word_tokenizer(CHATML)
    for name in ("alpaca", "chat"):
        full, _ = get_template(name).encode(tok, INST, 512)
        ids, labels = get_template(name).encode(tok, INST, 8)
        assert len(ids) == 8 and ids[0] == tok.bos_token_id
        n_resp = sum(x != IGNORE_INDEX for x in labels)
        assert ids[8 - n_resp :] == full[len(full) - n_resp :]
        assert ids[1:] == full[len(full) - 7 :]


def test_train_on_inputs_labels_the_prompt_but_not_bos() -> None:
    tok = word_tokenizer(CHATML)
    for name in ("carp", "alpaca", "chat"):
        ids, labels = get_template(name).encode(tok, CHAT, 512, train_on_inputs=True)
        assert labels[0] == IGNORE_INDEX and ids[0] == tok.bos_token_id
        assert labels[1:] == ids[1:]
        masked = encode_example(tok, CHAT, 512, name)
        assert masked[0] == ids
        assert encode_example(tok, CHAT, 512, name, train_on_inputs=True) == (
            ids,
            labels,
        )


def test_text_records_label_every_token() -> None:
    tok = word_tokenizer(CHATML)
    rec = {"id": "t1", "text": "the quick brown fox"}
    for name in ("carp", "alpaca", "chat", "{{ instruction }}"):
        ids, labels = get_template(name).encode(tok, rec, 512)
        assert toks(tok, ids) == split("<s>|the| |quick| |brown| |fox|</s>")
        assert labels == [IGNORE_INDEX] + ids[1:]
        ids, labels = get_template(name).encode(tok, rec, 4)
        assert toks(tok, ids) == split("<s>|the| |quick")  # the start is kept
        assert get_template(name).prompt_ids(tok, rec) == [tok.bos_token_id]


def test_jinja_template_renders_record_fields() -> None:
    tok = word_tokenizer()
    t = get_template("Task: {{ instruction }}\nAnswer:")
    rec = {**INST, "instruction": "add 2 3"}
    assert t.prompt_text(rec) == "Task: add 2 3\nAnswer:"
    ids, labels = t.encode(tok, rec, 64)
    assert toks(tok, ids) == split("<s>|Task|:| |add| |2| |3|\n|Answer|:|5|</s>")
    assert labelled(tok, labels) == [None] * 12 + ["5", "</s>"]
    # a trailing newline of the template is kept (Jinja drops it by default)
    assert get_template("{{ instruction }}\n").prompt_text(rec) == "add 2 3\n"


def test_jinja_missing_field_names_the_field_and_record() -> None:
    t = get_template("{{ instruction }} {{ context }}")
    with pytest.raises(ValueError, match="'r1'.*needs field 'context'"):
        t.encode(word_tokenizer(), INST, 64)


def test_template_names_are_checked() -> None:
    assert check_template(None) is None
    assert check_template("alpaca") == "alpaca"
    assert check_template("{{ instruction }}") == "{{ instruction }}"
    with pytest.raises(ValueError, match=r"unknown template 'alpacca'; known: carp"):
        check_template("alpacca")
    with pytest.raises(ValueError, match="invalid Jinja"):
        check_template("{{ instruction ")


def test_missing_instruction_names_the_record() -> None:
    for name in ("carp", "alpaca", "chat"):
        with pytest.raises(ValueError, match="'x'.*'instruction'"):
            get_template(name).encode(word_tokenizer(CHATML), {"id": "x"}, 64)


def test_pack_windows_of_exactly_max_len() -> None:
    rows = [([1, 5, 6, 2], [-100, 5, 6, 2]), ([1, 7, 2], [-100, 7, 2])]
    rows.append(([1, 8, 9, 10, 2], [-100, -100, 9, 10, 2]))
    packed = pack(rows, 5)
    assert packed == [
        ([1, 5, 6, 2, 1], [-100, 5, 6, 2, -100]),
        ([7, 2, 1, 8, 9], [7, 2, -100, -100, 9]),
    ]  # 12 tokens: two windows, the tail of 2 dropped
    assert all(len(i) == len(lab) == 5 for i, lab in packed)
    with pytest.raises(ValueError, match="do not fill one window"):
        pack(rows, 13)
    with pytest.raises(ValueError, match="one label per token"):
        pack([([1, 2], [1])], 2)


@pytest.mark.parametrize(
    ("kind", "method", "fields"),
    [
        ("select", "random", {"pool": "w", "budget": 0.5}),
        ("recover", "full", {"model": "m", "data": "d"}),
        ("unlearn", "ga", {"model": "m", "forget": "f"}),
        ("evaluate", "world", {"models": ["m"], "data": "w"}),
    ],
)
def test_every_consuming_kind_checks_its_template(
    kind: str, method: str, fields: dict[str, Any]
) -> None:
    from pydantic import ValidationError

    from pipelines.kinds import load_kind

    cls = load_kind(kind).params_class(method)
    assert cls(**fields).template is None
    assert cls(**fields, template="alpaca").template == "alpaca"
    with pytest.raises(ValidationError, match="unknown template 'alpacca'; known"):
        cls(**fields, template="alpacca")
    if kind in ("recover", "unlearn"):
        assert cls(**fields).train_on_inputs is False
        assert cls(**fields, train_on_inputs=True).train_on_inputs is True


def test_the_call_sites_follow_the_template() -> None:
    from stages.evaluate.exact_match import answer_budget
    from stages.evaluate.generation import prompt_ids
    from stages.evaluate.multiple_choice import option_pair, world_items
    from stages.select.perplexity import _response_only
    from stages.select.scoring import encode_records, lm_key

    tok = word_tokenizer(CHATML)
    recs = [INST, {**INST, "id": "r2", "output": "7"}]
    alpaca = get_template("alpaca")
    assert encode_records(tok, recs, 512, "alpaca") == [
        alpaca.encode(tok, r, 512) for r in recs
    ]
    assert lm_key(INST) == lm_key(INST, "carp") != lm_key(INST, "alpaca")
    assert lm_key(INST, "alpaca") != lm_key(INST, "chat")
    for name in (None, "alpaca", "chat"):
        t = get_template(name)
        assert prompt_ids(tok, INST, name) == t.prompt_ids(tok, INST)
    assert prompt_ids(tok, INST, "chat")[-2:] == tok.convert_tokens_to_ids(
        ["assistant", "\n"]
    )
    # carp's answer is " 5" (2 tokens), alpaca's "5" (1), both + eos
    assert answer_budget(tok, recs) == 3 and answer_budget(tok, recs, "alpaca") == 2
    ids, labels = _response_only(tok, INST, 64, "alpaca")
    assert toks(tok, ids) == ["<s>", "5", "</s>"] and labels[1:] == ids[1:]
    items = world_items({"add": recs}, 2, seed=0, template="alpaca")
    ctx, cont = option_pair(tok, items[0], "7", "alpaca")
    assert ctx == alpaca.prompt_ids(tok, INST) and toks(tok, cont) == ["7"]
    carp_items = world_items({"add": recs}, 2, seed=0)
    assert "record" not in carp_items[0]
    assert carp_items[0]["question"] == "Q: add 2 3\nA:"


def test_recover_and_unlearn_train_on_the_template_encoding(tmp_path: Any) -> None:
    from pipelines.contract import RunContext
    from stages.common.io import write_dataset
    from stages.common.train.launch import make_job
    from stages.recover import METHODS as RECOVER
    from stages.recover.task import build as build_recover
    from stages.unlearn import METHODS as UNLEARN
    from stages.unlearn.task import build as build_unlearn
    from tests.tiny import char_tokenizer, records, tiny_llama, write_checkpoint

    tok = char_tokenizer()
    model = write_checkpoint(tiny_llama(tok, hidden=16, heads=2), tok, tmp_path / "m")
    recs = [{**r, "id": f"r{i}"} for i, r in enumerate(records(4))]
    data = tmp_path / "data"
    write_dataset(recs, data, source="test")
    ctx = RunContext(seed=0)
    want = [encode_example(tok, r, 64, "alpaca", True) for r in recs]
    assert want != [encode_example(tok, r, 64) for r in recs]

    p = RECOVER.load("full").Params(
        model="m", data="d", max_len=64, template="alpaca", train_on_inputs=True
    )
    job = make_job("", "recover", p, {"model": model, "data": data}, tmp_path, ctx)
    assert build_recover(job, "cpu").examples == want

    p = UNLEARN.load("ga").Params(
        model="m", forget="f", max_len=64, template="alpaca", train_on_inputs=True
    )
    job = make_job("", "unlearn", p, {"model": model, "forget": data}, tmp_path, ctx)
    assert [f for _, f, _ in build_unlearn(job, "cpu").examples] == want
