"""The method: STN, centered STN and Δ-STN training and hyper steps (docs/METHOD.md §4–§5)."""
from .guard import NonFiniteUpdate
from .steps import Mode, Optimizers, SelfTuning, frozen, linearized, make_optimizers

__all__ = ["Mode", "NonFiniteUpdate", "Optimizers", "SelfTuning", "frozen", "linearized", "make_optimizers"]
