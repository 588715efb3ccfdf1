"""Continual-learning methods: replay, online EWC, distillation, joint training.

The runner needs two names: :class:`ContinualConfig` (the Hydra group ``continual``) and
:func:`build_continual`, which returns one :class:`Continual` with the hooks of
:class:`ContinualMethod` (protocol in ``fedcl/continual/base.py``).
"""

from fedcl.continual.base import ContinualMethod
from fedcl.continual.compose import Continual
from fedcl.continual.config import ContinualConfig, build_continual

__all__ = [
    "Continual",
    "ContinualConfig",
    "ContinualMethod",
    "build_continual",
]
