"""User-level differential privacy for each shop's customers (issue 13).

- :mod:`fedcl.privacy.config`: ``federated.dp`` (:class:`DPConfig`) and which runs it fits;
- :mod:`fedcl.privacy.accountant`: epsilon over rounds from ``dp-accounting``'s RDP
  accountant, the noise calibrated to a budget, the server's ledger;
- :mod:`fedcl.privacy.user_level`: the shop's DP training step (users Poisson-sampled, each
  user's gradient clipped, Gaussian noise on the sum), Flower-free.

Where the noise is added and why: docs/PRIVACY.md.
"""
