"""A client takes the device simulator's smaller steps, batch or rank for its round, and refuses
a plan beyond the run's own settings."""

from __future__ import annotations

import pytest
from flwr.app import ConfigRecord

from client.node import planned, planned_mode
from federated.config import parse_run_config
from federated.protocol import message_keys as keys

CONFIG = parse_run_config(
    {"model.name": "tiny-llama", "train.local-steps": 6, "train.batch-size": 8, "lora.rank": 8}
)


def test_no_plan_keeps_the_run_s_settings() -> None:
    settings, rank = planned(CONFIG, ConfigRecord({keys.SERVER_ROUND: 1}), 0)
    assert (settings.local_steps, settings.batch_size, rank) == (6, 8, 8)


def test_a_plan_lowers_steps_batch_and_rank() -> None:
    plan = {keys.PLANNED_STEPS: 2, keys.PLANNED_BATCH: 4, keys.PLANNED_RANK: 2}
    settings, rank = planned(CONFIG, ConfigRecord({keys.SERVER_ROUND: 1, **plan}), 0)
    assert (settings.local_steps, settings.batch_size, rank) == (2, 4, 2)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (keys.PLANNED_STEPS, 7),
        (keys.PLANNED_BATCH, 9),
        (keys.PLANNED_RANK, 16),
        (keys.PLANNED_STEPS, 0),
        (keys.PLANNED_BATCH, 2.5),
    ],
)
def test_a_plan_beyond_the_run_is_refused(key: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"the server planned {key}"):
        planned(CONFIG, ConfigRecord({keys.SERVER_ROUND: 1, key: value}), 0)


def test_a_lora_run_lets_the_server_plan_zeroth_order_and_nothing_else() -> None:
    assert planned_mode(CONFIG, ConfigRecord({keys.SERVER_ROUND: 1})) == "lora"
    assert planned_mode(CONFIG, ConfigRecord({keys.PLANNED_MODE: "zo"})) == "zo"
    with pytest.raises(ValueError, match="a lora run allows lora or zo"):
        planned_mode(CONFIG, ConfigRecord({keys.PLANNED_MODE: "full"}))
    zo_run = parse_run_config(
        {"model.name": "tiny-llama", "mode": "zo", "strategy.name": "fedkseed"}
    )
    with pytest.raises(ValueError, match="a zo run allows zo"):
        planned_mode(zo_run, ConfigRecord({keys.PLANNED_MODE: "lora"}))
