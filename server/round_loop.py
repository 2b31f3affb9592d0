"""The round loop: each round's stages (train, evaluate, record) over the run built at start."""

from __future__ import annotations

import time
from logging import INFO

from flwr.common import log
from flwr.serverapp import Grid

from federated.checkpoint import kept_before
from federated.protocol.global_model import GlobalModel
from federated.protocol.stop_request import take_stop_request
from server.evaluate_stage import evaluate_round
from server.round_record import prefixed, record_round
from server.run import Run
from server.start_checks import RunFailure
from server.train_stage import train_round


def run_rounds(grid: Grid, run: Run) -> GlobalModel:
    """Run ``num-server-rounds`` rounds from the strategy's model, or those after the resumed
    checkpoint's round (the strategy restored from it); return the final model. Nodes that
    join later are asked which partition they hold before the round that could sample them."""
    rounds, results = run.config.num_server_rounds, run.results
    if run.resumed is None:
        initial = run.server_model.evaluate(run.strategy.model)
        left_out = [
            {"node_id": n, "reason": why} for n, why in sorted(run.partitions.refused.items())
        ]
        record = {"round": 0, **prefixed("test", initial), "nodes_left_out": left_out}
        results.append_round(record)
        run.tracking.round(results.published(record))
        log(INFO, "[round 0/%d] initial model: test loss %.4f", rounds, initial.loss)
    first = run.resumed.round + 1 if run.resumed else 1
    for server_round in range(first, rounds + 1):
        if take_stop_request(results.folder):
            raise RunFailure(
                f"stopped at the operator's request before round {server_round}; "
                f"{kept_before(server_round)}"
            )
        started = time.perf_counter()
        log(INFO, "[round %d/%d] training", server_round, rounds)
        if not run.strategy.budget_allows(server_round):
            break
        run.partitions.learn(grid, grid.get_node_ids(), run.config.server.round_timeout)
        training = train_round(grid, run, server_round)
        evaluation = evaluate_round(grid, run, server_round)
        record_round(run, server_round, training, evaluation, started)
    return run.strategy.model
