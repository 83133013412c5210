"""The recipe: one YAML file that drives a whole run, validated before any work starts.

Every field is documented where it is declared; `hfdistill recipe-reference` prints them (the README's recipe
reference is generated from it). A bad recipe raises RecipeError naming the field path, e.g.
`stages[1].temperature: must be > 0`.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo, field_validator,
                      model_validator)

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


class Target(BaseModel):
    """When a model is good enough: the run stops exploring the remaining sweep variants of a task once a model
    meets every bound given here (checked after each variant, in the order the sweep lists them)."""

    model_config = ConfigDict(extra="forbid")

    retention: Optional[float] = Field(default=None, gt=0, le=2,
                                       description="Least dev score as a fraction of the task teacher's (the "
                                                   "first evaluated model made from the base model), e.g. 0.98.")
    max_latency_ms: Optional[float] = Field(default=None, gt=0,
                                            description="Most CPU latency (batch size 1, median, ms).")
    max_disk_mb: Optional[float] = Field(default=None, gt=0, description="Most weight bytes on disk, in MB "
                                                                         "(10^6 bytes).")

    @model_validator(mode="after")
    def _some_bound(self) -> "Target":
        if self.retention is None and self.max_latency_ms is None and self.max_disk_mb is None:
            raise ValueError("give retention, max_latency_ms or max_disk_mb")
        return self


@dataclass(frozen=True)
class Variant:
    """One point of a recipe's sweep: its values and the (expanded) stages its models come from, in order."""

    name: str                     # the values as a name, e.g. "l2-s0.3-int8-cpu"
    values: dict[str, Any]        # sweep key → value
    stages: tuple[str, ...]       # expanded stage names, parents first (shared stages included)


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
    sweep: Optional[dict[str, list[Any]]] = Field(
        default=None, description="A matrix over stage fields, `<stage>.<field>: [values]` (e.g. "
                                  "`student.num_layers: [2, 3]`, `pruned.sparsity: [0, 0.3]`, `quant.method: [none, "
                                  "int8-cpu]`; nested fields as `pruned.recover.epochs`), and `tasks: [...]`. Every "
                                  "combination becomes a variant; each stage that depends on a swept value is "
                                  "repeated under a suffixed name (`student-l2`, `pruned-l2-s0.3`), so the stages "
                                  "they share (the teacher, its cache) run once. `none` skips a stage in that "
                                  "variant, and so does `sparsity: 0` for a prune stage (its children start from "
                                  "its parent).")
    target: Optional[Target] = Field(default=None,
                                     description="Stop exploring a task's variants once a model meets this.")
    _variants: list[Variant] = PrivateAttr(default_factory=list)
    _source: Optional[tuple[dict, Path, str]] = PrivateAttr(default=None)  # (data as read, base folder, file name)

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

    @model_validator(mode="before")
    @classmethod
    def _sweep_tasks(cls, data: Any) -> Any:
        """`sweep: {tasks: [...]}` is the recipe's task list (each task already runs on its own)."""
        if not isinstance(data, dict) or not isinstance(data.get("sweep"), dict) or "tasks" not in data["sweep"]:
            return data
        data = dict(data)
        if data.get("tasks") is not None and data["tasks"] != data["sweep"]["tasks"]:
            raise _field_error("sweep.tasks", "the recipe lists `tasks:` too; give the tasks in one place")
        data["tasks"] = data["sweep"]["tasks"]
        return data

    @model_validator(mode="after")
    def _expand_sweep(self, info: ValidationInfo) -> "Recipe":
        if self.sweep:
            self.stages, self._variants = expand_sweep(self, info.context)
        return self

    # ------------------------------------------------------------------------------------------ derived values
    @property
    def variants(self) -> list[Variant]:
        """The sweep's variants in the order they are explored; without a sweep, one per stage (each stage's
        model is then its own candidate for `target:`)."""
        if self._variants:
            return list(self._variants)
        return [Variant(st.name, {}, (st.name,)) for st in self.stages]

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

    def siblings_of(self, index: int, task: str) -> tuple:
        """The configs (`task`'s per_task overrides applied) of the other stages that start from the same parent as
        stage `index` (e.g. a sweep's students of one teacher)."""
        parent = self.parent_of(index)
        return tuple(st.for_task(task) for j, st in enumerate(self.stages)
                     if j != index and self.parent_of(j) == parent)

    def recipe_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True,
                                         default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------- sweeps
