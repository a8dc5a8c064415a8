// The part of cuDNN psgd calls to convolve, for the emulated GPU: algorithm searches, workspace
// sizes, and 2-D convolutions forward, backward-data and backward-filter, written from cuDNN's
// documented contract (out = alpha conv + beta out, out not read when beta is 0). Each runs per
// image as a matrix product with the image's im2col matrix (OpenBLAS).
//
// Each direction has two algorithms with cuDNN's numbers, so that psgd's choice is exercised:
// a fast one that needs a workspace, which it fills with a pattern before computing (a workspace
// overlapping live data shows up as wrong results), and that backward is non-deterministic (it
// sums in another order on every call, as atomics would); and a careful one, deterministic,
// without workspace. Searches list each with tensor-core and default math, after a fastest
// fp16-converting result that must never be chosen (it computes NaN). Float data is rounded to
// TF32 unless the math type is CUDNN_FMA_MATH (CUDNN_DEFAULT_MATH allows TF32 from Ampere on);
// bf16 data is widened exactly. Find runs the algorithms on its buffers, as cuDNN does: their
// outputs become NaN.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "engine/bfloat16.h"
#include "tests/cuda_emulator/cudnn_structs.h"
#include "tests/cuda_emulator/device_memory.h"
#include "tests/cuda_emulator/stream.h"
#include "tests/cuda_emulator/tf32.h"

