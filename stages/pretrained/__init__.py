"""`pretrained`: bring a local Hugging Face checkpoint into a pipeline.

The checkpoint is linked, not copied, when ``link: true`` (large models): the
output folder then holds symlinks to the source files, so downstream stages load
it like any model artifact while the weights stay where they are.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from pipelines.contract import Kind, Registry, RunContext, StageParams, StageResult

DEFAULT_METHOD = "local"

WEIGHT_SUFFIXES = (".safetensors", ".json", ".model", ".txt", ".jinja")


class Params(StageParams):
    """A local checkpoint folder and how it is brought in."""

    method: str = Field(DEFAULT_METHOD, description="Where the checkpoint comes from.")
    path: str = Field(
        ...,
        description="Local folder of an HF causal-LM checkpoint.",
        json_schema_extra={"carp_path": "dir"},  # checked by `carp validate`
    )
    link: bool = Field(
        True, description="Symlink files instead of copying them (large models)."
    )
    trust_remote_code: bool = Field(
        False,
        strict=True,  # a security switch: true or false, not 'yes' or 1
        description="Run the checkpoint's own modelling code (off by default); "
        "recorded in the manifest of this and every derived model.",
    )

    @field_validator("path")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("give the checkpoint folder, e.g. /models/llama-2-7b")
        return v

    def local_issues(self, base: Path) -> list[tuple[str, str]]:
        """The checkpoint's architecture is one carp's stages run (checked on
        the meta device by the CLI before anything runs)."""
        import json

        from stages.common.arch import config_problem

        src = Path(base) / Path(self.path).expanduser()
        cfg_file = src / "config.json"
        if not cfg_file.is_file():
            return []  # reported when the stage runs, with the fix
        try:
            cfg = json.loads(cfg_file.read_text())
        except (OSError, ValueError):
            return [("path", f"{cfg_file} is not valid JSON")]
        if cfg.get("auto_map") and not self.trust_remote_code:
            return []  # refused at run time: remote code needs declaring
        why = config_problem(src, self.trust_remote_code)
        return [("path", why)] if why else []


def run(params: Params, inputs: dict, out_dir: Path, ctx: RunContext) -> StageResult:
    return KIND.method(params.method).bring(params, out_dir)


METHODS = Registry(
    "pretrained method",
    {"local": "stages.pretrained.local"},
    base=Params,
    entry="bring",
)
KIND = Kind(
    name="pretrained",
    params=Params,
    methods=METHODS,
    run=run,
    provides=frozenset({"model", "tokenizer"}),
    default_method=DEFAULT_METHOD,
    plots=False,
    trusts_code=lambda params: params.trust_remote_code is True,
)
