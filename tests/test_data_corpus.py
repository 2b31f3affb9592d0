"""The loaders: real packaged data (chatterbot, WordNet) and the user's own JSONL/CSV files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from federated.data import wordnet
from federated.data.chatterbot import load_chatterbot
from federated.data.corpus import Corpus, Example
from federated.data.files import MAX_LINE_BYTES, load_table
from federated.data.wordnet import LEXNAMES, load_wordnet
from federated.tasks import TASK_CAUSAL_LM, TASK_CLASSIFICATION

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def chatterbot() -> Corpus:
    return load_chatterbot()


@pytest.fixture(scope="module")
def full_wordnet() -> Corpus:
    return load_wordnet()


# --- chatterbot ------------------------------------------------------------------------------


def test_chatterbot_has_the_pairs_and_categories_of_the_package(chatterbot: Corpus) -> None:
    # chatterbot-corpus 1.3.3 has 2,026 conversations in 21 English files; one entry of
    # trivia.yml lost its leading "- " and parses as a plain string, so 2,025 (q, a) pairs remain.
    assert chatterbot.task == TASK_CAUSAL_LM
    assert len(chatterbot) == 2025
    groups = Counter(example.group for example in chatterbot.examples)
    assert len(groups) == 21
    assert groups["tech support"] == 1050  # the largest file: the natural split is very uneven
    assert groups["AI"] == 105  # ai.yml lists two categories; the first names the group
    assert all(example.text and example.target for example in chatterbot.examples)
    assert all(example.label == -1 for example in chatterbot.examples)


def test_chatterbot_takes_the_first_pair_of_each_conversation(chatterbot: Corpus) -> None:
    # computers.yml: ["What is a computer?", answer, alternative answers...]
    computer = [e for e in chatterbot.examples if e.text == "What is a computer?"]
    assert len(computer) == 1
    assert computer[0].target.startswith("A computer is an electronic device")
    assert computer[0].group == "computers"


def test_chatterbot_is_deterministic(chatterbot: Corpus) -> None:
    assert load_chatterbot() == chatterbot


# --- WordNet ---------------------------------------------------------------------------------


def test_wordnet_has_45_categories_and_every_definition(full_wordnet: Corpus) -> None:
    # WordNet 3.0: 82,115 noun + 13,767 verb + 18,156 adjective + 3,621 adverb synsets.
    assert full_wordnet.task == TASK_CLASSIFICATION
    assert len(full_wordnet) == 117_659
    assert full_wordnet.label_names == LEXNAMES
    assert len(full_wordnet.label_names) == 45
    labels = Counter(example.label for example in full_wordnet.examples)
    assert set(labels) == set(range(45))
    assert labels[LEXNAMES.index("noun.artifact")] == 11_587
    for example in full_wordnet.examples[::1000]:
        assert example.group == full_wordnet.label_names[example.label]
        assert example.text and '; "' not in example.text and "|" not in example.text


def test_wordnet_keeps_the_largest_categories_and_caps_them(full_wordnet: Corpus) -> None:
    sizes = Counter(example.group for example in full_wordnet.examples)
    largest = {name for name, _ in sizes.most_common(8)}
    small = load_wordnet(categories=8, max_per_class=50, seed=3)
    assert set(small.label_names) == largest
    assert len(small) == 8 * 50
    assert Counter(example.label for example in small.examples) == dict.fromkeys(range(8), 50)
    # The sample is a subset of the full corpus, reproducible with its seed and not with another.
    assert {e.text for e in small.examples} <= {e.text for e in full_wordnet.examples}
    assert load_wordnet(categories=8, max_per_class=50, seed=3) == small
    assert load_wordnet(categories=8, max_per_class=50, seed=4) != small


def test_wordnet_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="categories"):
        load_wordnet(categories=46)
    with pytest.raises(ValueError, match="max_per_class"):
        load_wordnet(max_per_class=0)


def _write_fake_wordnet(folder: Path) -> None:
    header = "  1 This software and database is being provided to you, the LICENSEE\n"
    lines = {
        "data.noun": [
            "00001740 03 n 01 entity 0 000 | that which is perceived or known to exist  \n",
            "02084071 05 n 01 dog 0 000 | a member of the genus Canis;"
            ' "the dog barked all night"  \n',
        ],
        "data.verb": [
            '01835496 38 v 01 travel 0 000 | change location; move; "how fast does'
            ' light travel?"; "news travels fast"  \n'
        ],
        "data.adj": ["00001740 00 a 01 able 0 000 | having the necessary means or skill  \n"],
        "data.adv": [],
    }
    for name, rows in lines.items():
        (folder / name).write_text(header + "".join(rows), encoding="utf-8")


def test_wordnet_parses_definitions_without_examples(tmp_path: Path, monkeypatch) -> None:
    _write_fake_wordnet(tmp_path)
    monkeypatch.setenv("WNSEARCHDIR", str(tmp_path))
    corpus = load_wordnet()
    assert [(e.text, e.group) for e in corpus.examples] == [
        ("having the necessary means or skill", "adj.all"),
        ("that which is perceived or known to exist", "noun.Tops"),
        ("a member of the genus Canis", "noun.animal"),
        ("change location; move", "verb.motion"),  # a ';' inside the definition stays
    ]
    # Only categories that occur are classes, indexed in file-number order.
    assert corpus.label_names == ("adj.all", "noun.Tops", "noun.animal", "verb.motion")
    assert [e.label for e in corpus.examples] == [0, 1, 2, 3]


def test_wordnet_missing_says_how_to_install(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("WNSEARCHDIR", raising=False)
    monkeypatch.setattr(wordnet, "_SEARCH_DIRS", (str(tmp_path),))
    with pytest.raises(FileNotFoundError, match="apt-get install wordnet-base"):
        load_wordnet()


# --- the user's own files --------------------------------------------------------------------


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_jsonl_instruction_pairs(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "pairs.jsonl",
        [{"q": "Hi?", "a": "Hello.", "topic": "greet"}, {"q": "2+2?", "a": "4", "topic": "math"}],
    )
    corpus = load_table(
        path, task=TASK_CAUSAL_LM, text_column="q", target_column="a", group_column="topic"
    )
    assert corpus.name == "pairs"
    assert corpus.examples == (
        Example(text="Hi?", target="Hello.", group="greet"),
        Example(text="2+2?", target="4", group="math"),
    )
    assert corpus.label_names == ()


def test_csv_string_labels_map_to_sorted_names(tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    path.write_text('text,label\ngood,pos\n"bad, really",neg\nfine,pos\n', encoding="utf-8")
    corpus = load_table(path, task=TASK_CLASSIFICATION, text_column="text", label_column="label")
    assert corpus.label_names == ("neg", "pos")
    assert [(e.text, e.label) for e in corpus.examples] == [
        ("good", 1),
        ("bad, really", 0),
        ("fine", 1),
    ]


def test_integer_labels_are_indices(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "ints.jsonl", [{"t": "a", "y": 2}, {"t": "b", "y": 0}])
    corpus = load_table(path, task=TASK_CLASSIFICATION, text_column="t", label_column="y")
    assert [e.label for e in corpus.examples] == [2, 0]
    assert corpus.label_names == ("0", "1", "2")
    csv_path = tmp_path / "ints.csv"
    csv_path.write_text("t,y\na,1\nb,0\n", encoding="utf-8")
    corpus = load_table(csv_path, task=TASK_CLASSIFICATION, text_column="t", label_column="y")
    assert [e.label for e in corpus.examples] == [1, 0]


def test_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text("x\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"unknown extension '\.txt'"):
        load_table(path, task=TASK_CAUSAL_LM, text_column="q", target_column="a")


def test_missing_column_names_it_and_the_columns_present(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "pairs.jsonl", [{"q": "Hi?", "answer": "Hello."}])
    with pytest.raises(ValueError, match=r"pairs\.jsonl: no column 'a'.*'q', 'answer'"):
        load_table(path, task=TASK_CAUSAL_LM, text_column="q", target_column="a")
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text("q,answer\nHi?,Hello.\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"pairs\.csv: no column 'a'.*'q', 'answer'"):
        load_table(csv_path, task=TASK_CAUSAL_LM, text_column="q", target_column="a")


@pytest.mark.parametrize(("name", "content"), [("e.jsonl", ""), ("e.jsonl", "\n\n"), ("e.csv", "")])
def test_empty_file(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match="empty"):
        load_table(path, task=TASK_CAUSAL_LM, text_column="q", target_column="a")


def test_header_without_rows(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_text("q,a\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no rows"):
        load_table(path, task=TASK_CAUSAL_LM, text_column="q", target_column="a")


@pytest.mark.parametrize("bad", [{"q": "x"}, {"q": "x", "a": None}, {"q": "x", "a": "  "}])
def test_jsonl_row_missing_a_value_names_the_line(tmp_path: Path, bad: dict) -> None:
    path = tmp_path / "pairs.jsonl"
    rows = [json.dumps({"q": "Hi?", "a": "Hello."}), "", json.dumps(bad)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 3: no value in column 'a'"):
        load_table(path, task=TASK_CAUSAL_LM, text_column="q", target_column="a")


def test_csv_row_missing_a_value_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "pairs.csv"
    # The header is line 1; the quoted value spans lines 2-3; line 4 is blank; line 5 is short.
    path.write_text('q,a\n"two\nlines",ok\n\nHi?\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 5: no value in column 'a'"):
        load_table(path, task=TASK_CAUSAL_LM, text_column="q", target_column="a")


def test_task_needs_its_column_and_json_must_parse(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", [{"q": "x", "a": "y"}])
    with pytest.raises(ValueError, match="target_column"):
        load_table(path, task=TASK_CAUSAL_LM, text_column="q")
    with pytest.raises(ValueError, match="label_column"):
        load_table(path, task=TASK_CLASSIFICATION, text_column="q")
    with pytest.raises(ValueError, match="task 'regression'"):
        load_table(path, task="regression", text_column="q")
    path.write_text('{"q": "x", "a": "y"}\n{"q": oops}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="line 2: not valid JSON"):
        load_table(path, task=TASK_CAUSAL_LM, text_column="q", target_column="a")


def test_bytes_that_are_not_utf8_name_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"text": "ok", "label": "a"}\n{"text": "caf\xe9", "label": "a"}\n')
    with pytest.raises(ValueError, match=r"latin1\.jsonl, line 2: not UTF-8 text \(byte 0xe9"):
        load_table(path, task=TASK_CLASSIFICATION, text_column="text", label_column="label")


def test_an_oversized_line_or_value_is_refused_before_it_is_read_whole(tmp_path: Path) -> None:
    long = "w" * (MAX_LINE_BYTES + 10)
    path = _jsonl(tmp_path / "long.jsonl", [{"q": "x", "a": "y"}, {"q": long, "a": "y"}])
    with pytest.raises(ValueError, match=r"long\.jsonl, line 2: longer than 1 MiB"):
        load_table(path, task=TASK_CAUSAL_LM, text_column="q", target_column="a")
    # In a CSV a quoted value may span lines, each of them short: csv's own bound names it.
    spread = "\n".join(["v" * 1000] * 200)
    csv_path = tmp_path / "spread.csv"
    csv_path.write_text(f'q,a\nx,y\n"{spread}",y\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"spread\.csv, line 3: field larger than field limit"):
        load_table(csv_path, task=TASK_CAUSAL_LM, text_column="q", target_column="a")


def test_a_single_class_or_a_huge_integer_label_is_refused(tmp_path: Path) -> None:
    one = _jsonl(tmp_path / "one.jsonl", [{"t": f"x{i}", "y": "animal"} for i in range(5)])
    with pytest.raises(ValueError, match=r"column 'y' holds a single class \('animal'\)"):
        load_table(one, task=TASK_CLASSIFICATION, text_column="t", label_column="y")
    rows = [{"t": f"x{i}", "y": i % 3} for i in range(5)] + [{"t": "z", "y": 1_000_000}]
    huge = _jsonl(tmp_path / "huge.jsonl", rows)
    with pytest.raises(ValueError, match="integer labels up to 1000000 but only 4"):
        load_table(huge, task=TASK_CLASSIFICATION, text_column="t", label_column="y")
