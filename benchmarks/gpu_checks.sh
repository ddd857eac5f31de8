#!/usr/bin/env bash
# The checks that need a CUDA device, in one go: the GPU tests (CUDA against the CPU in float32,
# float16 and bfloat16; pinned host copies), recorded sampling of an SD-1.5-sized pipeline against
# a bare pipe(...), and the explorer's sampling path on CUDA against plain sample(). Each log is
# written to OUTDIR.
#
#     bash benchmarks/gpu_checks.sh [OUTDIR]      # from the repository root, on a machine with CUDA
#
# Needs the library's requirements only (no JupyterLab, papermill or Dask); the explorer check also
# needs bokeh, jupyter_bokeh and ipywidgets.
set -uo pipefail
out=${1:-gpu-checks}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=0
check() {  # check NAME SECONDS COMMAND...: run it with a time limit, log it, remember a failure
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*"
    timeout "$limit" "$@" 2>&1 | tee "$out/$name.log" || { echo "== $name failed (exit ${PIPESTATUS[0]})"; status=1; }
}
python3 -c "import torch; print('torch', torch.__version__, '·', torch.cuda.get_device_name(), '·', torch.version.cuda)" \
    | tee "$out/machine.log"
check gpu_tests 180 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_diffusers.py
check pipeline_overhead 180 python3 benchmarks/pipeline_overhead.py --device cuda --fp16 --sd15 --rounds 7
check explorer_sampling_shapes 120 python3 benchmarks/explorer_sampling.py --model shapes --device cuda --steps 200
check explorer_sampling_sd15 180 python3 benchmarks/explorer_sampling.py --model sd15 --fp16 --device cuda --steps 50
exit $status
