"""A byte-level BPE tokenizer (GPT-2's kind: SmolLM2's, Llama 3's) as GGUF metadata, from which
llama.cpp and transformers' GGUF loader rebuild it: tokens in id order, each token's type,
merges, special token ids, whether BOS and EOS are added, and the chat template.

llama.cpp picks its pre-tokenizer (how text is split before the merges) by name; its converter
names it by hashing how the tokenizer encodes one test text, so the same is done here for the
tokenizers this project loads. An unknown one is written as ``default`` (GPT-2's splitting),
which llama.cpp accepts, and which the command reports.
"""

from __future__ import annotations

import json
from hashlib import sha256
from pathlib import Path
from typing import Any

from gguf import GGUFWriter, TokenType

# llama.cpp's test text and the names of the pre-tokenizers whose hashes it lists.
_CHECK_TEXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis "
    "concatenated) ✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 "
    "កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= нещо на Български "
    "''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not "
    "sure I'll make it, 'D you like some tea? We'Ve a'lL"
)
_PRE_TOKENIZERS = {
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",
}
DEFAULT_PRE = "default"


def pre_tokenizer_name(tokenizer: Any) -> str:
    """llama.cpp's name for how ``tokenizer`` splits text, or ``default`` when it is unknown."""
    digest = sha256(str(tokenizer.encode(_CHECK_TEXT)).encode()).hexdigest()
    return _PRE_TOKENIZERS.get(digest, DEFAULT_PRE)


def add_bpe_vocab(writer: GGUFWriter, tokenizer: Any, folder: Path, vocab_size: int) -> str:
    """Write ``tokenizer`` (saved in ``folder``) into ``writer``; its pre-tokenizer's name."""
    merges = _byte_level_merges(folder / "tokenizer.json")
    by_id = {index: token for token, index in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for index in range(vocab_size):
        token = by_id.get(index)
        if token is None:  # the model's embedding is larger than the vocabulary
            tokens.append(f"[PAD{index}]")
            types.append(TokenType.UNUSED)
        else:
            tokens.append(token)
            types.append(
                TokenType.NORMAL
                if index not in added
                else TokenType.CONTROL
                if added[index].special
                else TokenType.USER_DEFINED
            )
    pre = pre_tokenizer_name(tokenizer)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for add, token_id in (
        (writer.add_bos_token_id, tokenizer.bos_token_id),
        (writer.add_eos_token_id, tokenizer.eos_token_id),
        (writer.add_unk_token_id, tokenizer.unk_token_id),
        (writer.add_pad_token_id, tokenizer.pad_token_id),
    ):
        if token_id is not None:
            add(token_id)
    # What the tokenizer does, not what its config claims: encode a word and look.
    ids = tokenizer("a")["input_ids"]
    writer.add_add_bos_token(
        tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id
    )
    writer.add_add_eos_token(
        tokenizer.eos_token_id is not None and ids[-1] == tokenizer.eos_token_id
    )
    writer.add_add_space_prefix(False)
    if isinstance(tokenizer.chat_template, str):
        writer.add_chat_template(tokenizer.chat_template)
    return pre


def _byte_level_merges(path: Path) -> list[str]:
    """The merges of a byte-level BPE ``tokenizer.json``; a ``ValueError`` for any other kind."""
    if not path.is_file():
        raise ValueError("GGUF export needs a fast tokenizer (tokenizer.json); this model has none")
    spec = json.loads(path.read_text(encoding="utf-8"))
    model, pre = spec.get("model") or {}, json.dumps(spec.get("pre_tokenizer"))
    if model.get("type") != "BPE" or "ByteLevel" not in pre:
        raise ValueError(
            "GGUF export supports byte-level BPE tokenizers (GPT-2's kind); this one is "
            f"{model.get('type')!r}"
        )
    return [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
