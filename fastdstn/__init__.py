"""fastdstn: Self-Tuning Networks (STN, centered STN, Δ-STN) for PyTorch, with fused kernels.

    space = fastdstn.HyperSpace([fastdstn.Hyper("dropout", 0.2, 0.0, 0.95)])
    model = fastdstn.convert(my_model, space, dropout={"drop": "dropout"})
    method = fastdstn.SelfTuning(model, space, "delta", loss_fn=F.cross_entropy)
    optimizers = fastdstn.make_optimizers(model, space, "delta")
    method.train_step(x, y, optimizers); method.hyper_step(x_val, y_val, optimizers.hyper)
    plain = fastdstn.export(method)     # plain torch modules: my_model's architecture at the tuned values
"""
from . import nn, ops
from .hyper import Hyper, HyperSpace, feeding
from .method import Mode, Optimizers, SelfTuning, make_optimizers
from .nn import convert
from .deploy import export, load_checkpoint
from .train import Trainer

__version__ = "0.1.0"

__all__ = ["Hyper", "HyperSpace", "feeding", "Mode", "Optimizers", "SelfTuning", "make_optimizers", "convert",
           "export", "load_checkpoint", "nn", "ops", "__version__"]
