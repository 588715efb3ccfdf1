"""The shop agent's Flower ClientApp, for ``flwr run`` (pyproject
``[tool.flwr.app.components]``); it lives in :mod:`fedcl.federated.client_app`."""

from fedcl.federated.client_app import make_client_app

app = make_client_app()
