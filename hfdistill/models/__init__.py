"""Loading any model folder the project writes, for inference or as a stage's starting point.

Plain, distilled and pruned models load through transformers' Auto classes (importing this package registers
the pruned-model classes with them, `pruned_bert`); the quantize stage's formats (int8-cpu, bitsandbytes with a
recovery adapter) load through `formats`. Nothing here imports a stage: every format is known by its files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from hfdistill.errors import ModelError
from hfdistill.models import formats, pruned_bert  # noqa: F401  (pruned_bert: Auto-class registration)


def check_model_dir(path: Path) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise ModelError(f"{path}: model folder not found")
    if not (path / "config.json").is_file():
        raise ModelError(f"{path}: not a model folder (no config.json)")
    return path


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: cannot load tokenizer ({str(e).splitlines()[0]})") from None


def load_model(path: Path, num_labels: int | None = None, trust_remote_code: bool = False,
               device: Any = None) -> Any:
    """Load a sequence-classification model from a folder for inference (eval mode), on CPU or on `device` (e.g.
    the accelerator's GPU: bitsandbytes folders load there directly; an int8-cpu folder always runs on CPU)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    path = check_model_dir(Path(path))
    if formats.is_int8_cpu_folder(path):
        return formats.load_int8_cpu(path, trust_remote_code=trust_remote_code)
    if formats.has_adapter(path):
        return formats.load_with_adapter(path, trust_remote_code, device)
    on_cpu = device is None or torch.device(device).type == "cpu"
    if not on_cpu and formats.is_bnb_folder(path):  # loaded where it runs (it cannot be moved afterwards)
        return formats.load_bnb(path, trust_remote_code, device)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if num_labels is not None:
        kwargs["num_labels"] = num_labels
    try:
        model = AutoModelForSequenceClassification.from_pretrained(str(path), **kwargs)
    except Exception as e:  # corrupt weights, unknown architecture…: one line
        raise ModelError(f"{path}: cannot load model ({str(e).splitlines()[0]})") from None
    if not on_cpu:
        model = model.to(device)
    return model.eval()


HEAD_ADVICE = {
    "classifier": "it would start from a random classifier; fine-tune it on the task first (a `kind: finetune` "
                  "stage before this one)",
    "mlm": "general distillation would learn from random token predictions; fit a masked-LM head first (a "
           "`kind: finetune` stage with `objective: mlm`)",
}


def refuse_untrained(path: Path, info: dict, stage: str, head: str = "classifier") -> None:
    """Raise when `from_pretrained(..., output_loading_info=True)` had to initialise weights: the parent lacks
    trained weights for what the stage uses (e.g. a base `BertModel` has no classifier, the packaged MiniLM no
    masked-LM head). Without this, transformers fills them with random values and the stage runs on noise."""
    missing = sorted(info.get("missing_keys") or []) + sorted(k[0] if isinstance(k, tuple) else str(k)
                                                              for k in info.get("mismatched_keys") or [])
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise ModelError(f"stage {stage!r}: its parent {path} has no trained weights for {shown}: "
                         f"{HEAD_ADVICE[head]}")


def load_classifier(path: Path, num_labels: int, labels: Optional[Sequence[str]] = None,
                    trust_remote_code: bool = False, *, require_trained: Optional[str] = None) -> Any:
    """A folder as a sequence classifier with `num_labels` outputs; `labels` names the classes (none: a
    regression head). For fine-tuning a missing or resized head is freshly initialised; `require_trained=<stage
    name>` (distill, prune, quantize: stages that use the parent's predictions) refuses that instead."""
    from transformers import AutoModelForSequenceClassification

    kwargs: dict[str, Any] = dict(num_labels=num_labels, trust_remote_code=trust_remote_code,
                                  ignore_mismatched_sizes=True, output_loading_info=True)
    if labels:
        kwargs.update(id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    else:
        kwargs.update(problem_type="regression")
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(str(check_model_dir(path)), **kwargs)
    except ModelError:
        raise
    except Exception as e:  # corrupt weights, wrong architecture…: one line
        raise ModelError(f"{path}: cannot load as a sequence classifier ({str(e).splitlines()[0]})") from None
    if require_trained is not None:
        refuse_untrained(Path(path), info, require_trained)
    return model
