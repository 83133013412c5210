"""The recipe: one YAML file that drives a whole run, validated before any work starts.

Every field is documented where it is declared; `hfdistill recipe-reference` prints them (the README's recipe
reference is generated from it). A bad recipe raises RecipeError naming the field path, e.g.
`stages[1].temperature: must be > 0`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from hfdistill.errors import RecipeError
from hfdistill.glue import TASKS
from hfdistill.schema import PACKAGED_MODELS, PublishConfig, packaged_model_path, resolve_path
from hfdistill.stages import REGISTRY, StageConfig

BASE = "model"  # `from: model` starts a stage from the recipe's base model
TaskName = Literal["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
#: Task name aliases: the GLUE folder names and any case (`SST-2`, `sst-2`, `SST2` → `sst2`).
TASK_ALIASES = {alias.lower(): name for name, task in TASKS.items() for alias in (name, task.folder,
                                                                                  task.folder.replace("-", ""))}

StageUnion = Annotated[Union[tuple(k.config_cls for k in REGISTRY.values())], Field(discriminator="kind")]


def _resolve(value: Any, info: ValidationInfo) -> Any:
    base = (info.context or {}).get("base_dir")
    if value is None or base is None:
        return value
    return resolve_path(value, base)


class Recipe(BaseModel):
    """A run: base model, tasks, data, limits, and the ordered stages that turn the base model into others."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Run name (used in repo names and cards).",
                      pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)
    seed: int = Field(default=42, ge=0, description="Random seed for data order, initialisation and sampling.")
    output_dir: Optional[Path] = Field(default=None,
                                       description="Run folder (relative to the recipe file); default "
                                                   "`runs/<name>` beside the recipe.")
    model: str = Field(default="minilm-l6",
                       description="Base model: `minilm-l6` (the packaged all-MiniLM-L6-v2), a local folder "
                                   "(relative to the recipe) or a Hub id.")
    trust_remote_code: bool = Field(default=False,
                                    description="Allow custom model code from the base model's folder or repo.")
    license: Optional[str] = Field(default=None,
                                   description="License for the cards (default: inherited from the base model).")
    tasks: list[TaskName] = Field(min_length=1, description="GLUE tasks: cola, sst2, mrpc, stsb, qqp, mnli, "
                                                            "qnli, rte, wnli (the GLUE folder names, e.g. "
                                                            "`SST-2`, are accepted too).")
    glue_dir: Optional[Path] = Field(default=None,
                                     description="Folder in the original GLUE layout (relative to the recipe); "
                                                 "default $HFDISTILL_GLUE_DIR, else `hub_dataset`.")
    hub_dataset: Optional[str] = Field(default=None,
                                       description="A `datasets` id with GLUE configs (e.g. nyu-mll/glue); the "
                                                   "default when neither glue_dir nor $HFDISTILL_GLUE_DIR is set.")
    max_train_samples: Optional[int] = Field(default=None, gt=0,
                                             description="Train on a seeded random subset of this many rows.")
    max_eval_samples: Optional[int] = Field(default=None, gt=0,
                                            description="Evaluate on the first N dev rows.")
    max_seq_length: int = Field(default=128, gt=0, le=512, description="Tokens per example (truncation).")
    latency_samples: int = Field(default=50, ge=30, description="Dev examples timed one by one (batch size 1).")
    latency_threads: int = Field(default=1, ge=1, description="CPU threads for the latency figure (fixed and "
                                                              "recorded; speed-ups compare like with like).")
    mixed_precision: Optional[Literal["no", "fp16", "bf16"]] = Field(
        default=None, description="Training precision through Accelerate: `bf16` (GPU or CPU), `fp16` (GPU only) or "
                                  "`no`; default: what `accelerate launch --mixed_precision` says, else `no`. "
                                  "Recorded in lineage.json of each stage that trained.")
    cache_budget_gb: Optional[float] = Field(
        default=None, gt=0, description="Disk the teacher cache may take for one distill stage (GB); a larger "
                                        "estimate computes the teacher's hidden states online during training "
                                        "instead (said in one line). Default: half the free space of the run "
                                        "folder's filesystem.")
    stages: list[StageUnion] = Field(min_length=1, description="Ordered stages; each names its kind.")
    publish: Optional[PublishConfig] = Field(default=None, description="Where to push the models (see below).")

    _resolve_paths = field_validator("output_dir", "glue_dir", mode="before")(_resolve)

    @field_validator("tasks", mode="before")
    @classmethod
    def _task_aliases(cls, v: Any) -> Any:
        """GLUE folder names (`SST-2`, `STS-B`, `CoLA`…) and any case are accepted for task names."""
        if not isinstance(v, list):
            return v
        return [TASK_ALIASES.get(t.lower(), t) if isinstance(t, str) else t for t in v]

    @field_validator("tasks")
    @classmethod
    def _unique_tasks(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("a task is listed twice")
        return v

    @field_validator("model")
    @classmethod
    def _model_exists(cls, v: str, info: ValidationInfo) -> str:
        if v in PACKAGED_MODELS:
            return v
        base = (info.context or {}).get("base_dir")
        p = Path(os.path.expanduser(v))
        if base is not None and not p.is_absolute():
            p = (Path(base) / p).resolve()
        looks_local = v.startswith((".", "/", "~")) or p.exists() or not _HUB_ID.match(v)
        if looks_local:
            if not p.is_dir():
                raise ValueError(f"model folder {str(p)!r} not found (use a local folder, a Hub id "
                                 f"org/name, or one of {sorted(PACKAGED_MODELS)})")
            if not (p / "config.json").is_file():
                raise ValueError(f"{str(p)!r} has no config.json")
            return str(p)
        return v

    @field_validator("glue_dir")
    @classmethod
    def _glue_dir_exists(cls, v: Optional[Path]) -> Optional[Path]:
        if v is not None and not Path(v).is_dir():
            raise ValueError(f"folder {str(v)!r} not found")
        return v

    @model_validator(mode="after")
    def _check_stages_and_data(self) -> "Recipe":
        names: list[str] = []
        for i, st in enumerate(self.stages):
            if st.name in names:
                raise _field_error(f"stages[{i}].name", f"{st.name!r} is used by an earlier stage")
            if st.name == BASE:
                raise _field_error(f"stages[{i}].name", f"{BASE!r} is reserved for the base model")
            sf = getattr(st, "student_from", None)
            if sf is not None and sf not in names:
                raise _field_error(f"stages[{i}].student_from", f"{sf!r} is not an earlier stage")
            if st.from_ is not None and st.from_ != BASE and st.from_ not in names:
                raise _field_error(f"stages[{i}].from", f"{st.from_!r} is not an earlier stage"
                                   + (f" (earlier: {', '.join(names)})" if names else " (this is the first stage)"))
            names.append(st.name)
        glue_dir = self.resolved_glue_dir()
        if glue_dir is not None:
            for i, t in enumerate(self.tasks):
                task = TASKS[t]
                folder = glue_dir / task.folder
                if not (folder / task.splits["dev"]).is_file():
                    raise _field_error(f"tasks[{i}]", f"{t}: {folder / task.splits['dev']} not found")
                needs = [st.name for st in self.stages if st.needs_train_split()]
                if needs and not (folder / task.splits["train"]).is_file():
                    raise _field_error(f"tasks[{i}]", f"{t}: no train split at {folder / task.splits['train']} "
                                                      f"(stage {needs[0]!r} trains on it)")
        if self.output_dir is None:
            raise _field_error("output_dir", "required when the recipe is not loaded from a file")
        return self

    # ------------------------------------------------------------------------------------------ derived values
    def resolved_glue_dir(self) -> Optional[Path]:
        if self.glue_dir is not None:
            return self.glue_dir
        if self.hub_dataset is None and os.environ.get("HFDISTILL_GLUE_DIR"):
            return Path(os.environ["HFDISTILL_GLUE_DIR"]).resolve()
        return None

    def base_model_path(self) -> str:
        """A local folder, or the Hub id as given."""
        return str(packaged_model_path(self.model)) if self.model in PACKAGED_MODELS else self.model

    def parent_of(self, index: int) -> Optional[str]:
        """Name of the stage whose output stage `index` starts from (None: the base model)."""
        st = self.stages[index]
        if st.from_ == BASE:
            return None
        if st.from_ is not None:
            return st.from_
        return self.stages[index - 1].name if index > 0 else None

    def recipe_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True,
                                         default=str).encode()).hexdigest()[:16]


