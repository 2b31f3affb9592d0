"""WordNet 3.0 definitions labelled with their lexicographer category: a 45-class text task.

Every synset line of WordNet's ``data.noun``, ``data.verb``, ``data.adj`` and ``data.adv`` holds a
two-digit lexicographer file number (``noun.animal``, ``verb.motion``, ...) and, after ``|``, a
gloss: the definition, optionally followed by ``; "example"`` quotes. The task is to read the
definition and name the category.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np

from federated.data.corpus import Corpus, Example
from federated.tasks import TASK_CLASSIFICATION

# WordNet's `lexnames` file, by file number; Debian's wordnet-base does not ship it, so the
# standard table (lexnames(5WN)) is written out here. A shipped file, if found, must agree.
LEXNAMES: tuple[str, ...] = (
    "adj.all",
    "adj.pert",
    "adv.all",
    "noun.Tops",
    "noun.act",
    "noun.animal",
    "noun.artifact",
    "noun.attribute",
    "noun.body",
    "noun.cognition",
    "noun.communication",
    "noun.event",
    "noun.feeling",
    "noun.food",
    "noun.group",
    "noun.location",
    "noun.motive",
    "noun.object",
    "noun.person",
    "noun.phenomenon",
    "noun.plant",
    "noun.possession",
    "noun.process",
    "noun.quantity",
    "noun.relation",
    "noun.shape",
    "noun.state",
    "noun.substance",
    "noun.time",
    "verb.body",
    "verb.change",
    "verb.cognition",
    "verb.communication",
    "verb.competition",
    "verb.consumption",
    "verb.contact",
    "verb.creation",
    "verb.emotion",
    "verb.motion",
    "verb.perception",
    "verb.possession",
    "verb.social",
    "verb.stative",
    "verb.weather",
    "adj.ppl",
)

DATA_FILES = ("data.adj", "data.adv", "data.noun", "data.verb")

# Where distributions and the WordNet installer put the database; WNSEARCHDIR, WordNet's own
# variable, comes first.
_SEARCH_DIRS = (
    "/usr/share/wordnet",
    "/usr/local/share/wordnet",
    "/usr/share/WordNet-3.0/dict",
    "/usr/local/WordNet-3.0/dict",
    "/opt/homebrew/share/wordnet",
)


def wordnet_folder() -> Path:
    """The folder holding WordNet's ``data.*`` files.

    Returns
    -------
    Path
        ``$WNSEARCHDIR`` if set, else the first of the usual install folders that has them all.

    Raises
    ------
    FileNotFoundError
        If no folder has all four data files.
    """
    candidates = [os.environ["WNSEARCHDIR"]] if os.environ.get("WNSEARCHDIR") else []
    candidates += _SEARCH_DIRS
    for candidate in candidates:
        folder = Path(candidate)
        if all((folder / name).is_file() for name in DATA_FILES):
            return folder
    raise FileNotFoundError(
        "WordNet data files (data.noun, data.verb, ...) not found in "
        f"{', '.join(candidates)}: install them with `apt-get install wordnet-base` "
        "or point WNSEARCHDIR at the folder that has them"
    )


def load_wordnet(
    *, categories: int | None = None, max_per_class: int | None = None, seed: int = 0
) -> Corpus:
    """Load WordNet definitions labelled with their lexicographer category.

    The text is the definition alone. Prefixing the synset's lemma would make the task a lookup:
    lemmas recur across synsets of one category (``run`` is in dozens of verb synsets), so a
    model could memorise word-to-category pairs, and a lemma shared between a client's training
    data and the test set would leak the answer. Example sentences after the definition are
    dropped for the same reason: they usually contain the lemma itself.

    Parameters
    ----------
    categories
        Keep only this many of the largest categories (ties broken by file number), for quick
        runs; None keeps all 45.
    max_per_class
        At most this many examples per category, a uniform sample without replacement drawn
        with `seed`; None keeps all.
    seed
        Seed of that sample; the same seed gives the same examples.

    Returns
    -------
    Corpus
        Task classification; ``label_names`` are the kept category names in file-number order,
        ``label`` indexes them and ``group`` repeats the name. Examples are in the order of the
        files (adj, adv, noun, verb) and of the lines in them.
    """
    if categories is not None and not 1 <= categories <= len(LEXNAMES):
        raise ValueError(f"categories = {categories}: must be between 1 and {len(LEXNAMES)}")
    if max_per_class is not None and max_per_class < 1:
        raise ValueError(f"max_per_class = {max_per_class}: must be at least 1")
    folder = wordnet_folder()
    names = _lexnames(folder)
    rows = [row for name in DATA_FILES for row in _read_data_file(folder / name)]

    counts = Counter(filenum for filenum, _ in rows)
    kept = sorted(counts)
    if categories is not None:
        kept = sorted(sorted(counts, key=lambda f: (-counts[f], f))[:categories])
    label_of = {filenum: label for label, filenum in enumerate(kept)}
    rows = [row for row in rows if row[0] in label_of]

    if max_per_class is not None:
        rows = _cap_per_class(rows, max_per_class, seed)

    label_names = tuple(names[filenum] for filenum in kept)
    examples = tuple(
        Example(text=definition, label=label_of[filenum], group=names[filenum])
        for filenum, definition in rows
    )
    return Corpus(
        name="wordnet", task=TASK_CLASSIFICATION, examples=examples, label_names=label_names
    )


def _lexnames(folder: Path) -> tuple[str, ...]:
    """The category names, from the folder's ``lexnames`` file when it ships one."""
    path = folder / "lexnames"
    if not path.is_file():
        return LEXNAMES
    lines = path.read_text(encoding="utf-8").splitlines()
    names = dict(line.split()[:2] for line in lines if len(line.split()) >= 2)
    return tuple(names.get(f"{i:02d}", LEXNAMES[i]) for i in range(len(LEXNAMES)))


def _read_data_file(path: Path) -> list[tuple[int, str]]:
    """(lexicographer file number, definition) for every synset line of one data file."""
    rows: list[tuple[int, str]] = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("  "):  # the license header: lines start with two spaces
                continue
            head, _, gloss = line.partition(" | ")
            # "offset lex_filenum ss_type ...": only the second field is needed.
            filenum = int(head.split(" ", 2)[1])
            definition = gloss.split('; "', 1)[0].strip()
            if definition:
                rows.append((filenum, definition))
    return rows


def _cap_per_class(rows: list[tuple[int, str]], cap: int, seed: int) -> list[tuple[int, str]]:
    """Keep at most `cap` rows per file number, sampled with `seed`, in their original order."""
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for index, (filenum, _) in enumerate(rows):
        by_class.setdefault(filenum, []).append(index)
    keep: list[int] = []
    for filenum in sorted(by_class):  # a fixed order, so the generator's draws are reproducible
        indices = by_class[filenum]
        if len(indices) > cap:
            indices = rng.choice(indices, size=cap, replace=False).tolist()
        keep.extend(indices)
    return [rows[index] for index in sorted(keep)]