namespace {

using psgd::emu::is_device_range;

enum class Direction { Forward, BackwardData, BackwardFilter };

// ---- Algorithms ---------------------------------------------------------------------------------

// The fast algorithm's number in each direction (cuDNN's IMPLICIT_PRECOMP_GEMM, BWD_DATA_ALGO_0,
// BWD_FILTER_ALGO_0); the careful one is the other of 0 and 1.
int fast_algorithm(Direction d) {
  return d == Direction::Forward ? 1 : 0;
}
bool deterministic(Direction d, int algo) {
  return d == Direction::Forward || algo != fast_algorithm(d);
}

// A call's shapes, in forward terms: x (or dx), w (or dw), y (or dy).
struct Geometry {
  int n, c, h, w, k, r, s, oh, ow;
  int pad[2], stride[2], dilation[2];
  int64_t x_elements() const { return int64_t{n} * c * h * w; }
  int64_t w_elements() const { return int64_t{k} * c * r * s; }
  int64_t y_elements() const { return int64_t{n} * k * oh * ow; }
  int64_t output_elements(Direction d) const {
    return d == Direction::Forward        ? y_elements()
           : d == Direction::BackwardData ? x_elements()
                                          : w_elements();
  }
};

size_t workspace_bytes(Direction d, int algo, const Geometry& g, cudnnMathType_t math) {
  if (algo != fast_algorithm(d)) return 0;
  const size_t base = static_cast<size_t>(g.c) * g.r * g.s * sizeof(float) * 64;
  return math == CUDNN_FMA_MATH ? base : base + 4096;  // tensor-core variants want more
}

struct Descriptors {
  const cudnnTensorStruct* x;
  const cudnnFilterStruct* w;
  const cudnnConvolutionStruct* conv;
  const cudnnTensorStruct* y;
  bool bf16() const { return x->type == CUDNN_DATA_BFLOAT16; }
};

// The descriptors of one call, checked against each other.
bool geometry_of(const Descriptors& d, Geometry& g) {
  const auto *x = d.x, *y = d.y;
  const auto* w = d.w;
  const auto* conv = d.conv;
  if (!x || !w || !conv || !y || !x->set || !w->set || !conv->set || !y->set) return false;
  if (x->type != w->type || x->type != y->type) return false;
  g = {x->dims[0],
       x->dims[1],
       x->dims[2],
       x->dims[3],
       w->dims[0],
       w->dims[2],
       w->dims[3],
       0,
       0,
       {conv->pad[0], conv->pad[1]},
       {conv->stride[0], conv->stride[1]},
       {conv->dilation[0], conv->dilation[1]}};
  if (w->dims[1] != g.c) return false;
  g.oh = (g.h + 2 * g.pad[0] - g.dilation[0] * (g.r - 1) - 1) / g.stride[0] + 1;
  g.ow = (g.w + 2 * g.pad[1] - g.dilation[1] * (g.s - 1) - 1) / g.stride[1] + 1;
  return g.oh > 0 && g.ow > 0 && y->dims[0] == g.n && y->dims[1] == g.k && y->dims[2] == g.oh &&
         y->dims[3] == g.ow;
}

// ---- The arithmetic -----------------------------------------------------------------------------

// A device operand widened to float32 (TF32-rounded where tensor cores would read it).
std::vector<float> widen(const void* p, int64_t n, bool bf16, bool tf32) {
  std::vector<float> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    out[i] = bf16   ? psgd::to_float(static_cast<const psgd::bf16*>(p)[i])
             : tf32 ? psgd::emu::to_tf32(static_cast<const float*>(p)[i])
                    : static_cast<const float*>(p)[i];
  return out;
}

// Calls visit(column row, output pixel, input offset or -1 in the padding) over one image's
// im2col matrix ((c r s) x (oh ow)).
template <class Visit>
void for_each_column_entry(const Geometry& g, Visit visit) {
  int64_t row = 0;
  for (int c = 0; c < g.c; ++c)
    for (int r = 0; r < g.r; ++r)
      for (int s = 0; s < g.s; ++s, ++row)
        for (int oy = 0; oy < g.oh; ++oy) {
          const int iy = oy * g.stride[0] - g.pad[0] + r * g.dilation[0];
          for (int ox = 0; ox < g.ow; ++ox) {
            const int ix = ox * g.stride[1] - g.pad[1] + s * g.dilation[1];
            const bool inside = iy >= 0 && iy < g.h && ix >= 0 && ix < g.w;
            visit(row, int64_t{oy} * g.ow + ox, inside ? (int64_t{c} * g.h + iy) * g.w + ix : -1);
          }
        }
}

void im2col(const Geometry& g, const float* image, std::vector<float>& cols) {
  const int64_t pixels = int64_t{g.oh} * g.ow;
  for_each_column_entry(g, [&](int64_t row, int64_t p, int64_t in) {
    cols[row * pixels + p] = in < 0 ? 0.0f : image[in];
  });
}

void col2im_add(const Geometry& g, const std::vector<float>& cols, float* image) {
  const int64_t pixels = int64_t{g.oh} * g.ow;
  for_each_column_entry(g, [&](int64_t row, int64_t p, int64_t in) {
    if (in >= 0) image[in] += cols[row * pixels + p];
  });
}

// out = alpha * result + beta * out, rounded to out's type (out not read when beta is 0).
void write(void* out, bool bf16, const std::vector<float>& result, float alpha, float beta) {
  for (size_t i = 0; i < result.size(); ++i) {
    float v = alpha * result[i];
    if (bf16) {
      auto* o = static_cast<psgd::bf16*>(out) + i;
      if (beta != 0.0f) v += beta * psgd::to_float(*o);
      *o = psgd::to_bf16(v);
    } else {
      float* o = static_cast<float*>(out) + i;
      if (beta != 0.0f) v += beta * *o;
      *o = v;
    }
  }
}

// How the operands are read: the math type's rounding, or NaN for the fp16-converting math type,
// which psgd must never choose.
enum class Arithmetic { Exact, Tf32, Refused };

struct Call {
  Direction direction;
  Geometry g;
  bool bf16;
  Arithmetic arithmetic;
  bool deterministic;
  const void* in_a;  // forward: x, w; backward-data: w, dy; backward-filter: x, dy
  const void* in_b;
  void* out;
  void* workspace;
  size_t workspace_size;
  float alpha, beta;
};

// Where a non-deterministic algorithm starts its sums: a different place on every run.
int next_start(int n) {
  thread_local std::mt19937 draw{std::random_device{}()};
  return static_cast<int>(draw() % static_cast<unsigned>(n));
}

// Per image, as a matrix product with the image's im2col matrix. A non-deterministic algorithm
// sums in another order on every call: backward-data the output channels in four rotated parts,
// backward-filter the images from a rotated start.
void run(const Call& c) {
  if (c.workspace_size) std::memset(c.workspace, 0xa5, c.workspace_size);
  const Geometry& g = c.g;
  const int crs = g.c * g.r * g.s, pixels = g.oh * g.ow;
  const int64_t x_image = int64_t{g.c} * g.h * g.w, y_image = int64_t{g.k} * pixels;
  std::vector<float> cols(static_cast<size_t>(crs) * pixels);
  std::vector<float> result(static_cast<size_t>(g.output_elements(c.direction)), 0.0f);
  if (c.arithmetic == Arithmetic::Refused) {
    std::fill(result.begin(), result.end(), NAN);
    write(c.out, c.bf16, result, c.alpha, 0.0f);
    return;
  }
  const bool tf32 = c.arithmetic == Arithmetic::Tf32;
  switch (c.direction) {
    case Direction::Forward: {  // y (k x pixels) = w (k x crs) cols
      const auto x = widen(c.in_a, g.x_elements(), c.bf16, tf32);
      const auto w = widen(c.in_b, g.w_elements(), c.bf16, tf32);
      for (int b = 0; b < g.n; ++b) {
        im2col(g, x.data() + b * x_image, cols);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g.k, pixels, crs, 1.0f, w.data(),
                    crs, cols.data(), pixels, 0.0f, result.data() + b * y_image, pixels);
      }
      break;
    }
    case Direction::BackwardData: {  // cols = w^T (crs x k) dy, scattered back
      const auto w = widen(c.in_a, g.w_elements(), c.bf16, tf32);
      const auto dy = widen(c.in_b, g.y_elements(), c.bf16, tf32);
      const int parts = std::min(4, g.k), first = c.deterministic ? 0 : next_start(parts);
      for (int b = 0; b < g.n; ++b) {
        for (int i = 0; i < parts; ++i) {
          const int part = (first + i) % parts;
          const int k0 = g.k * part / parts, k1 = g.k * (part + 1) / parts;
          cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, crs, pixels, k1 - k0, 1.0f,
                      w.data() + int64_t{k0} * crs, crs, dy.data() + b * y_image + k0 * pixels,
                      pixels, i == 0 ? 0.0f : 1.0f, cols.data(), pixels);
        }
        col2im_add(g, cols, result.data() + b * x_image);
      }
      break;
    }
    case Direction::BackwardFilter: {  // dw (k x crs) = sum over images of dy cols^T
      const auto x = widen(c.in_a, g.x_elements(), c.bf16, tf32);
      const auto dy = widen(c.in_b, g.y_elements(), c.bf16, tf32);
      const int first = c.deterministic ? 0 : next_start(g.n);
      for (int i = 0; i < g.n; ++i) {
        const int b = (first + i) % g.n;
        im2col(g, x.data() + b * x_image, cols);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g.k, crs, pixels, 1.0f,
                    dy.data() + b * y_image, pixels, cols.data(), pixels, 1.0f, result.data(), crs);
      }
      break;
    }
  }
  write(c.out, c.bf16, result, c.alpha, c.beta);
}

