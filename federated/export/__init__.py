"""What a run trained, shipped: the merged model in transformers' format, and GGUF files for
llama.cpp-based runtimes (``fedtune export``)."""
