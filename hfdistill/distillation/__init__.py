"""Distillation building blocks: student construction (`student`) and the teacher-output cache (`teacher_cache`).

The losses themselves are in `hfdistill.losses` (shared with pruning); the `distill` stage strings these together.
"""