class _FieldError(ValueError):
    def __init__(self, loc: str, msg: str):
        super().__init__(msg)
        self.loc, self.msg = loc, msg


def _field_error(loc: str, msg: str) -> _FieldError:
    return _FieldError(loc, msg)


# -------------------------------------------------------------------------------------------- error messages

def _loc(loc: tuple) -> str:
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif i > 0 and isinstance(loc[i - 1], int) and loc[0] == "stages" and part in REGISTRY:
            continue  # the discriminator tag pydantic inserts
        elif str(part).startswith(("function-", "union[")):
            continue
        else:
            out += ("." if out else "") + ("from" if part == "from_" else str(part))
    return out or "recipe"


def _num(v: Any) -> Any:
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _message(err: dict) -> str:
    t = err["type"]
    ctx = {k: _num(v) for k, v in (err.get("ctx") or {}).items()}
    if t == "extra_forbidden":
        return "unknown key"
    if t == "missing":
        return "required"
    if t == "greater_than":
        return f"must be > {ctx['gt']}"
    if t == "greater_than_equal":
        return f"must be >= {ctx['ge']}"
    if t == "less_than":
        return f"must be < {ctx['lt']}"
    if t == "less_than_equal":
        return f"must be <= {ctx['le']}"
    if t == "union_tag_invalid":
        return f"unknown stage kind {ctx.get('tag')!r} (known: {', '.join(REGISTRY)})"
    if t == "union_tag_not_found":
        return f"needs a `kind` ({', '.join(REGISTRY)})"
    if t == "too_short":
        return "must not be empty"
    msg = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix):]
    text = msg[0].lower() + msg[1:]
    if "input" in err and t not in ("value_error",) and not isinstance(err["input"], (dict, list)):
        text += f" (got {err['input']!r})"
    return text


