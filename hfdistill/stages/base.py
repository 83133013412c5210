"""What every stage kind shares: its config base class, the context it runs in, and the shape of a kind.

Adding a stage kind = one module in `hfdistill/stages/` with a `<Kind>Config(StageConfig)` and a
`run(cfg, parent, ctx, out) -> dict`, and one row in the table of `hfdistill/stages/__init__.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from pydantic import BaseModel, ConfigDict, Field

from hfdistill.folder import ModelFolder
from hfdistill.glue import TaskData

if TYPE_CHECKING:  # pragma: no cover
    from accelerate import Accelerator


class StageConfig(BaseModel):
    """Fields every stage has."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(description="Unique stage name; the model folder is `output_dir/<name>/<task>/`.",
                      pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)
    kind: str = Field(description="Stage kind: finetune, distill, prune or quantize.")
    from_: Optional[str] = Field(default=None, alias="from",
                                 description="Name of the earlier stage whose model this stage starts from, or "
                                             "`model` for the recipe's base model (default: the previous stage; "
                                             "the first stage starts from `model`).")
    repo_id: Optional[str] = Field(default=None, description="Hub repo id to publish this stage's models to "
                                                             "(overrides `publish.repo_prefix`).")

    def needs_train_split(self) -> bool:
        """Whether the stage reads the task's training split (validated before any work starts)."""
        return True

    def run_facts(self) -> dict[str, Any]:
        """The config as recorded in lineage.json (aliases, no defaults hidden)."""
        return self.model_dump(mode="json", by_alias=True)

    def identity(self) -> dict[str, Any]:
        """The fields that change the model this stage makes (not where it is published, nor logging)."""
        facts = self.run_facts()
        for k in BOOKKEEPING_FIELDS:
            facts.pop(k, None)
        return facts


#: Fields that do not change the model a stage makes: editing them does not re-run the stage.
BOOKKEEPING_FIELDS = ("repo_id", "log_every", "checkpoint_every", "teacher_batch_size")



@dataclass
class StageContext:
    """What a stage may use besides its parent folder."""

    recipe: Any                     # the hfdistill.recipe.Recipe being run (a layer above the stages)
    task: str                       # GLUE task name, e.g. "sst2"
    data: TaskData                  # train/dev/test datasets of the task (limits applied)
    accelerator: "Accelerator"
    run_dir: Path                   # output_dir of the recipe
    cache_dir: Path                 # shared caches (teacher logits): output_dir/.cache
    work_dir: Path                  # this stage+task's scratch (checkpoints, resumable): output_dir/.work/<stage>/<task>
    seed: int = 42
    stage_folders: dict[str, Path] = field(default_factory=dict)  # finished folders of earlier stages (this task)

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def log(self, message: str) -> None:
        if self.is_main:
            print(f"[{self.task}] {message}", flush=True)


RunFn = Callable[[Any, ModelFolder, StageContext, Path], dict]


@dataclass(frozen=True)
class StageKind:
    kind: str
    config_cls: type[StageConfig]
    run: RunFn
