"""Records from a Hugging Face Hub dataset (``datasets.load_dataset(id)``),
checked and written like the ``files`` method's.

``id``, ``name`` (the config), ``split`` and ``revision`` pick the data; the
columns, shape, limit/sample, dedup and row checks are those of
:mod:`stages.dataset.records`. Without the Hub (``HF_HUB_OFFLINE=1``, or its
host does not resolve) it reads datasets' cache only, and fails at once
naming the id and the cache folder when the dataset is not there.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import Field, field_validator

from pipelines.contract import RunContext, StageResult
from stages.common.io import CorruptDataError
from stages.dataset.records import ImportParams, Source, import_records, result

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
TRUE = {"1", "on", "yes", "true"}


class Params(ImportParams):
    method: Literal["hub"] = "hub"
    id: str = Field(..., description="Hub dataset id, e.g. `tatsu-lab/alpaca`.")
    name: str | None = Field(None, description="The dataset's config name.")
    revision: str | None = Field(
        None, description="Branch, tag or commit (pin one for reproducible data)."
    )
    cache_dir: str | None = Field(
        None, description="datasets' cache folder (default: HF_DATASETS_CACHE)."
    )

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not REPO_ID.match(v):
            raise ValueError(
                f"'{v}' is not a Hub dataset id; write `owner/name` (a local "
                "folder or file goes to method files)"
            )
        return v


def expose(
    params: Params, inputs: dict[str, Any], out_dir: Path, ctx: RunContext
) -> StageResult:
    """Load the splits ``split`` names, check every row, write the artifact."""
    from datasets import ReadInstruction

    cache = cache_folder(params)
    try:
        ReadInstruction.from_spec(params.split)  # the syntax, before any download
    except (ValueError, AssertionError) as e:
        raise ValueError(
            f"split: '{params.split}' is not datasets' split syntax ({e}); write "
            "e.g. train, train[:1000], train[10%:20%] or train[:50%]+test"
        ) from None
    names = [part.split("[")[0].strip() for part in params.split.split("+")]
    splits = {
        n: [Source(f"{params.id}[{n}]", load_split(params, n, cache))]
        for n in dict.fromkeys(names)
    }
    info, tally = import_records(
        splits,
        params,
        Path(out_dir),
        ctx.seed,
        source=f"hub:{params.id}" + (f"/{params.name}" if params.name else ""),
        revision=params.revision,
        name=params.name,
    )
    return result(info, tally)


def cache_folder(params: Params) -> str:
    import datasets.config

    return str(
        params.cache_dir
        or os.environ.get("HF_DATASETS_CACHE")
        or datasets.config.HF_DATASETS_CACHE
    )


def hub_reachable() -> bool:
    """Whether the Hub may be reached: not offline, and its host resolves
    (a machine without network answers at once instead of after retries)."""
    import datasets.config
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in TRUE:
        return False
    if datasets.config.HF_HUB_OFFLINE:
        return False
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """datasets and huggingface_hub read their offline flag when imported; set
    it for this call so the cache is read and nothing waits on the network."""
    import datasets.config
    from huggingface_hub import constants

    old = datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE = old


def load_split(params: Params, split: str, cache: str) -> Any:
    from datasets import load_dataset
    from huggingface_hub import constants

    online = hub_reachable()
    where = f"{params.id}" + (f" ({params.name})" if params.name else "")
    try:
        with contextlib.nullcontext() if online else offline():
            return load_dataset(
                params.id,
                params.name,
                split=split,
                revision=params.revision,
                cache_dir=cache,
            )
    except ValueError as e:
        if "split" in str(e).lower():
            raise ValueError(
                f"split: {where} has no split '{split}' ({first_line(e)})"
            ) from None
        raise CorruptDataError(f"{where}: cannot load it ({first_line(e)})") from None
    except Exception as e:  # noqa: BLE001 - hub, network and file errors alike
        if online:
            raise CorruptDataError(
                f"{where}: cannot load it from the Hub ({type(e).__name__}: "
                f"{first_line(e)}); check the id, name and revision"
            ) from None
        raise CorruptDataError(
            f"{where}: the Hub is not reachable here (HF_HUB_OFFLINE or no network) "
            f"and the dataset is not in the cache folder {cache} (HF_DATASETS_CACHE; "
            f"hub files: {constants.HF_HUB_CACHE}); download it on a machine with "
            "the Hub into that cache, or save it to files and use method files"
        ) from None


def first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
