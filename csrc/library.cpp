// The fastdstn operator library: schemas (TORCH_LIBRARY) and the CPU kernels (TORCH_LIBRARY_IMPL).
// The CUDA kernels register the same op bodies in cuda/stn_kernels.cu, the autograd formulas (one
// device-agnostic Autograd kernel per op) live in autograd.cpp, and the fake (meta) kernels are
// registered from Python in fastdstn/ops/cpp.py.
//
// Auxiliary outputs saved for the backward: st = [s | t] = h·Vᵀ, u = x·W_rᵀ (linear) and
// z = [z_g | z_r], the stacked convolution (conv). A `bool[k] mask` is autograd's needs_input_grad;
// gradients not asked for come back as empty tensors, as do absent optional outputs (ḣ, ċ, ẏ).
#include <Python.h>
#include <torch/library.h>

#include "stn_ops.h"

TORCH_LIBRARY(fastdstn, m) {
  m.def("stn_linear(Tensor x, Tensor h, Tensor Wg, Tensor? bg, Tensor Wr, Tensor? br, Tensor V)"
        " -> (Tensor y, Tensor st, Tensor u)");
  m.def("stn_linear_backward(Tensor gy, Tensor x, Tensor h, Tensor Wg, Tensor Wr, Tensor? br, Tensor V,"
        " Tensor u, bool has_bg, bool[7] mask) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("stn_linear_dual(Tensor x, Tensor? xt, Tensor eps, Tensor Wg, Tensor? bg, Tensor Wr, Tensor? br, Tensor V)"
        " -> (Tensor y, Tensor yt, Tensor st, Tensor u)");
  m.def("stn_linear_dual_backward(Tensor? gy, Tensor? gyt, Tensor x, Tensor? xt, Tensor eps, Tensor Wg, Tensor Wr,"
        " Tensor? br, Tensor V, Tensor u, bool has_bg, bool[8] mask)"
        " -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("stn_conv2d(Tensor x, Tensor h, Tensor Wg, Tensor? bg, Tensor Wr, Tensor? br, Tensor V, int[2] stride,"
        " int[2] padding, int[2] dilation, int groups) -> (Tensor y, Tensor st, Tensor u)");
  m.def("stn_conv2d_backward(Tensor gy, Tensor x, Tensor h, Tensor Wg, Tensor Wr, Tensor? br, Tensor V,"
        " Tensor u, int[2] stride, int[2] padding, int[2] dilation, int groups, bool has_bg, bool[7] mask)"
        " -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("stn_conv2d_dual(Tensor x, Tensor? xt, Tensor eps, Tensor Wg, Tensor? bg, Tensor Wr, Tensor? br, Tensor V,"
        " int[2] stride, int[2] padding, int[2] dilation, int groups) -> (Tensor y, Tensor yt, Tensor st, Tensor u)");
  m.def("stn_conv2d_dual_backward(Tensor? gy, Tensor? gyt, Tensor x, Tensor? xt, Tensor eps, Tensor Wg, Tensor Wr,"
        " Tensor? br, Tensor V, Tensor u, int[2] stride, int[2] padding, int[2] dilation, int groups,"
        " bool has_bg, bool[8] mask) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("lstm_cell_dual(Tensor gates, Tensor? gates_t, Tensor c, Tensor? c_t)"
        " -> (Tensor h, Tensor ht, Tensor c_new, Tensor ct)");
  m.def("lstm_cell_dual_backward(Tensor? gh, Tensor? ght, Tensor? gc, Tensor? gct, Tensor gates, Tensor? gates_t,"
        " Tensor c, Tensor? c_t, bool[4] mask) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("dropout_dual(Tensor x, Tensor? xt, Tensor rate, int seed, int batch_dim, int[] shared_dims)"
        " -> (Tensor y, Tensor yt)");
  // The weight products of the linear ops on their own (CPU), for tests and benchmarks of the kernel.
  m.def("_dense_mm(Tensor a, Tensor b) -> Tensor");
  m.def("_linear_products(Tensor x, Tensor? xt, Tensor Wg, Tensor Wr) -> (Tensor y, Tensor u, Tensor yt)");
}

TORCH_LIBRARY_IMPL(fastdstn, CPU, m) {
  m.impl("stn_linear", &fastdstn::stn_linear);
  m.impl("stn_linear_backward", &fastdstn::stn_linear_backward);
  m.impl("stn_linear_dual", &fastdstn::stn_linear_dual);
  m.impl("stn_linear_dual_backward", &fastdstn::stn_linear_dual_backward);
  m.impl("stn_conv2d", &fastdstn::stn_conv2d);
  m.impl("stn_conv2d_backward", &fastdstn::stn_conv2d_backward);
  m.impl("stn_conv2d_dual", &fastdstn::stn_conv2d_dual);
  m.impl("stn_conv2d_dual_backward", &fastdstn::stn_conv2d_dual_backward);
  m.impl("lstm_cell_dual", &fastdstn::lstm_cell_dual);
  m.impl("lstm_cell_dual_backward", &fastdstn::lstm_cell_dual_backward);
  m.impl("dropout_dual", &fastdstn::dropout_dual);
  m.impl("_dense_mm", [](const at::Tensor& a, const at::Tensor& b) { return fastdstn::dense_mm(a, b); });
  m.impl("_linear_products", [](const at::Tensor& x, const std::optional<at::Tensor>& xt, const at::Tensor& Wg,
                                 const at::Tensor& Wr) {
    auto [y, u, yt] = fastdstn::linear_products(x, xt, Wg, Wr);
    return std::make_tuple(y, u, yt.defined() ? yt : x.new_empty({0}));  // no ẋ: an empty ẋ·W_gᵀ
  });
}

// A module-init symbol so that `import fastdstn._C` loads the library (and runs the registrations), and
// fastdstn._C.cpu_isa() and small_gemm(), for `fastdstn info` and the benchmark records.
extern "C" {
static PyObject* cpu_isa(PyObject*, PyObject*) { return PyUnicode_FromString(fastdstn::cpu_isa_name()); }
static PyObject* small_gemm(PyObject*, PyObject*) { return PyBool_FromLong(fastdstn::small_gemm_enabled()); }
static PyMethodDef fastdstn_c_methods[] = {
    {"cpu_isa", cpu_isa, METH_NOARGS, "The instruction set of the CPU loops in use: avx512, avx2 or baseline."},
    {"small_gemm", small_gemm, METH_NOARGS, "Whether the linear ops' small-batch AVX-512 GEMM kernel runs."},
    {nullptr, nullptr, 0, nullptr}};
static struct PyModuleDef fastdstn_c_module = {PyModuleDef_HEAD_INIT, "_C", "fastdstn compiled ops", -1,
                                               fastdstn_c_methods};
PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&fastdstn_c_module); }
}
