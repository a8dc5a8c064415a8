// What names a dataset's images and labels apart from any other's, so that a resumed run can tell
// the images it trained on (moved elsewhere, say) from other images given in their place.
#pragma once

#include <string>
#include <vector>

#include "data/dataset.h"

namespace psgd::data {

// "<n> + <m> images, <classes> classes, content <16 hex digits>" over the splits in order (one
// split: "<n> images, ..."): the image counts, the classes, and a 64-bit hash of every image byte
// and label and of the splits' normalisation, whatever folder the files lie in.
std::string fingerprint(const std::vector<const Dataset*>& splits);

}  // namespace psgd::data
