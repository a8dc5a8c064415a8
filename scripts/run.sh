#!/usr/bin/env bash
# The main job, from a fresh Debian machine: installs the dependencies, builds, then runs what
# the engine offers today. Outputs go to out/.
#   0. Fashion-MNIST imported into the CIFAR layout (datasets/fashion-mnist), with a grid of
#      samples, raw and augmented (out/fashion-mnist.png).
#   1. The authors' ResNet-32 checkpoint (../shared/checkpoints/ResNet150.pth, or the file named
#      by PSGD_CHECKPOINT) converted to safetensors and evaluated by our engine beside PyTorch
#      on real images (Fashion-MNIST from Debian's dataset-fashion-mnist).
#   2. A ResNet-32 training step at batch 128 timed on our CPU backend and on PyTorch.
# Training itself (psgd-train) arrives with the binaries; see the README's status section.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
build=${PSGD_BUILD_DIR:-build}
mkdir -p out

# The default dataset: Fashion-MNIST from Debian's dataset-fashion-mnist, in the CIFAR layout.
fashion=datasets/fashion-mnist
if [[ ! -f $fashion/dataset.json ]]; then
  "$build/tools/psgd-data" import-idx --from /usr/share/datasets/fashion-mnist --out "$fashion" \
    --name fashion-mnist \
    --class-names "T-shirt/top,Trouser,Pullover,Dress,Coat,Sandal,Shirt,Sneaker,Bag,Ankle boot"
fi
"$build/tools/psgd-data" inspect "$fashion" --grid out/fashion-mnist.png

checkpoint=${PSGD_CHECKPOINT:-../shared/checkpoints/ResNet150.pth}
if [[ -f $checkpoint ]]; then
  echo "== The authors' checkpoint through psgd: $checkpoint"
  /usr/bin/python3 tools/convert_pth.py "$checkpoint" out/resnet32_sgd150.safetensors \
    --arch resnet32
  /usr/bin/python3 tests/python/parity_checkpoint.py --dump "$build/tests/helpers/psgd-parity-dump" \
    --checkpoint "$checkpoint"
else
  echo "== No checkpoint at $checkpoint (set PSGD_CHECKPOINT): skipping the checkpoint check"
fi

echo "== ResNet-32 training step, batch 128: psgd CPU beside PyTorch CPU"
/usr/bin/python3 tools/bench/cpu_step.py --bench "$build/tools/psgd-bench-step" --repeats 5 \
  --json out/cpu_step.json 2>/dev/null
echo "== Outputs: out/fashion-mnist.png (samples), out/resnet32_sgd150.safetensors (converted"
echo "   weights), out/cpu_step.json (step timing); the dataset is in $fashion"
