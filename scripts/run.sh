#!/usr/bin/env bash
# The main job, from a fresh Debian machine: installs the dependencies, builds, imports
# Fashion-MNIST (Debian's dataset-fashion-mnist) into the CIFAR layout, and runs the reference's
# workflow on it, sized for a few minutes on two CPU cores:
#   1. ResNet-32 trained with plain SGD (lambda_s 0) on a 10,000-image subset;
#   2. PSGD (W4, lambda_s 150, first/last layers quantized) from those weights;
#   3. both networks evaluated on the full test set in float (FP) and at 4 and 3 bits.
# Outputs go to out/: the runs (config, metrics, checkpoints), plots and a grid of samples.
# PSGD_QUICK=1 shrinks everything further (a smoke test).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
bin=${PSGD_BUILD_DIR:-build}/tools
mkdir -p out

fashion=datasets/fashion-mnist
if [[ ! -f $fashion/dataset.json ]]; then
  "$bin/psgd-data" import-idx --from /usr/share/datasets/fashion-mnist --out "$fashion" \
    --name fashion-mnist \
    --class-names "T-shirt/top,Trouser,Pullover,Dress,Coat,Sandal,Shirt,Sneaker,Bag,Ankle boot"
fi
"$bin/psgd-data" inspect "$fashion" --grid out/fashion-mnist.png | head -3

subset=10000 test_subset=2000 sgd_epochs=3 psgd_epochs=5
if [[ ${PSGD_QUICK:-0} == 1 ]]; then subset=512 test_subset=256 sgd_epochs=1 psgd_epochs=2; fi
common=(--arch resnet32 --data "$fashion" --train-subset "$subset" --test-subset "$test_subset")

start=$SECONDS
echo "== 1. plain SGD (lambda_s 0), epochs 1-$sgd_epochs"
rm -rf out/fashion-sgd out/fashion-psgd
"$bin/psgd-train" "${common[@]}" --epochs "$sgd_epochs" --lr 0.1 --decay-epochs "$sgd_epochs" \
  --lambda-s 0 --out out/fashion-sgd
echo "== 2. PSGD (W4, lambda_s 150, first/last quantized), epochs $((sgd_epochs + 1))-$psgd_epochs"
"$bin/psgd-train" "${common[@]}" --init out/fashion-sgd/last.safetensors --epochs "$psgd_epochs" \
  --lr 0.01 --decay-epochs 1000 --w-bits 4 --lambda-s 150 --first-last-quant --out out/fashion-psgd
for run in sgd psgd; do
  echo "== 3. $run network on the full test set: FP, W4 and W3"
  "$bin/psgd-eval" --model "out/fashion-$run/last.safetensors" --data "$fashion" --w-bits 4 \
    --first-last-quant --sweep 4 3
done
/usr/bin/python3 tools/visualize.py weights out/fashion-sgd/last.safetensors \
  out/fashion-psgd/last.safetensors --bits 4 --layers layer1.2.conv1.weight layer2.1.conv1.weight \
  layer3.3.conv2.weight --out out/plots
/usr/bin/python3 tools/visualize.py curves out/fashion-sgd out/fashion-psgd --out out/plots/curves.png
echo "== done in $((SECONDS - start)) s of training and evaluation. Outputs: out/fashion-sgd and"
echo "   out/fashion-psgd (config.json, metrics.jsonl, checkpoints), out/plots (weight histograms"
echo "   SGD beside PSGD with the 4-bit grid, training curves), out/fashion-mnist.png (samples)"
