"""Loading any model folder the pipeline produced, for inference or as a stage's starting point.

Plain, distilled and pruned models load through transformers' Auto classes (the pruned-model class is registered
with them when hfdistill is imported). Formats that need more (int8-cpu artefacts, …) register a loader here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from hfdistill.errors import ModelError

#: (predicate(folder) -> bool, loader(folder, num_labels) -> model), tried in order before the default.
LOADERS: list[tuple[Callable[[Path], bool], Callable[..., Any]]] = []


def register_loader(predicate: Callable[[Path], bool], loader: Callable[..., Any]) -> None:
    LOADERS.append((predicate, loader))


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


def load_model(path: Path, num_labels: int | None = None, trust_remote_code: bool = False) -> Any:
    """Load a sequence-classification model from a folder for inference on CPU (eval mode)."""
    import hfdistill.stages  # noqa: F401  (registers the pruned Auto classes and the stages' folder loaders)
    from transformers import AutoModelForSequenceClassification

    path = check_model_dir(Path(path))
    for predicate, loader in LOADERS:
        if predicate(path):
            return loader(path)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if num_labels is not None:
        kwargs["num_labels"] = num_labels
    try:
        model = AutoModelForSequenceClassification.from_pretrained(str(path), **kwargs)
    except Exception as e:  # corrupt weights, unknown architecture…: one line
        raise ModelError(f"{path}: cannot load model ({str(e).splitlines()[0]})") from None
    return model.eval()
