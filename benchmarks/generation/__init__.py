"""The generation benchmark: tokens per second and time to first token of the local llama.cpp
engine through the real server, against bare llama-cpp-python on the same model, threads and
prompt (`python -m benchmarks.generation`)."""
