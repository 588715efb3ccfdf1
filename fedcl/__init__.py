"""fedcl: federated continual learning for e-commerce recommendation."""

import os

# On a shared 2-core machine, OpenMP threads that spin while waiting starve each other
# (measured: one training epoch 22x slower next to another torch process). Passive waiting
# costs nothing when the machine is idle. Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
