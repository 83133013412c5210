"""Stage kinds. Importing this package fills the registry with every kind."""

from hfdistill.stages.base import REGISTRY, StageConfig, StageContext, register  # noqa: F401

# One module per kind; each registers itself on import.
from hfdistill.stages import finetune  # noqa: F401,E402

for _optional in ("distill", "prune", "quantize"):
    try:
        __import__(f"hfdistill.stages.{_optional}")
    except ModuleNotFoundError as _e:  # a kind still being written
        if _e.name != f"hfdistill.stages.{_optional}":
            raise
