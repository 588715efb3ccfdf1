"""Evidence for docs/PRIVACY.md ("Secure aggregation"): Flower 1.42's SecAgg+ runs only on
the legacy server stack, so it cannot wrap fedcl's message-API loop. When one of these
assertions fails, Flower has changed: revisit that section and try SecAgg+ again."""

from __future__ import annotations

import inspect

import pytest
from flwr.app import Context, RecordDict
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import Strategy as LegacyStrategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.serverapp.strategy import FedAvg


def test_secaggplus_workflow_refuses_a_message_api_context():
    workflow = SecAggPlusWorkflow(num_shares=3, reconstruction_threshold=2)
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})

    with pytest.raises(TypeError, match="Expect a LegacyContext"):
        workflow(None, context)


def test_it_aggregates_through_legacy_strategies_which_the_message_api_ones_are_not():
    source = inspect.getsource(SecAggPlusWorkflow)

    assert "context.strategy.configure_fit" in source
    assert "context.strategy.aggregate_fit" in source
    assert inspect.signature(LegacyContext).parameters["strategy"].annotation in (
        "Strategy | None",
        LegacyStrategy | None,
    )
    assert not issubclass(FedAvg, LegacyStrategy)
    assert not hasattr(FedAvg, "aggregate_fit")


def test_it_hands_the_strategy_only_the_sum_so_no_per_reply_check_could_run():
    # Every legacy FitRes gets the unmasked *aggregate* as its parameters before
    # aggregate_fit: the per-shop update the bounds inspect never exists at the server.
    source = inspect.getsource(SecAggPlusWorkflow.unmask_stage)

    assert "fitres.parameters = parameters" in source
