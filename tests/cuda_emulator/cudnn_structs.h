// The emulated cuDNN's handle and descriptors (cudnn_descriptors.cpp sets them,
// cudnn_convolution.cpp reads them).
#pragma once

#include <cudnn.h>

struct cudnnContext {};
struct cudnnTensorStruct {
  cudnnDataType_t type = CUDNN_DATA_FLOAT;
  int dims[4] = {};  // n, c, h, w
  bool set = false;
};
struct cudnnFilterStruct {
  cudnnDataType_t type = CUDNN_DATA_FLOAT;
  int dims[4] = {};  // k, c, r, s
  bool set = false;
};
struct cudnnConvolutionStruct {
  int pad[2] = {}, stride[2] = {1, 1}, dilation[2] = {1, 1};
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
  bool set = false;
};
