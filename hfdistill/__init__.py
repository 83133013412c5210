"""hfdistill: compress transformer classifiers (fine-tune → distil → prune → quantize), evaluate them on GLUE,
write a model card for each and publish them on the Hugging Face Hub — from one YAML recipe.

Public API (`hfdistill.api`, loaded on first use so that `import hfdistill` stays light):
`run`, `validate`, `evaluate`, `card`, `push`, `pull`, `serve`, `check_data`, `recipe_reference`.
"""

from typing import TYPE_CHECKING, Any

from hfdistill.errors import DataError, HfdistillError, HubError, ModelError, RecipeError  # noqa: F401
from hfdistill.version import __version__  # noqa: F401

# `import hfdistill` makes pruned models loadable with plain `AutoModel*.from_pretrained` (no remote code):
# importing hfdistill.models registers the pruned-model configs and classes with transformers' Auto classes.
from hfdistill import models as _models  # noqa: F401,E402

API = ("run", "validate", "evaluate", "card", "push", "pull", "serve", "check_data", "recipe_reference")

if TYPE_CHECKING:  # pragma: no cover
    from hfdistill.api import card, check_data, evaluate, pull, push, recipe_reference, run, serve, validate  # noqa


def __getattr__(name: str) -> Any:
    """`hfdistill.run` etc.: the API module (torch, transformers, …) is imported on first use (PEP 562)."""
    if name in API:
        import importlib

        return getattr(importlib.import_module("hfdistill.api"), name)
    raise AttributeError(f"module 'hfdistill' has no attribute {name!r}")