// ---- The API's kinds of call, per direction -----------------------------------------------------

// As cuDNN lists them, each algorithm once per math type, fastest first: the fp16-converting decoy,
// then the fast and the careful algorithm, each on tensor cores and then with the default math.
constexpr int kResults = 5;

bool operands_in_device_memory(Direction d, const Geometry& g, bool bf16, const void* in_a,
                               const void* in_b, const void* out) {
  const size_t element = bf16 ? 2 : 4;
  const int64_t sizes[3][3] = {{g.x_elements(), g.w_elements(), g.y_elements()},
                               {g.w_elements(), g.y_elements(), g.x_elements()},
                               {g.x_elements(), g.y_elements(), g.w_elements()}};
  const int64_t* size = sizes[static_cast<int>(d)];
  return is_device_range(in_a, size[0] * element) && is_device_range(in_b, size[1] * element) &&
         is_device_range(out, size[2] * element);
}

// The results of a search; Find (a workspace of `available` bytes) marks those needing more as
// failed.
template <class Perf, class Algo>
cudnnStatus_t search(Direction d, const Descriptors& s, int requested, int* returned, Perf* results,
                     size_t available = SIZE_MAX) {
  Geometry g;
  if (!geometry_of(s, g) || requested <= 0) return CUDNN_STATUS_BAD_PARAM;
  const auto result = [&](int algo, float time, cudnnMathType_t math) {
    const size_t bytes = workspace_bytes(d, algo, g, math);
    return Perf{
        Algo(algo), bytes <= available ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_NOT_SUPPORTED, time,
        bytes,      deterministic(d, algo) ? CUDNN_DETERMINISTIC : CUDNN_NON_DETERMINISTIC, math,
        {}};
  };
  const int fast = fast_algorithm(d);
  const Perf all[kResults] = {
      result(fast, 0.5f, CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION),
      result(fast, 0.8f, CUDNN_TENSOR_OP_MATH), result(fast, 1.0f, CUDNN_DEFAULT_MATH),
      result(1 - fast, 1.8f, CUDNN_TENSOR_OP_MATH), result(1 - fast, 2.0f, CUDNN_DEFAULT_MATH)};
  *returned = std::min(requested, kResults);
  std::copy(all, all + *returned, results);
  return CUDNN_STATUS_SUCCESS;
}

