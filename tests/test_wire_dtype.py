"""wire.dtype: LoRA tensors on the wire in bfloat16 or float16, float32 again on receipt; the
bytes they take, the screen that must still pass honest replies, a whole run, and a refusal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict

from federated.config import ConfigError, parse_run_config
from federated.model.workspace import lora_model
from federated.protocol import message_keys as keys
from federated.protocol.optimizer_bound import ADAMW_BETAS, adamw_max_move
from federated.protocol.round_plan import RoundPlan
from federated.protocol.wire import (
    as_received,
    record_to_tensors,
    serialized_bytes,
    tensors_to_record,
)
from server.reply_validation import check_train_reply
from server.update_bounds import move_bound
from tests.in_process import run_federation
from tests.test_reply_validation import METRICS, PLAIN, _reply


def _state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "m.lora_A.weight": torch.randn(8, 256, generator=g) * 10 ** torch.randn(1, generator=g),
        "m.lora_B.weight": torch.randn(256, 8, generator=g) * 1e-6,  # float16's subnormals
        "seeds": torch.arange(5, dtype=torch.int64) * 2**40,
    }


def test_bfloat16_arrives_as_its_exact_bit_patterns_decoded_to_float32() -> None:
    state = _state()
    record = tensors_to_record(state, "bfloat16")
    assert record["m.lora_A.weight"].dtype == "bfloat16"
    back = record_to_tensors(record)
    for key in ("m.lora_A.weight", "m.lora_B.weight"):
        sent = state[key].to(torch.bfloat16)
        assert back[key].dtype == torch.float32
        assert torch.equal(back[key].to(torch.bfloat16).view(torch.int16), sent.view(torch.int16))
        assert torch.equal(back[key], sent.float())
    assert back["seeds"].dtype == torch.int64 and torch.equal(back["seeds"], state["seeds"])


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_float32_and_float16_arrive_as_their_values_in_float32(dtype: str) -> None:
    state = _state()
    back = record_to_tensors(tensors_to_record(state, dtype))
    wanted = getattr(torch, dtype)
    for key in ("m.lora_A.weight", "m.lora_B.weight"):
        assert back[key].dtype == torch.float32
        assert torch.equal(back[key], state[key].to(wanted).float())
    assert torch.equal(back["seeds"], state["seeds"])
    assert all(torch.equal(back[k], v) for k, v in as_received(state, dtype).items())


def test_a_bfloat16_header_over_other_numbers_does_not_decode() -> None:
    lying = Array(torch.zeros(4, 4).numpy())
    record = ArrayRecord({"x": Array("bfloat16", (4, 4), lying.stype, lying.data)})
    with pytest.raises(ValueError, match="'x' says bfloat16 \\(4, 4\\) but holds float32"):
        record_to_tensors(record)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_sixteen_bit_messages_take_half_the_bytes(dtype: str) -> None:
    state = {k: v for k, v in _state().items() if v.is_floating_point()}
    full = serialized_bytes(RecordDict({"arrays": tensors_to_record(state)}))
    half = serialized_bytes(RecordDict({"arrays": tensors_to_record(state, dtype)}))
    payload = sum(v.numel() * 4 for v in state.values())
    assert abs((full - half) - payload / 2) < 64  # the headers barely differ


def _adamw_at_the_bound(start: torch.Tensor, lr: float, steps: int) -> torch.Tensor:
    """AdamW's furthest move: the same gradient sign every step."""
    weight = torch.nn.Parameter(start.clone())
    optimizer = torch.optim.AdamW([weight], lr=lr, weight_decay=0.0, betas=ADAMW_BETAS)
    for _ in range(steps):
        weight.grad = -torch.ones_like(start)
        optimizer.step()
    return weight.detach()


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_an_honest_reply_rounded_past_the_exact_bounds_is_accepted(dtype: str) -> None:
    lr, steps = 0.01, 5
    config = parse_run_config({"wire.dtype": dtype, "train.lr": lr, "train.local-steps": steps})
    g = torch.Generator().manual_seed(1)
    sent = {"m.lora_A.weight": torch.randn(64, 64, generator=g) + 3.0}
    received = as_received(sent, dtype)  # where the client starts
    trained = {k: _adamw_at_the_bound(v, lr, steps) for k, v in received.items()}
    reply = _reply(
        RecordDict(
            {
                keys.ARRAYS: tensors_to_record(trained, dtype),
                keys.METRICS: MetricRecord(METRICS),
            }
        )
    )
    decoded = record_to_tensors(reply.content.array_records[keys.ARRAYS])["m.lora_A.weight"]
    moved = (decoded - received["m.lora_A.weight"]).abs()
    exact_move = adamw_max_move(lr, steps, 0.0, float(sent["m.lora_A.weight"].abs().max()))
    exact_norm = float((trained["m.lora_A.weight"] - received["m.lora_A.weight"]).norm())
    assert float(moved.max()) > exact_move  # rounding carried some weights past the bound
    assert float(moved.norm()) > exact_norm

    bound = move_bound(config, 1, RoundPlan(), [], sent)
    sound = check_train_reply(reply, sent, exact_norm, PLAIN, move=bound, sent=received, wire=dtype)
    assert sound is None
    # Only rounding's room: a move past it is still refused.
    pushed = {"m.lora_A.weight": received["m.lora_A.weight"] + 1.5 * bound.per_weight}
    reply.content[keys.ARRAYS] = tensors_to_record(pushed, dtype)
    refused = check_train_reply(reply, sent, 1e9, PLAIN, move=bound, sent=received, wire=dtype)
    assert "moved a weight by" in refused
    # A float32 reply is not what a bfloat16 round asked for.
    reply.content[keys.ARRAYS] = tensors_to_record(trained)
    wrong = check_train_reply(reply, sent, 1e9, PLAIN, move=bound, sent=received, wire=dtype)
    assert wrong == f"'m.lora_A.weight' has dtype float32, expected {dtype}"


def test_a_bfloat16_run_learns_and_counts_its_16_bit_bytes(tmp_path: Path) -> None:
    run = {
        "model.name": "tiny-llama",
        "num-server-rounds": 1,
        "lora.rank": 16,
        "train.lr": 0.02,
        "train.local-steps": 2,
        "strategy.fraction-evaluate": 0.0,
        "eval.max-examples": 8,
        "wire.dtype": "bfloat16",
    }
    folder = run_federation(tmp_path, "bf16", run, clients=2)
    first, last = (json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines())
    assert last["clients_accepted"] == 2  # the screen passed both honest bfloat16 replies
    assert last["test_loss"] < first["test_loss"]
    adapter = lora_model(parse_run_config(run)).initial
    payload = sum(v.numel() for v in adapter.values())
    for client in last["clients"]:
        # Each reply's adapter at 2 bytes a number, with its headers and metrics: less than
        # the adapter alone at 4.
        assert 2 * payload < client["bytes_up"] < 4 * payload


def test_wire_dtype_with_mode_zo_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError) as err:
        parse_run_config({"mode": "zo", "strategy.name": "fedkseed", "wire.dtype": "bfloat16"})
    assert str(err.value) == (
        "run config 'wire.dtype' = 'bfloat16': applies to mode = lora; mode zo sends seed "
        "indices and scalars (a few KB), which travel as they are"
    )