def _model_at(loc: tuple) -> Optional[type[BaseModel]]:
    """The pydantic model that holds the last key of `loc` (for "did you mean" hints)."""
    model: Any = Recipe
    parts = list(loc[:-1])
    while parts:
        part = parts.pop(0)
        if isinstance(part, int):
            continue
        if model is Recipe and part == "stages":
            if len(parts) >= 2 and isinstance(parts[0], int) and parts[1] in REGISTRY:
                model = REGISTRY[parts[1]].config_cls
                parts = parts[2:]
                continue
            return None
        field = getattr(model, "model_fields", {}).get(part)
        subs = _nested_models(field.annotation) if field is not None else []
        if not subs and field is not None and model is Recipe and part == "publish":
            subs = [PublishConfig]
        if not subs:
            return None
        model = subs[0]
    return model


def _did_you_mean(loc: tuple) -> str:
    model = _model_at(loc)
    if model is None:
        return ""
    names = [f.alias or n for n, f in model.model_fields.items()]
    close = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


def _problem(err: dict) -> str:
    if isinstance((err.get("ctx") or {}).get("error"), _FieldError):
        fe = err["ctx"]["error"]
        return f"{fe.loc}: {fe.msg}"
    text = f"{_loc(err['loc'])}: {_message(err)}"
    if err["type"] == "extra_forbidden":
        text += _did_you_mean(err["loc"])
    return text


