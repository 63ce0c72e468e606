"""Optimizers: MeZO (zeroth-order), its successors (:mod:`zoft.optim.estimators`) and the builder.

``from zoft.optim import MeZO`` works as usual; the import is lazy so that the torch-free
:mod:`zoft.optim.registry` can be read by config validation without loading torch.
"""

__all__ = ["MeZO", "MeZOAdam", "MeZOSGD", "ZOFirstOrder"]


def __getattr__(name: str):
    if name in __all__:
        from zoft.optim import mezo

        return getattr(mezo, name)
    raise AttributeError(f"module 'zoft.optim' has no attribute {name!r}")
