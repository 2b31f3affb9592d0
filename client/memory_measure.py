"""The measured peak memory of a client's training job on this machine, to check the estimate.

Each measurement runs in a fresh process with this process's environment, as a SuperNode's
ClientApp process runs on a node that plans its memory: import what that process imports
(Flower's ClientApp runtime and ``client.app``), read the resident set (the runtime), set the
allocator as such a node does (``client.planned_memory``), build the model, reset the kernel's
high-water mark (``/proc/self/clear_refs``), take a few real training steps
(``client.lora_trainer``, ``client.dp_lora_trainer`` or ``federated.zo.trainer``; a split
device's round: its local-loss steps, its pruning pass and its side of exchange steps, holding
only its parts) on random examples of the given length, and read the high-water mark (the job's
peak, runtime included).

    python -m client.memory_measure '{"model.name": "tiny-llama"}' 8 96
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

_STEPS = 3


def _status_bytes(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1]) * 1024  # the kernel reports kB
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure(config: dict, batch: int, length: int) -> dict[str, float]:
    """Resident bytes measured in a process of its own: with the runtime alone, once the model
    is loaded, and at the training steps' peak."""
    command = [
        sys.executable,
        "-m",
        "client.memory_measure",
        json.dumps(config),
        str(batch),
        str(length),
    ]
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        command,
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _examples(task: str, batch: int, length: int, vocab: int) -> list[dict]:
    import torch

    generator = torch.Generator().manual_seed(0)
    examples = []
    for _ in range(batch * _STEPS):
        ids = torch.randint(10, vocab, (length,), generator=generator).tolist()
        example = {"input_ids": ids, "attention_mask": [1] * length}
        example.update({"labels": ids} if task == "causal-lm" else {"label": 0})
        examples.append(example)
    return examples


def _split_round(config, batch: int, examples: list[dict], pad_token_id: int) -> None:
    """A split device's round on its parts alone: its local-loss steps, the EL2N pass over its
    examples, and its side of exchange steps (the head's forward and backward, the tail's loss
    and gradient at an output of the cut's shape, as the server's body returns)."""
    import gc

    import torch

    from federated.data.encode import collate
    from federated.model.losses import lm_loss_terms
    from federated.split.local_update import el2n_scores, local_loss_terms
    from federated.split.round_optimizer import clipped_step, round_optimizer
    from federated.split.split_workspace import split_model

    split = split_model(config)
    del split.lm.model.layers[config.split.cut_layer :]  # the server's body
    gc.collect()
    optimizer = round_optimizer([split.prompt], config, 1)
    Path("/proc/self/clear_refs").write_text("5")  # the high-water mark restarts here
    for step in range(config.split.local_steps + _STEPS):
        chunk = collate(examples[step % _STEPS * batch :][:batch], pad_token_id)
        if step < config.split.local_steps:
            local_loss_terms(split, chunk).mean_loss().backward()
        else:
            if step == config.split.local_steps:
                el2n_scores(split, examples, batch, pad_token_id)
            hidden, _ = split.head(chunk["input_ids"], chunk["attention_mask"])
            body = hidden.detach().requires_grad_(True)
            loss = lm_loss_terms(split.tail(body), chunk["labels"]).mean_loss()
            (gradient,) = torch.autograd.grad(loss, body)
            hidden.backward(gradient)
        clipped_step(optimizer, [split.prompt], config.train.max_grad_norm)


def main() -> None:
    import importlib

    import torch

    from federated.devices.runtime_memory import FLOWER_CLIENTAPP_RUNTIME

    importlib.import_module(FLOWER_CLIENTAPP_RUNTIME)  # a ClientApp process's imports are
    import client.app  # noqa: F401 - part of its runtime
    from client.dp_lora_trainer import train_lora_dp
    from client.lora_trainer import train_lora
    from federated.config import parse_run_config
    from federated.devices.allocator import return_freed_memory
    from federated.model.presets import load_tokenizer
    from federated.model.workspace import lora_model
    from federated.zo.trainer import train_zo
    from federated.zo.workspace import zo_model

    torch.set_num_threads(1)
    config = parse_run_config(json.loads(sys.argv[1]))
    batch, length = int(sys.argv[2]), int(sys.argv[3])
    runtime = _status_bytes("VmRSS")
    if not return_freed_memory():
        raise SystemExit("the memory planner's allocator is glibc's: this C library is not")
    if config.mode == "split":
        tokenizer = load_tokenizer(config.model.name)
        examples = _examples(config.task, batch, length, len(tokenizer))
        _split_round(config, batch, examples, tokenizer.pad_token_id)
        peak = _status_bytes("VmHWM")
        print(json.dumps({"runtime": runtime, "peak": peak}))
        return
    built = zo_model(config) if config.mode == "zo" else lora_model(config)
    tokenizer = built.tokenizer
    examples = _examples(config.task, batch, length, len(tokenizer))
    loaded = _status_bytes("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # the high-water mark restarts here
    generator = torch.Generator().manual_seed(0)
    settings = dataclasses.replace(config.train, batch_size=batch, local_steps=_STEPS)
    if config.mode == "zo":
        train_zo(
            built.model,
            built.targets,
            built.pool,
            examples,
            config.task,
            steps=_STEPS,
            lr=config.zo.lr,
            eps=config.zo.eps,
            batch_size=batch,
            structure=config.zo.perturbation,
            pad_token_id=tokenizer.pad_token_id,
            generator=generator,
        )
    elif config.dp.record_level:
        train_lora_dp(
            built.model,
            examples,
            config.task,
            settings,
            noise_multiplier=1.0,
            max_grad_norm=config.dp.record.max_grad_norm,
            sample_rate=batch / len(examples),
            expected_batch=batch,
            mode=config.dp.record.grad_sample_mode,
            pad_token_id=tokenizer.pad_token_id,
            generator=generator,
            # Poisson draws vary around the batch; a planned node takes larger ones in chunks.
            physical_batch=batch,
        )
    else:
        train_lora(
            built.model,
            examples,
            config.task,
            settings,
            pad_token_id=tokenizer.pad_token_id,
            generator=generator,
        )
    peak = _status_bytes("VmHWM")
    print(json.dumps({"runtime": runtime, "loaded": loaded, "peak": peak}))


if __name__ == "__main__":
    main()
