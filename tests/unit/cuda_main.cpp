// The main() of the GPU suites: exits 77, which ctest reports as skipped, where no GPU is visible.
#define DOCTEST_CONFIG_IMPLEMENT
#include <cstdio>

#include "engine/memory.h"
#include "tests/support/empty_run_guard.h"

int main(int argc, char** argv) {
  if (!psgd::cuda_available()) {
    std::puts("SKIP: no CUDA device visible (or psgd built without CUDA)");
    return 77;
  }
  doctest::Context context(argc, argv);
  return context.run();
}
