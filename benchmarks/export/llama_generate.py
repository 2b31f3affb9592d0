"""Greedy continuations of prompts by llama.cpp (llama-cpp-python), for each GGUF file.

Reads ``{"files": {type: path}, "prompts": [...], "new": N}`` as JSON on standard input and
prints ``{type: [{"prompt", "text"}]}``; imports nothing of fedtune, so that any
Python with ``llama_cpp`` runs it.
"""

import json
import sys

from llama_cpp import Llama


def main() -> None:
    request = json.load(sys.stdin)
    results = {"llama_cpp_version": __import__("llama_cpp").__version__}
    for gguf_type, path in request["files"].items():
        llm = Llama(model_path=path, n_ctx=512, n_threads=2, seed=0, verbose=False)
        rows = []
        for prompt in request["prompts"]:
            tokens = llm.tokenize(prompt.encode(), add_bos=False, special=True)
            out = llm.create_completion(tokens, max_tokens=request["new"], temperature=0.0, top_k=1)
            rows.append({"prompt": prompt, "text": out["choices"][0]["text"]})
        results[gguf_type] = rows
    print(json.dumps(results, ensure_ascii=False))


if __name__ == "__main__":
    main()
