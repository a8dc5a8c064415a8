#!/usr/bin/env bash
# Stages the headers and libraries psgd builds against into .gpu-deps/ (ignored by git), for
# the GPU machine, whose image has CUDA, CMake and a compiler but none of our Debian packages
# and no network. Carry the folder with the run and configure with -DPSGD_DEPS_ROOT=.gpu-deps.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh >/dev/null
root=.gpu-deps
multiarch=$(gcc -print-multiarch)
rm -rf "$root"
mkdir -p "$root/include" "$root/lib" "$root/cmake"
cp -r /usr/include/doctest /usr/include/CLI /usr/include/nlohmann /usr/include/stb "$root/include/"
cp /usr/include/zlib.h /usr/include/zconf.h "$root/include/"
cp "/usr/include/$multiarch/openblas-openmp/"*.h "$root/include/"
cp /usr/lib/cmake/doctest/doctest.cmake /usr/lib/cmake/doctest/doctestAddTests.cmake "$root/cmake/"
for lib in "/usr/lib/$multiarch/openblas-openmp/libopenblas.so.0" "/usr/lib/$multiarch/libstb.so.0" \
           "/usr/lib/$multiarch/libz.so.1" /lib/"$multiarch"/libgfortran.so.5 \
           /lib/"$multiarch"/libquadmath.so.0; do
  cp -L "$lib" "$root/lib/"
done
ln -sf libopenblas.so.0 "$root/lib/libopenblas.so"
ln -sf libstb.so.0 "$root/lib/libstb.so"
ln -sf libz.so.1 "$root/lib/libz.so"
echo "stage-gpu-deps: $(du -sh "$root" | cut -f1) in $root"
