#!/usr/bin/env bash
# The device check of issue 13, as one prepared call on a GPU machine (no install there: jax,
# flax, optax, pytest, xdist and PyTorch are present; the project runs from PYTHONPATH):
#
#   bash benchmarks/device_check.sh            # writes into $OUT (the device tool's folder) or results/device
#
# 1. the whole test suite (every reproduction's quick checks included) at the default precision
#    policy; 2. benchmarks/backend_speed.py at the GPU size (10 x 4096, batch 16), with PyTorch on
#    the same device; 3. the main job. Each step's output is kept even if an earlier one fails.
set -u
export PYTHONPATH=. XLA_PYTHON_CLIENT_PREALLOCATE=false
out=${OUT:-results/device}
mkdir -p "$out"
python3 -c "import jax; print(jax.__version__, jax.devices())" > "$out/device.txt" 2>&1
python3 -m pytest -n 8 -p no:benchmark -p no:cacheprovider -q -rf > "$out/pytest.txt" 2>&1
echo "pytest rc=$?" >> "$out/pytest.txt"
python3 benchmarks/backend_speed.py --out "$out/speed.json" > "$out/speed.txt" 2>&1
echo "backend_speed rc=$?" >> "$out/speed.txt"
python3 -m initjax.cli reproduce seed-demo --out "$out/seed-demo" --quiet > "$out/seed-demo.txt" 2>&1
echo "seed-demo rc=$?" >> "$out/seed-demo.txt"
tail -n 3 "$out/pytest.txt" "$out/speed.txt" "$out/seed-demo.txt"