SKIP = "none"  # a sweep value that leaves the stage out of the variant
#: Short prefixes of swept values in stage names (`student-l2`, `pruned-l2-s0.3`); other fields use `<field>-`.
_SHORT = {"num_layers": "l", "layers": "l", "sparsity": "s", "method": "", "quant_type": "", "temperature": "t",
          "learning_rate": "lr", "max_steps": "steps", "epochs": "ep", "iterations": "it", "batch_size": "bs",
          "alpha_ce": "ce", "alpha_hard": "hard", "alpha_cos": "cos", "alpha_mlm": "mlm"}
_NOT_SWEPT = ("name", "kind", "from", "per_task")
_REPO_NAME_MAX = 96  # the Hub's limit for the name part of a repo id


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "_".join(_value_text(v) for v in value)
    return "default" if value is None else str(value)


def _token(path: str, value: Any) -> str:
    """A swept value as a name part: `l2` (num_layers 2), `s0.3` (sparsity 0.3), `int8-cpu` (method)."""
    field = path.split(".")[-1]
    prefix = _SHORT.get(field)
    return f"{prefix}{_value_text(value)}" if prefix is not None else f"{field}-{_value_text(value)}"


def _set_path(data: dict, path: str, value: Any) -> None:
    parts = path.split(".")
    for p in parts[:-1]:
        nxt = data.get(p)
        data[p] = dict(nxt) if isinstance(nxt, dict) else {}
        data = data[p]
    data[parts[-1]] = value


