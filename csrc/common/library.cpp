// The fastdstn operator library and the Python module fastdstn._C.
//
// Each op family defines its schemas (TORCH_LIBRARY_FRAGMENT) and registers its kernels in its own folder:
// dense/, lstm_cell/, dropout/, attention/, penalty/ (<family>_ops.cpp: schemas and the CPU/CUDA kernels;
// <family>_autograd.cpp: the Autograd kernel). The fake (meta) kernels are registered from Python, in fastdstn/ops/<family>/cpp.py; the
// Triton ops join the namespace from Python as fastdstn::<op>_triton. This file claims the namespace, so that
// no other library defines ops in it.
#include <Python.h>
#include <torch/library.h>

#include "../dense/dense_ops.h"
#include "isa.h"

TORCH_LIBRARY(fastdstn, m) {}

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
