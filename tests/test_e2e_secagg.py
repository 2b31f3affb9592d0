"""SecAgg+ end to end through Flower's simulation engine: clients that fail in the collect stage
(an exception in the ClientApp, after sharing their secrets) leave the sum of the others. The
protocol's other behaviours run in process: ``test_secagg_rounds``, and
``test_secagg_hostile_server`` for a server that deviates."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.simulate import simulate
from tests.test_secagg_rounds import LORA, adapter, assert_close

pytestmark = pytest.mark.slow


def _run(tmp: Path, name: str, config: dict, **kwargs) -> Path:
    return simulate({**config, "output-dir": str(tmp), "run-name": name}, 5, **kwargs)


def test_dropouts_after_sharing_leave_the_sum_of_the_others(tmp_path: Path) -> None:
    # Plain: partitions 0 and 1 send unusable updates and are rejected. Secure: they drop out
    # after sharing their secrets. Either way the model is the mean of partitions 2, 3 and 4.
    poisoned = {"train": {0: "nan", 1: "missing-tensor"}}
    plain = adapter(_run(tmp_path, "plain-poisoned", LORA, corrupt=poisoned))
    config = {**LORA, "secagg.enabled": True, "secagg.reconstruction-threshold": 0.5}
    assert_close(adapter(_run(tmp_path, "secure-dropouts", config, drop_out=True)), plain)
