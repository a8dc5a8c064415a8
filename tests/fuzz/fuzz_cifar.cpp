// libFuzzer target: the CIFAR record reader, in both formats, must turn any bytes into records
// or a psgd::Error.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "data/dataset.h"
#include "engine/check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  psgd::data::Dataset d;
  const bool hundred = data[0] & 1;  // the first byte picks the format and the labels
  d.format = hundred ? psgd::data::DatasetFormat::Cifar100 : psgd::data::DatasetFormat::Cifar10;
  d.classes = hundred ? 100 : 10;
  try {
    psgd::data::append_records(d, std::vector<uint8_t>(data + 1, data + size), "fuzz",
                               hundred && (data[0] & 2));
  } catch (const psgd::Error&) {
  }
  return 0;
}
