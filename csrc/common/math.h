// What the per-family formula headers (<family>/<family>_math.h) share: FD_HD, which makes a formula callable
// from the CPU loops (inline) and from the CUDA kernels (__host__ __device__). The formulas are templates
// over the value type T, so the CPU loops instantiate them with whole vectors or scalars and the CUDA
// kernels with float/double: the CPU tests exercise the very code the GPU runs.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define FD_HD __host__ __device__ __forceinline__
#else
#define FD_HD inline
#endif
