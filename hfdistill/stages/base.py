"""What every stage kind shares: its config base class, the context it runs in, and the shape of a kind.

Adding a stage kind = one module in `hfdistill/stages/` with a `<Kind>Config(StageConfig)` and a
`run(cfg, parent, ctx, out) -> dict`, and one row in the table of `hfdistill/stages/__init__.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, model_validator

from hfdistill.folder import ModelFolder
from hfdistill.glue import TASKS, TaskData

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

    per_task: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Fields that differ for some tasks, e.g. `{rte: {learning_rate: 3.0e-5, epochs: 5}}` (a small "
                    "entailment task needs other settings than SST-2); the rest of the stage applies to every task.")

    @model_validator(mode="after")
    def _per_task_overrides_are_valid(self, info: ValidationInfo) -> "StageConfig":
        for task, over in self.per_task.items():
            if task not in TASKS:
                raise ValueError(f"per_task: unknown task {task!r} (known: {', '.join(TASKS)})")
            fixed = {"name", "kind", "from", "from_", "per_task"} & set(over)
            if fixed:
                raise ValueError(f"per_task.{task}: {sorted(fixed)[0]} cannot differ per task")
            try:
                self.for_task(task, context=info.context)
            except ValidationError as e:
                err = e.errors()[0]
                where = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
                raise ValueError(f"per_task.{task}.{where}: {err['msg']}") from None
        return self

    def for_task(self, task: str, context: Optional[dict] = None) -> "StageConfig":
        """This stage as it runs for `task`: its `per_task` overrides applied (validated), `per_task` dropped."""
        data = self.model_dump(by_alias=True, exclude_unset=True, exclude={"per_task"})
        data.update(self.per_task.get(task) or {})
        return type(self).model_validate(data, context=context)

    def run_facts(self) -> dict[str, Any]:
        """The config as recorded in lineage.json (aliases, no defaults hidden)."""
        return self.model_dump(mode="json", by_alias=True, exclude={"per_task"})

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
    siblings: tuple = ()            # configs (per_task applied) of the run's other stages with the same parent
    mixed_precision: Optional[str] = None  # set by every training loop (training.train): recorded in lineage.json

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
