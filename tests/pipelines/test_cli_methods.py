"""`carp methods`: every registered method listed with its one-line summary."""

import pytest

from pipelines.cli import main


@pytest.mark.parametrize(
    ("kind", "names"),
    [
        ("prune", ["depth", "magnitude", "sparsegpt", "wanda", "width"]),
        ("select", ["full", "ifd", "paser", "perplexity", "random"]),
        ("recover", ["distill", "full", "lora"]),
        (
            "evaluate",
            [
                "datasets",
                "lm_eval",
                "world",
                "exact_match",
                "lm_eval",
                "multiple_choice",
                "perplexity",
                "unlearning",
            ],
        ),
    ],
)
def test_methods_lists_every_method(kind, names, capsys):
    assert main(["methods", kind]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert [ln.split()[0] for ln in lines if ln.startswith("  ")] == names


def test_methods_lists_catalogs(capsys):
    assert main(["methods", "evaluate"]) == 0
    assert "evaluate suites:" in capsys.readouterr().out
    assert main(["methods", "world"]) == 0
    out = capsys.readouterr().out
    assert "world families:" in out and "  facts" in out


def test_summary_does_not_stop_at_et_al(capsys):
    main(["methods", "prune"])
    out = capsys.readouterr().out
    assert "(Sun et al. 2023," in out


def test_prune_states_the_nm_convention(capsys):
    main(["methods", "prune"])
    out = capsys.readouterr().out
    assert "prune note: pattern: N:M keeps N of every M" in out
    assert "prune_n" in out
    assert "magnitude 'layer'" in out and "wanda 'row'" in out  # scope defaults


def test_unknown_kind_is_a_clear_error(capsys):
    assert main(["methods", "prnue"]) == 2
    assert "did you mean 'prune'" in capsys.readouterr().err


def test_methods_piped_into_head_ends_quietly():
    """`carp methods | head -1`: the reader closing the pipe is not an error
    (the pipe is closed before carp writes anything, so every write fails)."""
    import subprocess
    import sys
    from pathlib import Path

    carp = Path(sys.executable).with_name("carp")
    proc = subprocess.Popen(
        [carp, "methods", "evaluate"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc.stdout.close()  # the reader is gone
    err = proc.stderr.read()
    assert proc.wait() == 0, err
    assert "BrokenPipe" not in err and "failed" not in err and "Exception" not in err
