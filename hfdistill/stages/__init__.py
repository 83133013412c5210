"""Stage kinds: one module each (its config model beside its `run`), listed in one explicit table.

The table's order is the order of the chain; the recipe reference and "known kinds" in errors follow it.
Adding a kind = a module here and a row below; nothing registers itself on import.
"""

from hfdistill.stages import distill, finetune, prune, quantize, vocab
from hfdistill.stages.base import StageConfig, StageContext, StageKind

REGISTRY: dict[str, StageKind] = {
    "finetune": StageKind("finetune", finetune.FinetuneConfig, finetune.run),
    "distill": StageKind("distill", distill.DistillConfig, distill.run),
    "prune": StageKind("prune", prune.PruneConfig, prune.run),
    "vocab": StageKind("vocab", vocab.VocabConfig, vocab.run),
    "quantize": StageKind("quantize", quantize.QuantizeConfig, quantize.run),
}

__all__ = ["REGISTRY", "StageConfig", "StageContext", "StageKind"]
