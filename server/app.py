"""The Flower ServerApp, for ``flwr run`` (pyproject ``[tool.flwr.app.components]``); it lives
in :mod:`fedcl.federated.server_app`."""

from fedcl.federated.server_app import make_server_app

app = make_server_app()
