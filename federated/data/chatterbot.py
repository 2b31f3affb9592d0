"""English question/answer pairs from the `chatterbot-corpus` package, for instruction tuning.

The package ships one YAML file per topic under ``chatterbot_corpus/data/english/``, each with a
``categories`` list and a ``conversations`` list of lists of strings. We read the YAML directly:
importing `chatterbot_corpus` or `chatterbot` is not needed and the latter pulls in a lot.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

from federated.data.corpus import Corpus, Example
from federated.tasks import TASK_CAUSAL_LM


def chatterbot_folder() -> Path:
    """Where the installed package keeps its English YAML files.

    Returns
    -------
    Path
        The ``data/english`` folder of the installed `chatterbot-corpus` package.

    Raises
    ------
    FileNotFoundError
        If the package is not installed or has no English data.
    """
    # find_spec locates the package without executing its __init__.
    spec = importlib.util.find_spec("chatterbot_corpus")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "chatterbot data not found: install it with `pip install chatterbot-corpus==1.3.3`"
        )
    for location in spec.submodule_search_locations:
        folder = Path(location) / "data" / "english"
        if folder.is_dir():
            return folder
    raise FileNotFoundError(
        "chatterbot-corpus is installed but has no data/english folder; reinstall it with "
        "`pip install --force-reinstall chatterbot-corpus==1.3.3`"
    )


def load_chatterbot() -> Corpus:
    """Load the English chatterbot corpus as (question, answer) pairs.

    Each YAML file is one category; ``group`` is the file's first category name (``ai.yml`` lists
    two, ``AI`` and ``artificial intelligence``, so there are 21 groups, one per file).

    Pairing: each conversation ``[q, a, x2, x3, ...]`` yields only its first pair ``(q, a)``.
    The files use long lists in two incompatible ways: in ``emotion.yml`` and ``computers.yml``
    ``x2, x3, ...`` are alternative answers to ``q``, while in ``conversations.yml`` they are
    the next turns of a dialogue. Consecutive pairs would therefore train answer-to-answer
    nonsense for the first kind, and question-to-every-answer pairs would do the same for the
    second; ``(q, a)`` is a genuine prompt and response under both readings. It also keeps one
    example per conversation, so no prompt is repeated with contradicting answers (the files
    already repeat some prompts across conversations, which we keep).

    Conversations that are not a list of at least two non-empty strings are skipped: one entry
    of ``trivia.yml`` lacks its leading ``- `` and parses as a single string. Numbers and other
    scalars YAML may produce are turned into text.

    Returns
    -------
    Corpus
        Task causal LM, about 2,025 examples, files read in sorted order, conversations in file
        order, so the result is the same on every machine.
    """
    examples: list[Example] = []
    for path in sorted(chatterbot_folder().glob("*.yml")):
        with path.open(encoding="utf-8") as handle:
            document = yaml.safe_load(handle) or {}
        categories = document.get("categories") or [path.stem]
        group = str(categories[0])
        for conversation in document.get("conversations") or []:
            pair = _first_pair(conversation)
            if pair is not None:
                examples.append(Example(text=pair[0], target=pair[1], group=group))
    return Corpus(name="chatterbot", task=TASK_CAUSAL_LM, examples=tuple(examples))


def _first_pair(conversation: object) -> tuple[str, str] | None:
    """The (prompt, response) of one conversation, or None if it is malformed."""
    if not isinstance(conversation, list) or len(conversation) < 2:
        return None
    prompt, response = conversation[0], conversation[1]
    # A missing value, a nested list or a mapping is not text.
    if any(part is None or isinstance(part, (list, dict)) for part in (prompt, response)):
        return None
    prompt, response = str(prompt).strip(), str(response).strip()
    if not prompt or not response:
        return None
    return prompt, response
