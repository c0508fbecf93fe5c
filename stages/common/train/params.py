"""Training fields shared by every stage kind that trains (recover, unlearn)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipelines.contract import StageParams


class DeepSpeedParams(BaseModel):
    """Settings of a ``launcher: deepspeed`` run (ZeRO, Rajbhandari et al. 2020)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_gpus: int | None = Field(
        None,
        ge=1,
        description="Ranks per node (GPUs, or CPU processes without CUDA); "
        "None = every visible GPU.",
    )
    num_nodes: int = Field(1, ge=1, description="Nodes to run on (needs `hostfile`).")
    hostfile: str | None = Field(
        None,
        description="DeepSpeed hostfile (`host slots=N` lines) for multi-node.",
        json_schema_extra={"carp_path": "file"},  # checked by `carp validate`
    )
    zero_stage: Literal[1, 2, 3] = Field(
        2,
        description="ZeRO stage: 1 shards optimizer state, 2 also gradients, "
        "3 also parameters (weights are gathered on save).",
    )
    offload_optimizer: bool = Field(
        False, description="Keep optimizer state in CPU memory (ZeRO-Offload)."
    )
    offload_params: bool = Field(
        False, description="Keep parameters in CPU memory (ZeRO-3 only)."
    )
    master_addr: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9.:_-]{0,252}$",
        description="Rendezvous address (the first node's IP or name); None = "
        "127.0.0.1 when every host is local, else DeepSpeed asks the first "
        "host over ssh.",
    )
    master_port: int | None = Field(
        None, ge=1024, le=65535, description="Rendezvous port; None = a free one."
    )
    include: str | None = Field(
        None,
        pattern=r"^[^@\s]+(@[^@\s]+)*$",
        description="Hosts/slots of the hostfile to use, DeepSpeed's "
        "`NAME[:SLOT,...][@NAME...]` (e.g. `node1@node2:0,1`); excludes "
        "num_gpus/num_nodes.",
    )
    exclude: str | None = Field(
        None,
        pattern=r"^[^@\s]+(@[^@\s]+)*$",
        description="Hosts/slots of the hostfile to leave out, same syntax as "
        "`include`.",
    )
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra DeepSpeed config keys merged over the resolved config; "
        "keys that write files (monitor output_path, nvme_path, ...) take paths "
        "relative to the stage's output folder.",
    )

    @field_validator("config")
    @classmethod
    def _confined(cls, v: dict[str, Any]) -> dict[str, Any]:
        from stages.common.train.ds_paths import path_issues

        issues = path_issues(v)
        if issues:
            raise ValueError("; ".join(issues))
        return v

    @model_validator(mode="after")
    def _check(self) -> DeepSpeedParams:
        if self.offload_params and self.zero_stage != 3:
            raise ValueError(
                "deepspeed.offload_params needs deepspeed.zero_stage: 3 "
                f"(got {self.zero_stage}); set zero_stage: 3 or offload_params: false"
            )
        if self.num_nodes > 1 and not self.hostfile:
            raise ValueError(
                f"deepspeed.num_nodes is {self.num_nodes}: name the machines in "
                "deepspeed.hostfile"
            )
        if self.include and self.exclude:
            raise ValueError(
                "deepspeed.include and deepspeed.exclude exclude each other; keep one"
            )
        if (self.include or self.exclude) and not self.hostfile:
            raise ValueError(
                "deepspeed.include/exclude filter a hostfile: set deepspeed.hostfile"
            )
        if (self.include or self.exclude) and (
            self.num_gpus is not None or self.num_nodes > 1
        ):
            raise ValueError(
                "deepspeed.include/exclude choose the slots themselves: drop "
                "num_gpus and num_nodes (DeepSpeed refuses both together)"
            )
        return self

    def local_issues(self, base: Path) -> list[tuple[str, str]]:
        """Checks that need this machine's files: the hostfile parses and gives
        the ranks asked for. (field, message) pairs; [] when fine."""
        if not self.hostfile:
            return []
        from stages.common.train.hostfile import ranks, read_hostfile

        path = base / Path(self.hostfile).expanduser()
        if not path.is_file():
            return []  # reported by the carp_path check
        try:
            ranks(
                read_hostfile(path),
                self.num_nodes,
                self.num_gpus,
                self.include,
                self.exclude,
            )
        except (ValueError, UnicodeDecodeError) as e:
            return [("hostfile", str(e))]
        return []


class TrainParams(StageParams):
    """Optimisation, batching, precision, checkpointing and launcher fields."""

    epochs: float = Field(
        2.0,
        gt=0,
        le=10_000,
        description="Passes over the data (ignored when `steps` is set); at most "
        "10,000.",
    )
    steps: int | None = Field(
        None,
        ge=1,
        le=10_000_000,
        description="Optimizer steps; overrides `epochs` when set; at most 10^7.",
    )
    lr: float = Field(
        5e-4, gt=0, le=1, description="Peak learning rate (AdamW); at most 1."
    )
    schedule: Literal["constant", "linear", "cosine"] = Field(
        "cosine", description="Learning-rate decay after warmup."
    )
    warmup: float = Field(
        0.05, ge=0, lt=1, description="Fraction of the steps spent warming up."
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW decoupled decay.")
    max_grad_norm: float | None = Field(
        1.0, gt=0, description="Clip the global gradient norm; None = no clipping."
    )
    micro_batch: int = Field(
        16, ge=1, le=65_536, description="Examples per forward pass per rank."
    )
    grad_accum: int = Field(
        1, ge=1, le=65_536, description="Micro-batches per optimizer step per rank."
    )
    max_len: int = Field(
        256,
        ge=8,
        le=1_048_576,
        description="Tokens per example (prompt is cut from the left).",
    )
    device: str = Field(
        "auto",
        description="Torch device of the in-process launcher (`auto`: cuda when "
        "present, else cpu; `cpu`, `cuda`, `cuda:N`); DeepSpeed puts each rank "
        "on its own GPU.",
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32",
        description="Training precision; fp16 needs `launcher: deepspeed` "
        "(loss scaling).",
    )
    checkpoint_every: int = Field(
        50,
        ge=0,
        description="Optimizer steps between resumable checkpoints (0 = none).",
    )
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept on disk.")
    launcher: Literal["none", "deepspeed"] = Field(
        "none",
        description="`none` trains in this process; `deepspeed` runs the "
        "DeepSpeed launcher as a subprocess.",
    )
    deepspeed: DeepSpeedParams = Field(
        default_factory=DeepSpeedParams,
        description="DeepSpeed settings, read when `launcher: deepspeed`.",
    )

    @field_validator("device")
    @classmethod
    def _device_spelling(cls, v: str) -> str:
        from stages.common.device import check_device

        return check_device(v)

    def local_issues(self, base: Path) -> list[tuple[str, str]]:
        """A CUDA device this machine lacks, refused before anything runs."""
        from stages.common.device import device_issues

        return device_issues(self.device) if self.launcher == "none" else []

    @model_validator(mode="after")
    def _check_precision(self) -> TrainParams:
        if self.precision == "fp16" and self.launcher != "deepspeed":
            raise ValueError(
                "precision: fp16 needs loss scaling: set launcher: deepspeed, or use "
                "precision: bf16 / fp32"
            )
        return self
