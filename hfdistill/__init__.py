"""hfdistill: compress transformer classifiers (fine-tune → distil → prune → quantize), evaluate them on GLUE,
write a model card for each and publish them on the Hugging Face Hub — from one YAML recipe.

Public API: `run`, `validate`, `evaluate`, `card`, `push`, `pull`.
"""

__version__ = "0.1.0"

from hfdistill.errors import DataError, HfdistillError, HubError, ModelError, RecipeError  # noqa: E402,F401

# Registers the pruned-model config/classes with transformers' Auto classes.
from hfdistill.models import pruned_bert as _pruned_bert  # noqa: E402,F401


def run(recipe, force: bool = False, publish=None):
    """Run a recipe (path or Recipe); see `hfdistill.pipeline.run`."""
    from hfdistill.pipeline import run as _run

    return _run(recipe, force=force, publish=publish)


def validate(recipe_path):
    """Validate a recipe file; raises RecipeError with the field path on the first problem."""
    from hfdistill.recipe import load_recipe

    return load_recipe(recipe_path)


def evaluate(model_dir, task: str, **kwargs):
    """Evaluate a model folder on a GLUE task's dev set (metrics, size, CPU latency)."""
    from hfdistill.evaluation import evaluate_folder

    return evaluate_folder(model_dir, task, **kwargs)


def card(model_dir, **kwargs):
    """Write the model card (README.md) of a model folder."""
    from hfdistill.cards import write_card

    return write_card(model_dir, **kwargs)


def push(run_dir, publish=None, **kwargs):
    """Push every model of a run folder to the Hub."""
    from hfdistill.hub import push_run

    return push_run(run_dir, publish, **kwargs)


def pull(repo_id: str, **kwargs):
    """Download a published model and check its files (optionally re-evaluate it)."""
    from hfdistill.hub import pull as _pull

    return _pull(repo_id, **kwargs)
