// ParamStore <-> safetensors: state_dict names, float32 values, int64 batch counters, so that
// PyTorch's load_state_dict(strict=True) accepts what we write and we accept what it saves.
#pragma once

#include <map>
#include <string>

#include "engine/params.h"
#include "engine/safetensors.h"

namespace psgd {

// A NaN or an infinity in a weight, a statistic or an optimizer's state makes every later result
// meaningless: checkpoints never hold one. check_finite throws unless all n values are finite
// float32 ("<where>tensor '<name>' holds nan (...)"); non_finite_tensor describes the first of the
// store's tensors that is not, or is "".
void check_finite(const std::string& where, const std::string& name, const float* values,
                  int64_t n);
std::string non_finite_tensor(const ParamStore& params);

// Adds every entry of the store (values only, never gradients) to a writer; throws on a
// non-finite value.
void add_params(SafeTensorsWriter& writer, const ParamStore& params);
void save_params(const ParamStore& params, const std::string& path,
                 const std::map<std::string, std::string>& metadata = {});

// Strict: every entry must be present with its shape, and the file may hold nothing else
// except tensors whose names start with `ignored_prefix` (optimizer state, for example).
// Float tensors may be F32 or F64; counters I64 or I32.
void load_params(ParamStore& params, const SafeTensorsFile& file,
                 const std::string& ignored_prefix = "");
void load_params(ParamStore& params, const std::string& path);

}  // namespace psgd
