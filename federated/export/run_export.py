"""``fedtune export RUN_DIR``: a run's global model as files that need no fedtune to run.

``model.safetensors``, ``config.json`` and the tokenizer, as ``save_pretrained`` writes them, load
with ``AutoModelForCausalLM.from_pretrained(folder)`` (``AutoModelForSequenceClassification``
for a classifier); each ``--gguf TYPE`` adds ``<model>-<type>.gguf`` for llama.cpp-based
runtimes. Whether the GGUF can be written is settled from the run's config before any weights
load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from transformers import PreTrainedModel

from federated.config import RunConfig
from federated.export.gguf_file import write_gguf
from federated.export.gguf_llama import ARCHITECTURES, check_llama_family
from federated.export.gguf_types import GGUF_TYPES
from federated.export.merged import merged_model
from federated.inference.run_folder import open_run, trained_model
from federated.model.presets import base_model_config
from federated.model.workspace import corpus_for
from federated.tasks import TASK_CAUSAL_LM, TASK_CLASSIFICATION

EXPORT_FOLDER = "export"  # under the run folder, unless --out says otherwise


@dataclass
class Exported:
    """What an export wrote."""

    folder: Path
    round: int
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def export_run(
    run_dir: Path,
    server_round: int | None = None,
    out: Path | None = None,
    gguf_types: tuple[str, ...] = (),
) -> Exported:
    """Export the run at ``run_dir`` (its last round, or ``server_round``) into ``out``
    (default ``RUN_DIR/export``); a ``ValueError`` in one line for what cannot be exported."""
    run = open_run(run_dir, server_round)
    if run.config.mode == "split":
        raise ValueError(
            "a split run trained a soft prompt, which merges into no weight of the model: its "
            "adapter/ folder is a peft prompt-tuning adapter (PeftModel.from_pretrained)"
        )
    if gguf_types:
        check_gguf(run.config, gguf_types)
    trained = trained_model(run)
    model = merged_model(trained)
    _name_labels(model, run.config)
    folder = Path(out).expanduser() if out else run.folder / EXPORT_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    trained.tokenizer.save_pretrained(folder)
    saved = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix != ".gguf")
    result = Exported(folder, run.round, saved)
    stem = gguf_stem(run.config.model.name)
    for gguf_type in gguf_types:
        path = folder / f"{stem}-{gguf_type}.gguf"
        pre = write_gguf(model, trained.tokenizer, folder, path, gguf_type, stem)
        result.files.append(path)
        if pre == "default":
            result.notes.append(
                f"{path.name}: llama.cpp knows no pre-tokenizer by this tokenizer's splitting; "
                "written as 'default' (GPT-2's), which may split some text differently"
            )
    return result


def check_gguf(config: RunConfig, gguf_types: tuple[str, ...]) -> None:
    """A ``ValueError`` in one line unless this run's model can be written as GGUF."""
    unknown = [t for t in gguf_types if t not in GGUF_TYPES]
    if unknown:
        raise ValueError(f"GGUF type {unknown[0]!r} is not one of {', '.join(GGUF_TYPES)}")
    if config.task == TASK_CLASSIFICATION and not config.verbalized:
        raise ValueError(
            "GGUF export supports causal LMs of the llama family "
            f"({', '.join(ARCHITECTURES)}); this run trains a classifier "
            "(export without --gguf writes its transformers model)"
        )
    check_llama_family(base_model_config(config.model.name, TASK_CAUSAL_LM))


def gguf_stem(model_name: str) -> str:
    """The GGUF files' name before the type: the preset's name, or a path's or hub id's last
    part."""
    return Path(model_name.rstrip("/")).name or "model"


def _name_labels(model: PreTrainedModel, config: RunConfig) -> None:
    """A classifier's config names its classes as the run's data does."""
    if config.task != TASK_CLASSIFICATION or config.verbalized:
        return
    names = corpus_for(config).label_names
    if names and len(names) == model.config.num_labels:
        model.config.id2label = dict(enumerate(names))
        model.config.label2id = {name: i for i, name in enumerate(names)}
