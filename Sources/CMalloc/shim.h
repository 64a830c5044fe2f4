#ifndef MOEMESH_CMALLOC_SHIM_H
#define MOEMESH_CMALLOC_SHIM_H
// glibc's allocator settings (mallopt, M_MMAP_THRESHOLD, M_TRIM_THRESHOLD): <malloc.h> is not part of Swift's Glibc
// module.
#include <malloc.h>
#endif
