"""Engines other than TransformerLens that run this toolkit's ops (one file per engine).

- `liref_lens.backends.vllm`: vLLM, with per-request ops and reads (``pip install
  "liref-lens[vllm]"``). Importing this package imports no engine.
"""
