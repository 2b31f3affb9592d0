"""Split learning's math against its definitions: head, body and tail give the whole prompt-tuned
model's logits and prompt gradient (peft's own prompt tuning as the reference); the local loss
is the tail on the head's output; EL2N and pruning; the activations' clipping and noise; the
inversion attack."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from federated.data.encode import IGNORE_INDEX
from federated.model.lora import trainable_parameters, wrap_with_lora
from federated.model.losses import lm_loss_terms
from federated.model.presets import load_base_model
from federated.split.activation_noise import clipped, noise_like
from federated.split.inversion import LinearInversion
from federated.split.local_update import el2n_scores, keep_hardest, local_loss_terms
from federated.split.parts import SplitError, SplitModel, block_of
from federated.split.prompt_model import PROMPT_KEY, get_prompt, with_soft_prompt
from federated.tasks import TASK_CAUSAL_LM


@pytest.fixture(scope="module")
def split() -> SplitModel:
    torch.manual_seed(0)
    base = load_base_model("tiny-llama", TASK_CAUSAL_LM, seed=0)
    base.requires_grad_(False)
    prompted = with_soft_prompt(base, 4, seed=1)
    prompted.eval()
    return SplitModel(prompted, cut=1)


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 200, (3, 9), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # a right-padded row, as training batches are
    labels = ids.clone()
    labels[:, :3] = IGNORE_INDEX  # the prompt part of an instruction is not scored
    labels[mask == 0] = IGNORE_INDEX
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _whole_loss(split: SplitModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    logits = split.peft_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return lm_loss_terms(logits.logits, batch["labels"]).mean_loss()


def test_head_body_tail_give_the_whole_model_logits_and_prompt_gradient(
    split: SplitModel,
) -> None:
    batch = _batch()
    whole = _whole_loss(split, batch)
    (whole_grad,) = torch.autograd.grad(whole, split.prompt)

    # As the exchange runs it: the activations cross the cut detached, each side its own graph.
    hidden, mask = split.head(batch["input_ids"], batch["attention_mask"])
    sent = hidden.detach().requires_grad_(True)
    body = split.body(sent, mask)
    received = body.detach().requires_grad_(True)
    logits = split.tail(received)
    loss = lm_loss_terms(logits, batch["labels"]).mean_loss()
    (at_body,) = torch.autograd.grad(loss, received)  # device -> server
    (at_cut,) = torch.autograd.grad(body, sent, at_body)  # server -> device
    (prompt_grad,) = torch.autograd.grad(hidden, split.prompt, at_cut)

    reference = split.peft_model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    )
    torch.testing.assert_close(logits, reference.logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(loss, whole, rtol=0, atol=1e-6)
    torch.testing.assert_close(prompt_grad, whole_grad, rtol=1e-4, atol=1e-7)
    assert prompt_grad.abs().sum() > 0


def test_every_cut_gives_the_same_model(split: SplitModel) -> None:
    batch = _batch(1)
    reference = split.peft_model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    )
    blocks = len(split.lm.model.layers)
    for cut in range(1, blocks):
        other = SplitModel(split.peft_model, cut)
        hidden, mask = other.head(batch["input_ids"], batch["attention_mask"])
        logits = other.tail(other.body(hidden, mask))
        torch.testing.assert_close(logits, reference.logits, rtol=0, atol=1e-5)
    for cut in (0, blocks):
        with pytest.raises(SplitError, match="both sides"):
            SplitModel(split.peft_model, cut)


def test_the_local_loss_is_the_tail_on_the_head_output(split: SplitModel) -> None:
    batch = _batch(2)
    with torch.no_grad():
        hidden, _ = split.head(batch["input_ids"], batch["attention_mask"])
        logits = split.lm.lm_head(split.lm.model.norm(hidden))[:, 4:]  # the prompt's 4 first
        terms = local_loss_terms(split, batch)
    expected = []
    for row in range(3):
        scored = [t for t in range(8) if batch["labels"][row, t + 1] != IGNORE_INDEX]
        losses = [F.cross_entropy(logits[row, t], batch["labels"][row, t + 1]) for t in scored]
        expected.append(sum(losses) / len(losses))
    torch.testing.assert_close(terms.per_example(), torch.stack(expected), rtol=1e-5, atol=1e-6)


def test_el2n_is_the_mean_distance_of_the_prediction_from_the_one_hot_target(
    split: SplitModel,
) -> None:
    batch = _batch(3)
    encoded = [
        {
            "input_ids": batch["input_ids"][row][batch["attention_mask"][row] == 1].tolist(),
            "attention_mask": [1] * int(batch["attention_mask"][row].sum()),
            "labels": batch["labels"][row][batch["attention_mask"][row] == 1].tolist(),
        }
        for row in range(3)
    ]
    scores = el2n_scores(split, encoded, batch_size=2, pad_token_id=0)
    with torch.no_grad():
        logits = split.tail(split.head(batch["input_ids"], batch["attention_mask"])[0])[:, 4:]
    for row in range(3):
        distances = []
        for t in range(8):  # position t (after the prompt's 4) predicts label t + 1
            target = int(batch["labels"][row, t + 1])
            if target == IGNORE_INDEX:
                continue
            one_hot = torch.zeros(logits.size(-1))
            one_hot[target] = 1
            distances.append(float((logits[row, t].softmax(-1) - one_hot).norm()))
        assert math.isclose(float(scores[row]), sum(distances) / len(distances), rel_tol=1e-4)
    assert all(0 <= float(s) <= math.sqrt(2) for s in scores)


def test_pruning_keeps_the_highest_scores() -> None:
    scores = torch.tensor([0.2, 0.9, 0.5, 0.9, 0.1])
    assert keep_hardest(scores, 0.4) == [1, 3]
    assert keep_hardest(scores, 0.5) == [1, 2, 3]  # ceil(2.5)
    assert keep_hardest(scores, 0.01) == [1]  # at least one, the earlier of a tie
    assert keep_hardest(scores, 1.0) == [0, 1, 2, 3, 4]


def test_activations_are_clipped_per_example_and_noised_at_the_stated_scale() -> None:
    generator = torch.Generator().manual_seed(4)
    hidden = torch.randn(4, 6, 16, generator=generator) * torch.tensor([0.01, 1, 5, 50]).view(
        4, 1, 1
    )
    out = clipped(hidden, 2.0)
    norms = out.flatten(1).norm(dim=1)
    assert float(norms.max()) <= 2.0 + 1e-5
    torch.testing.assert_close(out[0], hidden[0])  # below the bound: untouched
    torch.testing.assert_close(norms[2:], torch.full((2,), 2.0))
    noise = noise_like(torch.zeros(64, 64, 64), 2.0, 0.5, torch.Generator().manual_seed(5))
    assert abs(float(noise.std()) - 1.0) < 0.01 and abs(float(noise.mean())) < 0.01


def test_the_prompt_is_peft_prompt_tuning_seeded_from_the_vocabulary() -> None:
    base = load_base_model("tiny-llama", TASK_CAUSAL_LM, seed=0)
    first = get_prompt(with_soft_prompt(base, 5, seed=7))[PROMPT_KEY]
    other = load_base_model("tiny-llama", TASK_CAUSAL_LM, seed=0)
    again = get_prompt(with_soft_prompt(other, 5, seed=7))[PROMPT_KEY]
    assert first.shape == (5, base.config.hidden_size)
    torch.testing.assert_close(first, again)
    vocabulary = base.get_input_embeddings().weight
    for row in first:  # each virtual token starts as some token's embedding
        assert (vocabulary - row).abs().amax(dim=1).min() < 1e-6


def test_the_inversion_attack_recovers_tokens_and_noise_defeats_it(split: SplitModel) -> None:
    generator = torch.Generator().manual_seed(6)
    public = [torch.randint(3, 2000, (24,), generator=generator) for _ in range(40)]
    attack = LinearInversion.fit(split, public)
    batch = _batch(7)
    with torch.no_grad():
        hidden, mask = split.head(batch["input_ids"], batch["attention_mask"])
    plain = attack.recovered_share(hidden, mask, batch["input_ids"])
    clip = float(hidden.flatten(1).norm(dim=1).max())
    noised = hidden + noise_like(hidden, clip, 1.0, torch.Generator().manual_seed(8))
    assert plain > 0.5  # a shallow cut gives most tokens away
    assert attack.recovered_share(noised, mask, batch["input_ids"]) < 0.1


def test_a_lora_model_split_gives_the_whole_models_factor_gradients() -> None:
    """A split device in a LoRA run: the device's factors get their gradient through the cut,
    the body's come from the server's own copies, and together they are the whole model's."""
    base = load_base_model("tiny-llama", TASK_CAUSAL_LM, seed=0)
    lora = wrap_with_lora(
        base, TASK_CAUSAL_LM, rank=4, alpha=8, dropout=0.0, target_modules=("q_proj", "v_proj")
    )
    lora.eval()
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():  # nonzero B factors: every factor's gradient is nonzero
        for param in trainable_parameters(lora).values():
            param.copy_(0.1 * torch.randn(param.shape, generator=generator))
    split = SplitModel(lora, cut=1)
    device, body = split.device_trainable(), split.body_trainable()
    assert split.prompt is None and split.virtual_tokens == 0
    assert device.keys() | body.keys() == trainable_parameters(lora).keys()
    assert {block_of(k) for k in device} == {0} and min(block_of(k) for k in body) == 1
    batch = _batch()
    whole = split.peft_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    whole_loss = lm_loss_terms(whole.logits, batch["labels"]).mean_loss()
    every = {**device, **body}
    expected = dict(zip(every, torch.autograd.grad(whole_loss, list(every.values())), strict=True))

    hidden, mask = split.head(batch["input_ids"], batch["attention_mask"])
    sent = hidden.detach().requires_grad_(True)
    server = {k: p.detach().clone().requires_grad_(True) for k, p in body.items()}
    out = split.body(sent, mask, server)
    received = out.detach().requires_grad_(True)
    logits = split.tail(received)
    torch.testing.assert_close(logits, whole.logits, rtol=0, atol=1e-5)
    loss = lm_loss_terms(logits, batch["labels"]).mean_loss()
    (at_output,) = torch.autograd.grad(loss, received)
    at_cut, *server_grads = torch.autograd.grad(out, [sent, *server.values()], at_output)
    device_grads = torch.autograd.grad(hidden, list(device.values()), at_cut)
    got = dict(zip([*device, *server], [*device_grads, *server_grads], strict=True))
    for key, grad in expected.items():
        torch.testing.assert_close(got[key], grad, rtol=1e-4, atol=1e-7)

    # The body runs the server's tensors, not the model's: zero B factors there, and the
    # body's output is the base model's (the model's own factors are untouched).
    zeroed = {k: torch.zeros_like(t) if ".lora_B." in k else t for k, t in server.items()}
    before = {k: p.detach().clone() for k, p in body.items()}
    other = split.body(sent, mask, zeroed)
    assert not torch.allclose(other, out)
    for key, param in body.items():
        assert torch.equal(param, before[key])
