"""hfdistill: compress transformer classifiers (fine-tune → distil → prune → quantize), evaluate them on GLUE,
write a model card for each and publish them on the Hugging Face Hub — from one YAML recipe.

Public API (`hfdistill.api`, loaded on first use so that `import hfdistill` stays light):
`run`, `validate`, `evaluate`, `card`, `push`, `pull`, `serve`, `cache`, `report`, `check_data`,
`recipe_reference`.
"""

import importlib
import importlib.abc
import importlib.util
import sys
from typing import TYPE_CHECKING, Any

from hfdistill.errors import DataError, HfdistillError, HubError, ModelError, RecipeError  # noqa: F401
from hfdistill.version import __version__  # noqa: F401


class _RegisterPrunedModels(importlib.abc.MetaPathFinder):
    """`import hfdistill` makes pruned models loadable with plain `AutoModel*.from_pretrained` (no remote code):
    the pruned configs/classes are registered with transformers' Auto classes (`hfdistill.models.pruned_bert`).

    Importing transformers takes seconds, so `import hfdistill` (and `hfdistill --help`) does not: the
    registration runs right after transformers' Auto-model module is first imported, which every
    `AutoModel*.from_pretrained` call does first — or at once, if it already is.
    """

    TARGET = "transformers.models.auto.modeling_auto"

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != self.TARGET:
            return None
        sys.meta_path.remove(self)  # one shot; the normal finders locate the module
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            run = spec.loader.exec_module

            def exec_module(module: Any) -> None:
                run(module)
                importlib.import_module("hfdistill.models")  # registers the pruned Auto classes

            spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if _RegisterPrunedModels.TARGET in sys.modules:
    importlib.import_module("hfdistill.models")
elif not any(isinstance(f, _RegisterPrunedModels) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterPrunedModels())

API = ("run", "validate", "evaluate", "card", "push", "pull", "serve", "cache", "report", "check_data",
       "recipe_reference", "prune_cache", "plan", "sweep", "front", "refresh", "collection", "leaderboard",
       "webhook_serve")

if TYPE_CHECKING:  # pragma: no cover
    from hfdistill.api import (cache, card, check_data, evaluate, plan, prune_cache, pull, push,  # noqa
                               recipe_reference, report, run, serve, validate, sweep, front, refresh,
                               collection, leaderboard, webhook_serve)


def __getattr__(name: str) -> Any:
    """`hfdistill.run` etc.: the API module (torch, transformers, …) is imported on first use (PEP 562)."""
    if name in API:
        return getattr(importlib.import_module("hfdistill.api"), name)
    raise AttributeError(f"module 'hfdistill' has no attribute {name!r}")
