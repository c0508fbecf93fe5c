"""DeepSpeed hostfiles and resource filters, parsed the way DeepSpeed's launcher
(``deepspeed/launcher/runner.py``) parses them, without importing it: a
declaration is checked before anything runs, and ``carp validate`` imports no
torch.

A hostfile line is ``host slots=N``; ``#`` starts a comment. A filter
(``include``/``exclude``) is ``NAME[:SLOT[,SLOT...]][@NAME...]``.
"""

from __future__ import annotations

import re
from pathlib import Path

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_LINE = re.compile(r"^(\S+)\s+slots=(\d+)")


def parse_hostfile(text: str, source: str = "hostfile") -> dict[str, int]:
    """Hosts and their slots, in file order; ValueError naming the bad line."""
    pool: dict[str, int] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if m is None:
            raise ValueError(
                f"{source}:{n}: '{line}' is not 'HOST slots=N' (e.g. 'node1 slots=8')"
            )
        host, slots = m.group(1), int(m.group(2))
        if host in pool:
            raise ValueError(f"{source}:{n}: host '{host}' is listed twice")
        if slots < 1:
            raise ValueError(f"{source}:{n}: host '{host}' has slots=0")
        pool[host] = slots
    if not pool:
        raise ValueError(f"{source}: names no host; write one 'HOST slots=N' per line")
    return pool


def read_hostfile(path: Path | str) -> dict[str, int]:
    return parse_hostfile(Path(path).read_text(encoding="utf-8"), str(path))


def parse_filter(spec: str) -> dict[str, list[int]]:
    """``worker-0@worker-1:0,2`` -> {worker-0: [], worker-1: [0, 2]} ([] = all)."""
    out: dict[str, list[int]] = {}
    for part in spec.split("@"):
        host, sep, slots = part.partition(":")
        if not host:
            raise ValueError(f"'{spec}': empty host name (NAME[:SLOT,...]@...)")
        try:
            ids = [int(s) for s in slots.split(",")] if sep else []
        except ValueError:
            raise ValueError(f"'{spec}': slots of '{host}' must be integers") from None
        out[host] = sorted(set(out.get(host, []) + ids))
    return out


def active_slots(
    pool: dict[str, int], include: str | None, exclude: str | None
) -> dict[str, list[int]]:
    """Slot ids per host left after ``include``/``exclude`` (DeepSpeed's rules)."""
    active = {h: list(range(n)) for h, n in pool.items()}
    spec = include or exclude
    if not spec:
        return active
    field = "include" if include else "exclude"
    chosen = parse_filter(spec)
    for host, ids in chosen.items():
        if host not in pool:
            raise ValueError(
                f"deepspeed.{field}: host '{host}' is not in the hostfile "
                f"(hosts: {', '.join(pool)})"
            )
        bad = [i for i in ids if i >= pool[host]]
        if bad:
            raise ValueError(
                f"deepspeed.{field}: {host} has slots 0..{pool[host] - 1}, not {bad}"
            )
    if include:
        return {h: ids or active[h] for h, ids in chosen.items()}
    out = {}
    for host, ids in active.items():
        drop = chosen.get(host)
        if drop == []:  # the whole host
            continue
        keep = [i for i in ids if i not in (drop or [])]
        if keep:
            out[host] = keep
    return out


def ranks(
    pool: dict[str, int],
    num_nodes: int,
    num_gpus: int | None,
    include: str | None = None,
    exclude: str | None = None,
) -> dict[str, int]:
    """Ranks per host of the run; ValueError when the hostfile cannot provide
    what is asked (more nodes than hosts, more GPUs per node than slots)."""
    active = active_slots(pool, include, exclude)
    if not active:
        raise ValueError("deepspeed.exclude leaves no slot to run on")
    if include or exclude:
        return {h: len(ids) for h, ids in active.items()}
    if num_nodes > len(active):
        raise ValueError(
            f"deepspeed.num_nodes is {num_nodes} but the hostfile names "
            f"{len(active)} host(s): {', '.join(active)}"
        )
    hosts = list(active)[:num_nodes]
    if num_gpus is not None:
        short = [
            f"{h} (slots={len(active[h])})" for h in hosts if len(active[h]) < num_gpus
        ]
        if short:
            raise ValueError(
                f"deepspeed.num_gpus is {num_gpus} per node but the hostfile gives "
                f"fewer slots on {', '.join(short)}; lower num_gpus or raise slots"
            )
        return {h: num_gpus for h in hosts}
    return {h: len(active[h]) for h in hosts}


def all_local(hosts: list[str] | dict[str, object]) -> bool:
    """Every host is this machine: the launcher needs no ssh."""
    return all(h in LOCAL_HOSTS for h in hosts)