// Find: the search, after running the algorithms on the given buffers as cuDNN does (the output
// becomes NaN). It waits for them, so a capture cannot record it.
template <class Perf, class Algo>
cudnnStatus_t find(Direction d, const Descriptors& s, const void* in_a, const void* in_b, void* out,
                   int requested, int* returned, Perf* results, void* workspace, size_t bytes) {
  Geometry g;
  if (!geometry_of(s, g)) return CUDNN_STATUS_BAD_PARAM;
  if (psgd::emu::forbidden_in_capture()) return CUDNN_STATUS_BAD_PARAM;
  if (!operands_in_device_memory(d, g, s.bf16(), in_a, in_b, out) ||
      (bytes && !is_device_range(workspace, bytes)))
    return CUDNN_STATUS_BAD_PARAM;
  const cudnnStatus_t status = search<Perf, Algo>(d, s, requested, returned, results, bytes);
  if (status != CUDNN_STATUS_SUCCESS) return status;
  const size_t out_bytes = static_cast<size_t>(g.output_elements(d)) * (s.bf16() ? 2 : 4);
  psgd::emu::issue([=] { std::memset(out, 0xff, out_bytes); });
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t workspace_size(Direction d, const Descriptors& s, int algo, size_t* bytes) {
  Geometry g;
  if (!geometry_of(s, g)) return CUDNN_STATUS_BAD_PARAM;
  if (algo < 0 || algo > 1) return CUDNN_STATUS_NOT_SUPPORTED;
  *bytes = workspace_bytes(d, algo, g, s.conv->math);
  return CUDNN_STATUS_SUCCESS;
}

// Issues a convolution after checking what cuDNN would check. in_a and in_b: forward x and w,
// backward-data w and dy, backward-filter x and dy.
cudnnStatus_t convolve(Direction d, const Descriptors& s, int algo, const void* alpha,
                       const void* in_a, const void* in_b, const void* beta, void* out,
                       void* workspace, size_t bytes) {
  Geometry g;
  if (!geometry_of(s, g)) return CUDNN_STATUS_BAD_PARAM;
  if (algo < 0 || algo > 1) return CUDNN_STATUS_NOT_SUPPORTED;
  if (!operands_in_device_memory(d, g, s.bf16(), in_a, in_b, out)) return CUDNN_STATUS_BAD_PARAM;
  const size_t need = workspace_bytes(d, algo, g, s.conv->math);
  if (bytes < need || (need && !is_device_range(workspace, need))) return CUDNN_STATUS_BAD_PARAM;
  const cudnnMathType_t math = s.conv->math;
  const Arithmetic arithmetic = math == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION ? Arithmetic::Refused
                                : s.bf16() || math == CUDNN_FMA_MATH          ? Arithmetic::Exact
                                                                              : Arithmetic::Tf32;
  const Call c{d,
               g,
               s.bf16(),
               arithmetic,
               deterministic(d, algo),
               in_a,
               in_b,
               out,
               workspace,
               need,
               *static_cast<const float*>(alpha),
               *static_cast<const float*>(beta)};
  psgd::emu::issue([c] { run(c); });
  return CUDNN_STATUS_SUCCESS;
}

}  // namespace

