"""Stage kind registry: kind name -> the ``KIND`` description of its package.

Adding a kind is a new package under ``stages/`` ending with ``KIND = Kind(...)``
plus one entry here (see docs/stage-contract.md).
"""

from __future__ import annotations

from pipelines.contract import Kind, Registry, RegistryError

KINDS = Registry(
    "kind",
    {
        "world": "stages.world:KIND",
        "pretrain": "stages.world.pretrain:KIND",
        "pretrained": "stages.pretrained:KIND",
        "prune": "stages.prune:KIND",
        "select": "stages.select:KIND",
        "recover": "stages.recover:KIND",
        "evaluate": "stages.evaluate:KIND",
        "merge": "stages.merge:KIND",
        "unlearn": "stages.unlearn:KIND",
        "dataset": "stages.dataset:KIND",
    },
)


def load_kind(name: str) -> Kind:
    """The :class:`Kind` registered as ``name`` (UnknownName with "did you mean")."""
    kind = KINDS.load(name)
    if not isinstance(kind, Kind):
        raise RegistryError(f"kind '{name}': KIND must be a pipelines.contract.Kind")
    return kind
