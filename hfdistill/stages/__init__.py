"""Stage kinds. Importing this package fills the registry with every kind."""

from hfdistill.stages.base import REGISTRY, StageConfig, StageContext, register  # noqa: F401

# One module per kind; each registers itself on import, in the order of the chain (the registry's order is the
# order of the recipe reference and of "known kinds" in errors).
from hfdistill.stages import finetune  # noqa: F401,E402,I001
from hfdistill.stages import distill  # noqa: F401,E402,I001
from hfdistill.stages import prune  # noqa: F401,E402,I001
from hfdistill.stages import quantize  # noqa: F401,E402,I001
