"""Take a direction set to other tools: one module per format.

- `liref_lens.export.llamacpp`: llama.cpp control vectors (GGUF), read and written;
- `liref_lens.export.lm_eval`: the ``steer_path`` file of ``lm_eval --model steered``;
- `liref_lens.export.steering_vectors`: ``steering_vectors.SteeringVector`` objects;
- `liref_lens.export.repeng`: ``repeng.ControlVector`` objects;
- `liref_lens.export.folder`: a shareable folder (safetensors, config, model card) and the
  Hugging Face Hub.

Every exporter takes a `DirectionSet` (with ``layers`` and ``strength``: the exported op is
``Add(alpha=strength)`` at the set's own site) or `Add` ops, and refuses in one line what its
target cannot express. Where a site lands in the other tool (llama.cpp's ``direction.N``, a
Hugging Face module name) is written in that format's module and checked against this
toolkit's own hooks by a test. Importing this package imports none of the other tools; each
conversion imports its package when it runs.
"""

from .folder import from_pretrained, push_to_hub, save_pretrained
from .llamacpp import apply_control_vector, from_control_vector, to_control_vector
from .lm_eval import from_lm_eval, to_lm_eval
from .repeng import from_repeng, to_repeng
from .steering_vectors import from_steering_vector, to_steering_vector

__all__ = [
    "apply_control_vector",
    "from_control_vector",
    "from_lm_eval",
    "from_pretrained",
    "from_repeng",
    "from_steering_vector",
    "push_to_hub",
    "save_pretrained",
    "to_control_vector",
    "to_lm_eval",
    "to_repeng",
    "to_steering_vector",
]