def format_validation_error(e: ValidationError) -> str:
    """Every problem of the recipe on one line: `a: …` or `3 problems: a: …; b: …; c: …`."""
    problems = list(dict.fromkeys(_problem(err) for err in e.errors()))  # unique, in order
    if len(problems) == 1:
        return problems[0]
    return f"{len(problems)} problems: " + "; ".join(problems)


def parse_recipe(data: Any, base_dir: Path, source: str = "recipe") -> Recipe:
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe is a YAML mapping (name:, tasks:, stages: …)")
    data = dict(data)
    if "output_dir" not in data or data["output_dir"] is None:
        data["output_dir"] = f"runs/{data.get('name', 'run')}"
    try:
        return Recipe.model_validate(data, context={"base_dir": Path(base_dir).resolve()})
    except ValidationError as e:
        raise RecipeError(f"{source}: {format_validation_error(e)}") from None


def load_recipe(path: Path | str) -> Recipe:
    """Read and validate a recipe file; relative paths in it are resolved against its folder."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise RecipeError(f"{path}: invalid YAML{where}: {getattr(e, 'problem', None) or e}") from None
    return parse_recipe(data, path.parent, source=path.name)


def reference_markdown() -> str:
    """The recipe reference (README), generated from the field descriptions."""

    def type_name(ann: Any) -> str:
        text = getattr(ann, "__name__", None) if getattr(ann, "__args__", None) is None else None
        text = text or str(ann)
        for noise in ("typing.", "pathlib.", "hfdistill.stages.", "hfdistill.schema.", "hfdistill.", "<class '",
                      "'>"):
            text = text.replace(noise, "")
        return text.replace("Optional[", "optional[").replace("|", "or")

    def table(model: type[BaseModel], title: str) -> str:
        rows = [f"### {title}", "", "| field | type | bounds | default | meaning |", "|---|---|---|---|---|"]
        for name, f in model.model_fields.items():
            if f.exclude:
                continue
            key = f.alias or name
            desc = f.description or (StageConfig.model_fields.get(name).description
                                     if name in StageConfig.model_fields else "")
            if f.is_required():
                default = "required"
            elif f.default_factory is not None:
                default = repr(f.default_factory())
            else:
                default = repr(f.default)
            ann = "list[stage]" if model is Recipe and name == "stages" else type_name(f.annotation)
            rows.append(f"| `{key}` | {ann} | {_bounds(f)} | {default} | {(desc or '').replace('|', '/')} |")
            for sub in _nested_models(f.annotation):
                nested.append((sub, f"{title} → `{key}:`"))
        return "\n".join(rows) + "\n"

    nested: list[tuple[type[BaseModel], str]] = []
    parts = [table(Recipe, "Recipe (top level)")]
    for kind in REGISTRY.values():
        parts.append(table(kind.config_cls, f"Stage `kind: {kind.kind}`"))
    parts.append(table(PublishConfig, "`publish:`"))
    while nested:
        sub, title = nested.pop(0)
        parts.append(table(sub, title))
    return "\n".join(parts)


def _bounds(field: Any) -> str:
    """A field's numeric/length/pattern constraints as text (`≥ 30`, `> 0, ≤ 1`, `1–64 chars`)."""
    out = []
    for m in field.metadata:
        for attr, sym in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
            v = getattr(m, attr, None)
            if v is not None:
                out.append(f"{sym} {_num(v)}")
        if getattr(m, "min_length", None) is not None:
            out.append(f"at least {m.min_length} item{'s' if m.min_length != 1 else ''}")
        if getattr(m, "max_length", None) is not None:
            out.append(f"at most {m.max_length} chars")
        if getattr(m, "pattern", None):
            out.append(f"matches `{m.pattern}`")
    return ", ".join(out) or "-"


def _nested_models(ann: Any) -> list[type[BaseModel]]:
    """Pydantic models inside an annotation (Optional[X], list[X]…), except the stage union and publish."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [] if issubclass(ann, StageConfig) or ann is PublishConfig else [ann]
    return [m for a in getattr(ann, "__args__", ()) or () for m in _nested_models(a)]