def _name_problem(name: str, recipe_name: str, tasks: list[str]) -> Optional[str]:
    """Why `name` cannot be a stage (and Hub repo) name, or None."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) or name.endswith((".", "-")) or "--" in name \
            or ".." in name:
        return "only letters, digits and single _ . - between them"
    if len(name) > 64:
        return "longer than 64 characters"
    longest = max(len(f"{recipe_name}-{name}-{t}") for t in tasks)
    if longest > _REPO_NAME_MAX:
        return f"its repo name `{recipe_name}-{name}-<task>` is longer than {_REPO_NAME_MAX} characters"
    return None


def expand_sweep(recipe: "Recipe", context: Optional[dict]) -> tuple[list[StageConfig], list[Variant]]:
    """The recipe's stages with the sweep expanded, and its variants in the order they are listed.

    Deterministic: variants are the product of the value lists (keys in the order written, the last key varying
    fastest). A stage is repeated per combination of the swept values it depends on (its own and its ancestors'),
    named `<stage>-<token>-<token>…`; `from`/`student_from` point to the matching copy. Copies that come out the
    same (e.g. below a skipped stage) are one stage. Stages are listed variant by variant, parents first.
    """
    keys = [k for k in recipe.sweep or {} if k != "tasks"]
    by_name = {st.name: st for st in recipe.stages}
    where: dict[str, tuple[str, str]] = {}
    for key in keys:
        loc = f"sweep.{key}"
        stage, _, path = key.partition(".")
        if stage not in by_name:
            close = difflib.get_close_matches(stage, list(by_name), n=1, cutoff=0.6)
            raise _field_error(loc, f"no stage named {stage!r} (stages: {', '.join(by_name)})"
                               + (f" (did you mean `{close[0]}`?)" if close else ""))
        if not path:
            raise _field_error(loc, "name a stage field: `<stage>.<field>`, e.g. `student.num_layers`")
        cls = type(by_name[stage])
        fields = [f.alias or n for n, f in cls.model_fields.items()]
        head = path.split(".")[0]
        if head not in fields or head in _NOT_SWEPT:
            close = difflib.get_close_matches(head, [f for f in fields if f not in _NOT_SWEPT], n=1, cutoff=0.6)
            raise _field_error(loc, f"stage {stage!r} ({by_name[stage].kind}) has no field {head!r} to sweep"
                               + (f" (did you mean `{close[0]}`?)" if close else ""))
        values = recipe.sweep[key]
        if not values:
            raise _field_error(loc, "needs at least one value")
        texts = [json.dumps(v, sort_keys=True, default=str) for v in values]
        if len(set(texts)) != len(texts):
            raise _field_error(loc, "a value is listed twice")
        if any(isinstance(v, dict) for v in values):
            raise _field_error(loc, f"values are single settings; sweep a nested field as `{key}.<field>`")
        for task, over in by_name[stage].per_task.items():
            if head in over:
                raise _field_error(loc, f"{stage}.per_task.{task} sets {head} too; sweep it or set it per task")
        where[key] = (stage, path)

    students_from = {getattr(st, "student_from", None) for st in recipe.stages} - {None}
    instances: dict[str, StageConfig] = {}
    variants: list[Variant] = []
    for combo in itertools.product(*(recipe.sweep[k] for k in keys)):
        own: dict[str, list[tuple[int, str, Any]]] = {}
        for ki, (key, value) in enumerate(zip(keys, combo)):
            own.setdefault(where[key][0], []).append((ki, where[key][1], value))
        made: dict[str, Optional[str]] = {}          # declared stage → its copy in this variant (None: base model)
        sigs: dict[str, frozenset] = {}              # declared stage → the swept values its copy depends on
        mine: list[str] = []
        for i, st in enumerate(recipe.stages):
            parent = recipe.parent_of(i)
            data = st.model_dump(by_alias=True, exclude_unset=True)
            settings = own.get(st.name, [])
            skip = any(isinstance(v, str) and v == SKIP for _, _, v in settings)
            for _, path, value in settings:
                if not skip:
                    _set_path(data, path, value)
            if st.kind == "prune" and data.get("sparsity") == 0 and data.get("target_heads") is None \
                    and data.get("target_ffn") is None:
                skip = True  # sparsity 0 prunes nothing: the variant's children start from this stage's parent
            if skip:
                if st.name in students_from:
                    raise _field_error(f"sweep.{keys[settings[0][0]]}", f"stage {st.name!r} cannot be skipped: a "
                                       f"later stage's student_from names it")
                made[st.name] = made[parent] if parent else None
                sigs[st.name] = sigs[parent] if parent else frozenset()
                continue
            sig = (sigs[parent] if parent else frozenset()) | {(ki, _token(path, v)) for ki, path, v in settings}
            sf = getattr(st, "student_from", None)
            if sf is not None:
                sig |= sigs[sf]
                data["student_from"] = made[sf]
            name = st.name + "".join(f"-{tok}" for _, tok in sorted(sig))
            culprit = f"sweep.{keys[min(ki for ki, _ in sig)]}" if sig else "sweep"
            problem = _name_problem(name, recipe.name, list(recipe.tasks))
            if problem:
                raise _field_error(culprit, f"makes stage name {name!r}, not a valid repo name: {problem}")
            if sig and st.repo_id and "{stage}" not in st.repo_id:
                raise _field_error(f"{culprit}", f"stage {st.name!r} has a fixed repo_id; its sweep copies "
                                                 f"would share it (put `{{stage}}` in it)")
            data["name"] = name
            if i > 0 or st.from_ is not None:
                data["from"] = made[parent] if parent and made[parent] else BASE
            try:
                cfg = type(st).model_validate(data, context=context)
            except ValidationError as e:
                err = e.errors()[0]
                values = ", ".join(f"{keys[ki]}={v!r}" for ki, _, v in settings) or "its parent's values"
                raise _field_error(culprit, f"stage {name!r} ({values}): {_loc(err['loc'])}: {_message(err)}") \
                    from None
            if name in instances and instances[name].identity() != cfg.identity():
                raise _field_error(culprit, f"two variants make stage {name!r} with different settings (values "
                                            f"that print the same?)")
            instances.setdefault(name, cfg)
            made[st.name], sigs[st.name] = name, sig
            mine.append(name)
        label = "-".join(f"no-{where[k][0]}" if isinstance(v, str) and v == SKIP else _token(where[k][1], v)
                         for k, v in zip(keys, combo))
        variants.append(Variant(label or recipe.name, dict(zip(keys, combo)), tuple(mine)))
    order = list(dict.fromkeys(n for v in variants for n in v.stages))
    return [instances[n] for n in order], variants


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


def _problem(err: dict, swept: Optional[dict[tuple[int, str], str]] = None) -> str:
    if isinstance((err.get("ctx") or {}).get("error"), _FieldError):
        fe = err["ctx"]["error"]
        return f"{fe.loc}: {fe.msg}"
    loc = err["loc"]
    if swept and len(loc) >= 4 and loc[0] == "stages" and (loc[1], loc[3]) in swept:  # a value only the sweep gave
        return f"sweep.{swept[(loc[1], loc[3])]}: value {err.get('input')!r}: {_message(err)}"
    text = f"{_loc(err['loc'])}: {_message(err)}"
    if err["type"] == "extra_forbidden":
        text += _did_you_mean(err["loc"])
    return text


def format_validation_error(e: ValidationError, swept: Optional[dict[tuple[int, str], str]] = None) -> str:
    """Every problem of the recipe on one line: `a: …` or `3 problems: a: …; b: …; c: …`."""
    problems = list(dict.fromkeys(_problem(err, swept) for err in e.errors()))  # unique, in order
    if len(problems) == 1:
        return problems[0]
    return f"{len(problems)} problems: " + "; ".join(problems)


def parse_recipe(data: Any, base_dir: Path, source: str = "recipe") -> Recipe:
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe is a YAML mapping (name:, tasks:, stages: …)")
    data = dict(data)
    if "output_dir" not in data or data["output_dir"] is None:
        data["output_dir"] = f"runs/{data.get('name', 'run')}"
    source_data = data
    data, swept = _fill_swept_fields(data)
    try:
        recipe = Recipe.model_validate(data, context={"base_dir": Path(base_dir).resolve()})
    except ValidationError as e:
        raise RecipeError(f"{source}: {format_validation_error(e, swept)}") from None
    recipe._source = (source_data, Path(base_dir), source)
    return recipe


def _fill_swept_fields(data: dict) -> tuple[dict, dict[tuple[int, str], str]]:
    """A stage field that only the sweep gives (e.g. a prune stage's sparsity) takes its first value, so the
    stage as written validates; returns the data and {(stage index, field): sweep key} (for error messages)."""
    sweep, stages = data.get("sweep"), data.get("stages")
    if not isinstance(sweep, dict) or not isinstance(stages, list):
        return data, {}
    stages = [dict(st) if isinstance(st, dict) else st for st in stages]
    swept: dict[tuple[int, str], str] = {}
    for key, values in sweep.items():
        stage, _, field = key.partition(".")
        usable = [v for v in values if not (isinstance(v, str) and v == SKIP)] if isinstance(values, list) else []
        for i, st in enumerate(stages):
            kind = REGISTRY.get(st.get("kind")) if isinstance(st, dict) else None
            known = {f.alias or n for n, f in kind.config_cls.model_fields.items()} if kind else set()
            if kind and st.get("name") == stage and field in known and field not in st \
                    and field not in _NOT_SWEPT and usable:
                st[field] = usable[0]
                swept[(i, field)] = key
    return {**data, "stages": stages}, swept


def with_sweep(recipe: "Recipe | Path | str", sweep: Optional[dict[str, list[Any]]] = None,
               target: Optional[dict[str, Any]] = None) -> Recipe:
    """A recipe (file or one loaded from a file or data) with `sweep:` and/or `target:` replaced, validated anew."""
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    if sweep is None and target is None:
        return recipe
    if recipe._source is None:
        raise RecipeError(f"{recipe.name}: a sweep can only be added to a recipe read from a file or data")
    data, base_dir, source = recipe._source
    data = {**data, **({"sweep": sweep} if sweep is not None else {}),
            **({"target": target} if target is not None else {})}
    return parse_recipe(data, base_dir, source=source)


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
