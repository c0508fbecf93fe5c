"""``deepspeed.config`` keys that make DeepSpeed write files, kept inside the
stage's output folder.

A declaration may pass any DeepSpeed key through ``deepspeed.config``. Those
that name a place to write (monitor logs, NVMe swap, profiler reports,
autotuning results, Nebula checkpoints) must be relative paths without ``..``;
at launch they are rewritten under the stage's (temporary) output folder, so a
run never writes outside it. Known keys are listed with what they write; any
other key ending in ``_path``, ``_dir``, ``_file`` or ``_folder`` is treated
the same way.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

WRITES = {
    "output_path": "monitor logs (tensorboard, csv_monitor)",
    "nvme_path": "ZeRO-Infinity NVMe swap files",
    "output_file": "flops profiler report",
    "results_dir": "autotuning results",
    "exps_dir": "autotuning experiments",
    "persistent_storage_path": "Nebula checkpoints",
    "data_cluster_path": "curriculum data clusters",
    "save_path": "files DeepSpeed saves",
}
SUFFIXES = ("_path", "_dir", "_file", "_folder")


def writes_files(key: str) -> bool:
    return key in WRITES or key.endswith(SUFFIXES)


def _walk(node: Any, path: str):
    """(dotted path, key, value) of every mapping entry, iteratively."""
    todo = [(node, path)]
    while todo:
        cur, where = todo.pop()
        items = (
            cur.items()
            if isinstance(cur, dict)
            else enumerate(cur)
            if isinstance(cur, list)
            else ()
        )
        for k, v in items:
            sub = f"{where}.{k}" if isinstance(cur, dict) else f"{where}[{k}]"
            if isinstance(cur, dict):
                yield sub, str(k), v
            if isinstance(v, dict | list):
                todo.append((v, sub))


def path_issues(config: dict[str, Any]) -> list[str]:
    """One message per file-writing key that could leave the output folder."""
    out = []
    for where, key, value in _walk(config, "config"):
        if not writes_files(key):
            continue
        what = WRITES.get(key, "files")
        fix = (
            f"{where}: writes {what}; give a path relative to the stage's output "
            f"folder (e.g. '{key.split('_')[0]}') or drop the key"
        )
        if not isinstance(value, str) or not value.strip():
            out.append(f"{fix} (got {value!r})")
            continue
        p = PurePosixPath(value)
        if p.is_absolute() or value.startswith("~") or ".." in p.parts:
            out.append(f"{fix} (got {value!r}, which leaves it)")
    return sorted(out)


def confine(config: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """A copy of ``config`` whose file-writing keys point under ``out_dir``
    (relative values, already checked by :func:`path_issues`)."""
    issues = path_issues(config)
    if issues:
        raise ValueError("; ".join(issues))

    def fix(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: str(out_dir / v)
                if writes_files(str(k)) and isinstance(v, str)
                else fix(v)
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [fix(v) for v in node]
        return node

    return fix(config)
