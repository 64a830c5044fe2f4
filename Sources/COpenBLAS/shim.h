#ifndef MOEMESH_COPENBLAS_SHIM_H
#define MOEMESH_COPENBLAS_SHIM_H
// OpenBLAS's CBLAS interface, including openblas_set_num_threads and openblas_get_corename.
#include <cblas.h>
#endif
