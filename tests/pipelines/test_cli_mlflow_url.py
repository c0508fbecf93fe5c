"""`carp report` points at the MLflow runs page of the pipeline's experiment."""

import sqlite3

from pipelines.cli import sqlite_experiment_id


def test_experiment_id_read_from_sqlite_store(tmp_path):
    db = tmp_path / "mlflow.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE experiments (experiment_id INTEGER, name TEXT)")
        con.executemany(
            "INSERT INTO experiments VALUES (?, ?)",
            [(0, "Default"), (7, "carp-tiny-demo"), (9, "carp-other")],
        )
    uri = f"sqlite:///{db}"
    assert sqlite_experiment_id(uri, "carp-tiny-demo") == "7"
    assert sqlite_experiment_id(uri, "carp-other") == "9"
    assert sqlite_experiment_id(uri, "carp-missing") is None


def test_no_store_no_id(tmp_path):
    assert sqlite_experiment_id(f"sqlite:///{tmp_path / 'absent.db'}", "x") is None
    (tmp_path / "junk.db").write_bytes(b"not a database")
    assert sqlite_experiment_id(f"sqlite:///{tmp_path / 'junk.db'}", "x") is None
