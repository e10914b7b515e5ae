"""The in-process llama.cpp engine: GGUF models served by worker threads.

engine (the Backend: loads the model on first use), loaded (the loaded model: worker threads,
dispatch, the event relay), worker (one thread per llama_cpp.Llama), template (chat templates),
sampling (sampler settings, logit bias, top-a, grammars), text_stream (UTF-8 and stop strings),
model_file (locating the GGUF and reading its header).
"""

from modelport.backends.llamacpp.engine import LlamaCppEngine

__all__ = ["LlamaCppEngine"]
