#ifndef MOEMESH_COPENBLAS_SHIM_H
#define MOEMESH_COPENBLAS_SHIM_H
// OpenBLAS's CBLAS interface, including openblas_set_num_threads and openblas_get_corename.
#include <cblas.h>

// OpenBLAS builds with DYNAMIC_ARCH (Debian's) choose their kernel set when the library loads, from
// OPENBLAS_CORETYPE or the CPU. These two exported entry points (driver/others/dynamic.c) forget that choice and
// make it again, so that a process can choose before its first BLAS call without re-executing itself.
void gotoblas_dynamic_quit(void);
void gotoblas_dynamic_init(void);
#endif