// ---- Forward ------------------------------------------------------------------------------------

cudnnStatus_t cudnnGetConvolutionForwardAlgorithmMaxCount(cudnnHandle_t, int* count) {
  *count = kResults;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(cudnnHandle_t, const cudnnTensorDescriptor_t x,
                                                     const cudnnFilterDescriptor_t w,
                                                     const cudnnConvolutionDescriptor_t conv,
                                                     const cudnnTensorDescriptor_t y,
                                                     const int requested, int* returned,
                                                     cudnnConvolutionFwdAlgoPerf_t* results) {
  return search<cudnnConvolutionFwdAlgoPerf_t, cudnnConvolutionFwdAlgo_t>(
      Direction::Forward, {x, w, conv, y}, requested, returned, results);
}

cudnnStatus_t cudnnFindConvolutionForwardAlgorithmEx(
    cudnnHandle_t, const cudnnTensorDescriptor_t x, const void* xp, const cudnnFilterDescriptor_t w,
    const void* wp, const cudnnConvolutionDescriptor_t conv, const cudnnTensorDescriptor_t y,
    void* yp, const int requested, int* returned, cudnnConvolutionFwdAlgoPerf_t* results,
    void* workspace, size_t bytes) {
  return find<cudnnConvolutionFwdAlgoPerf_t, cudnnConvolutionFwdAlgo_t>(
      Direction::Forward, {x, w, conv, y}, xp, wp, yp, requested, returned, results, workspace,
      bytes);
}

cudnnStatus_t cudnnGetConvolutionForwardWorkspaceSize(
    cudnnHandle_t, const cudnnTensorDescriptor_t x, const cudnnFilterDescriptor_t w,
    const cudnnConvolutionDescriptor_t conv, const cudnnTensorDescriptor_t y,
    cudnnConvolutionFwdAlgo_t algo, size_t* bytes) {
  return workspace_size(Direction::Forward, {x, w, conv, y}, algo, bytes);
}

cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t, const void* alpha,
                                      const cudnnTensorDescriptor_t x, const void* xp,
                                      const cudnnFilterDescriptor_t w, const void* wp,
                                      const cudnnConvolutionDescriptor_t conv,
                                      cudnnConvolutionFwdAlgo_t algo, void* workspace, size_t bytes,
                                      const void* beta, const cudnnTensorDescriptor_t y, void* yp) {
  return convolve(Direction::Forward, {x, w, conv, y}, algo, alpha, xp, wp, beta, yp, workspace,
                  bytes);
}

// ---- Backward data ------------------------------------------------------------------------------

cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithmMaxCount(cudnnHandle_t, int* count) {
  *count = kResults;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(
    cudnnHandle_t, const cudnnFilterDescriptor_t w, const cudnnTensorDescriptor_t dy,
    const cudnnConvolutionDescriptor_t conv, const cudnnTensorDescriptor_t dx, const int requested,
    int* returned, cudnnConvolutionBwdDataAlgoPerf_t* results) {
  return search<cudnnConvolutionBwdDataAlgoPerf_t, cudnnConvolutionBwdDataAlgo_t>(
      Direction::BackwardData, {dx, w, conv, dy}, requested, returned, results);
}

cudnnStatus_t cudnnFindConvolutionBackwardDataAlgorithmEx(
    cudnnHandle_t, const cudnnFilterDescriptor_t w, const void* wp,
    const cudnnTensorDescriptor_t dy, const void* dyp, const cudnnConvolutionDescriptor_t conv,
    const cudnnTensorDescriptor_t dx, void* dxp, const int requested, int* returned,
    cudnnConvolutionBwdDataAlgoPerf_t* results, void* workspace, size_t bytes) {
  return find<cudnnConvolutionBwdDataAlgoPerf_t, cudnnConvolutionBwdDataAlgo_t>(
      Direction::BackwardData, {dx, w, conv, dy}, wp, dyp, dxp, requested, returned, results,
      workspace, bytes);
}

cudnnStatus_t cudnnGetConvolutionBackwardDataWorkspaceSize(
    cudnnHandle_t, const cudnnFilterDescriptor_t w, const cudnnTensorDescriptor_t dy,
    const cudnnConvolutionDescriptor_t conv, const cudnnTensorDescriptor_t dx,
    cudnnConvolutionBwdDataAlgo_t algo, size_t* bytes) {
  return workspace_size(Direction::BackwardData, {dx, w, conv, dy}, algo, bytes);
}

cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t, const void* alpha,
                                           const cudnnFilterDescriptor_t w, const void* wp,
                                           const cudnnTensorDescriptor_t dy, const void* dyp,
                                           const cudnnConvolutionDescriptor_t conv,
                                           cudnnConvolutionBwdDataAlgo_t algo, void* workspace,
                                           size_t bytes, const void* beta,
                                           const cudnnTensorDescriptor_t dx, void* dxp) {
  return convolve(Direction::BackwardData, {dx, w, conv, dy}, algo, alpha, wp, dyp, beta, dxp,
                  workspace, bytes);
}

// ---- Backward filter ----------------------------------------------------------------------------

cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(cudnnHandle_t, int* count) {
  *count = kResults;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithm_v7(
    cudnnHandle_t, const cudnnTensorDescriptor_t x, const cudnnTensorDescriptor_t dy,
    const cudnnConvolutionDescriptor_t conv, const cudnnFilterDescriptor_t dw, const int requested,
    int* returned, cudnnConvolutionBwdFilterAlgoPerf_t* results) {
  return search<cudnnConvolutionBwdFilterAlgoPerf_t, cudnnConvolutionBwdFilterAlgo_t>(
      Direction::BackwardFilter, {x, dw, conv, dy}, requested, returned, results);
}

cudnnStatus_t cudnnFindConvolutionBackwardFilterAlgorithmEx(
    cudnnHandle_t, const cudnnTensorDescriptor_t x, const void* xp,
    const cudnnTensorDescriptor_t dy, const void* dyp, const cudnnConvolutionDescriptor_t conv,
    const cudnnFilterDescriptor_t dw, void* dwp, const int requested, int* returned,
    cudnnConvolutionBwdFilterAlgoPerf_t* results, void* workspace, size_t bytes) {
  return find<cudnnConvolutionBwdFilterAlgoPerf_t, cudnnConvolutionBwdFilterAlgo_t>(
      Direction::BackwardFilter, {x, dw, conv, dy}, xp, dyp, dwp, requested, returned, results,
      workspace, bytes);
}

cudnnStatus_t cudnnGetConvolutionBackwardFilterWorkspaceSize(
    cudnnHandle_t, const cudnnTensorDescriptor_t x, const cudnnTensorDescriptor_t dy,
    const cudnnConvolutionDescriptor_t conv, const cudnnFilterDescriptor_t dw,
    cudnnConvolutionBwdFilterAlgo_t algo, size_t* bytes) {
  return workspace_size(Direction::BackwardFilter, {x, dw, conv, dy}, algo, bytes);
}

cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t, const void* alpha,
                                             const cudnnTensorDescriptor_t x, const void* xp,
                                             const cudnnTensorDescriptor_t dy, const void* dyp,
                                             const cudnnConvolutionDescriptor_t conv,
                                             cudnnConvolutionBwdFilterAlgo_t algo, void* workspace,
                                             size_t bytes, const void* beta,
                                             const cudnnFilterDescriptor_t dw, void* dwp) {
  return convolve(Direction::BackwardFilter, {x, dw, conv, dy}, algo, alpha, xp, dyp, beta, dwp,
                  workspace, bytes);
}
