"""Hyperparameters: the space (λ, ρ, transforms, perturbation, entropy) and the feed layers read."""
from .feed import Feed, current_feed, feeding
from .space import Hyper, HyperSpace, Perturbation

__all__ = ["Hyper", "HyperSpace", "Perturbation", "Feed", "current_feed", "feeding"]
