// Run-time loading of the CUDA driver, cuBLAS(Lt) and NVRTC: see include/ccuda.h.
#define _GNU_SOURCE
#include "ccuda.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// One function-pointer variable per symbol, `p_<name>`, filled by `ccuda_load`.
#define CCUDA_DRIVER(X)                                                                                                \
    X(cuInit, "cuInit") X(cuDriverGetVersion, "cuDriverGetVersion") X(cuGetErrorString, "cuGetErrorString")            \
    X(cuDeviceGetCount, "cuDeviceGetCount") X(cuDeviceGet, "cuDeviceGet") X(cuDeviceGetName, "cuDeviceGetName")        \
    X(cuDeviceGetAttribute, "cuDeviceGetAttribute") X(cuDeviceTotalMem, "cuDeviceTotalMem_v2")                         \
    X(cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain") X(cuCtxSetCurrent, "cuCtxSetCurrent")                      \
    X(cuMemGetInfo, "cuMemGetInfo_v2") X(cuMemAlloc, "cuMemAlloc_v2") X(cuMemFree, "cuMemFree_v2")                      \
    X(cuMemHostAlloc, "cuMemHostAlloc") X(cuMemFreeHost, "cuMemFreeHost") X(cuMemcpyHtoD, "cuMemcpyHtoD_v2")            \
    X(cuMemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2") X(cuMemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2")                          \
    X(cuStreamCreate, "cuStreamCreate") X(cuStreamDestroy, "cuStreamDestroy_v2")                                       \
    X(cuStreamSynchronize, "cuStreamSynchronize") X(cuEventCreate, "cuEventCreate")                                    \
    X(cuEventDestroy, "cuEventDestroy_v2") X(cuEventRecord, "cuEventRecord")                                           \
    X(cuEventSynchronize, "cuEventSynchronize") X(cuModuleLoadData, "cuModuleLoadData")                                \
    X(cuModuleGetFunction, "cuModuleGetFunction") X(cuLaunchKernel, "cuLaunchKernel")

#define CCUDA_LT(X)                                                                                                    \
    X(cublasLtCreate, "cublasLtCreate") X(cublasLtDestroy, "cublasLtDestroy")                                          \
    X(cublasLtGetVersion, "cublasLtGetVersion") X(cublasLtGetStatusString, "cublasLtGetStatusString")                  \
    X(cublasLtMatmulDescCreate, "cublasLtMatmulDescCreate") X(cublasLtMatmulDescDestroy, "cublasLtMatmulDescDestroy")  \
    X(cublasLtMatmulDescSetAttribute, "cublasLtMatmulDescSetAttribute")                                                \
    X(cublasLtMatrixLayoutCreate, "cublasLtMatrixLayoutCreate")                                                        \
    X(cublasLtMatrixLayoutDestroy, "cublasLtMatrixLayoutDestroy")                                                      \
    X(cublasLtMatmulPreferenceCreate, "cublasLtMatmulPreferenceCreate")                                                \
    X(cublasLtMatmulPreferenceDestroy, "cublasLtMatmulPreferenceDestroy")                                              \
    X(cublasLtMatmulPreferenceSetAttribute, "cublasLtMatmulPreferenceSetAttribute")                                    \
    X(cublasLtMatmulAlgoGetHeuristic, "cublasLtMatmulAlgoGetHeuristic") X(cublasLtMatmul, "cublasLtMatmul")

#define CCUDA_BLAS(X)                                                                                                  \
    X(cublasCreate, "cublasCreate_v2") X(cublasDestroy, "cublasDestroy_v2") X(cublasSetStream, "cublasSetStream_v2")

#define CCUDA_NVRTC(X)                                                                                                 \
    X(nvrtcVersion, "nvrtcVersion") X(nvrtcGetErrorString, "nvrtcGetErrorString")                                     \
    X(nvrtcCreateProgram, "nvrtcCreateProgram") X(nvrtcCompileProgram, "nvrtcCompileProgram")                          \
    X(nvrtcGetPTXSize, "nvrtcGetPTXSize") X(nvrtcGetPTX, "nvrtcGetPTX")                                                \
    X(nvrtcGetProgramLogSize, "nvrtcGetProgramLogSize") X(nvrtcGetProgramLog, "nvrtcGetProgramLog")                    \
    X(nvrtcDestroyProgram, "nvrtcDestroyProgram")

#define CCUDA_DECLARE(name, symbol) static void *p_##name;
CCUDA_DRIVER(CCUDA_DECLARE)
CCUDA_LT(CCUDA_DECLARE)
CCUDA_BLAS(CCUDA_DECLARE)
CCUDA_NVRTC(CCUDA_DECLARE)
static void *p_cublasGemmGroupedBatchedEx;

static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;
static int load_state;  // 0: not tried, 1: loaded, -1: failed
static char load_error[1024];
static char loaded_names[512];

/// dlopen of the first name that opens, in `directory` (when set) and then on the loader's path.
static char first_failure[512];

/// dlopen of the first name that opens, in `directory` (when set) and then on the loader's path; on failure,
/// `first_failure` holds the loader's message for the first name.
static void *open_first(const char *const *names, const char *directory, char *opened, size_t opened_size) {
    first_failure[0] = 0;
    for (int pass = directory ? 0 : 1; pass < 2; pass++) {
        for (const char *const *name = names; *name; name++) {
            char path[1024];
            if (pass == 0) snprintf(path, sizeof path, "%s/%s", directory, *name);
            else snprintf(path, sizeof path, "%s", *name);
            void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
            if (handle) {
                snprintf(opened, opened_size, "%s", *name);
                return handle;
            }
            if (!first_failure[0]) snprintf(first_failure, sizeof first_failure, "%s", dlerror());
        }
    }
    return NULL;
}

static int resolve(void *library, const char *library_name, const char *symbol, void **slot) {
    *slot = dlsym(library, symbol);
    if (*slot) return 0;
    snprintf(load_error, sizeof load_error, "%s has no symbol %s", library_name, symbol);
    return -1;
}

static int load_all(void) {
    const char *directory = getenv("MOEMESH_CUDA_LIB_DIR");
    static const char *const driver_names[] = {"libcuda.so.1", "libcuda.so", NULL};
    static const char *const lt_names[] = {"libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so", NULL};
    static const char *const blas_names[] = {"libcublas.so.13", "libcublas.so.12", "libcublas.so", NULL};
    static const char *const nvrtc_names[] = {"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so", NULL};
    char driver_name[128], lt_name[128], blas_name[128], nvrtc_name[128];
    void *driver = open_first(driver_names, directory, driver_name, sizeof driver_name);
    if (!driver) {
        snprintf(load_error, sizeof load_error, "no CUDA driver: libcuda.so.1 could not be opened (%s)", first_failure);
        return -1;
    }
    void *lt = open_first(lt_names, directory, lt_name, sizeof lt_name);
    if (!lt) {
        snprintf(load_error, sizeof load_error, "no cuBLASLt: libcublasLt.so.13 or .12 could not be opened (%s)",
                 first_failure);
        return -1;
    }
    void *blas = open_first(blas_names, directory, blas_name, sizeof blas_name);
    if (!blas) {
        snprintf(load_error, sizeof load_error, "no cuBLAS: libcublas.so.13 or .12 could not be opened (%s)",
                 first_failure);
        return -1;
    }
    void *nvrtc = open_first(nvrtc_names, directory, nvrtc_name, sizeof nvrtc_name);
    if (!nvrtc) {
        snprintf(load_error, sizeof load_error, "no NVRTC: libnvrtc.so.13 or .12 could not be opened (%s)", first_failure);
        return -1;
    }
#define CCUDA_RESOLVE_DRIVER(name, symbol) if (resolve(driver, driver_name, symbol, &p_##name)) return -1;
#define CCUDA_RESOLVE_LT(name, symbol) if (resolve(lt, lt_name, symbol, &p_##name)) return -1;
#define CCUDA_RESOLVE_BLAS(name, symbol) if (resolve(blas, blas_name, symbol, &p_##name)) return -1;
#define CCUDA_RESOLVE_NVRTC(name, symbol) if (resolve(nvrtc, nvrtc_name, symbol, &p_##name)) return -1;
    CCUDA_DRIVER(CCUDA_RESOLVE_DRIVER)
    CCUDA_LT(CCUDA_RESOLVE_LT)
    CCUDA_BLAS(CCUDA_RESOLVE_BLAS)
    CCUDA_NVRTC(CCUDA_RESOLVE_NVRTC)
    p_cublasGemmGroupedBatchedEx = dlsym(blas, "cublasGemmGroupedBatchedEx");
    snprintf(loaded_names, sizeof loaded_names, "%s, %s, %s, %s", driver_name, lt_name, blas_name, nvrtc_name);
    return 0;
}

int ccuda_load(char *error, size_t error_size) {
    pthread_mutex_lock(&load_lock);
    if (load_state == 0) load_state = load_all() == 0 ? 1 : -1;
    int state = load_state;
    pthread_mutex_unlock(&load_lock);
    if (state == 1) return 0;
    if (error && error_size) snprintf(error, error_size, "%s", load_error);
    return -1;
}

const char *ccuda_loaded_libraries(void) { return loaded_names; }
int ccuda_has_grouped_gemm(void) { return p_cublasGemmGroupedBatchedEx != NULL; }

// Calls through the loaded symbols. Before a successful `ccuda_load` these are null: callers check first.
#define CCUDA_CALL(type, name, parameters, arguments)                                                                  \
    type ccuda_##name parameters { return ((type(*) parameters)p_##name) arguments; }

CCUDA_CALL(CUresult, cuInit, (unsigned int flags), (flags))
CCUDA_CALL(CUresult, cuDriverGetVersion, (int *version), (version))
CCUDA_CALL(CUresult, cuGetErrorString, (CUresult error, const char **text), (error, text))
CCUDA_CALL(CUresult, cuDeviceGetCount, (int *count), (count))
CCUDA_CALL(CUresult, cuDeviceGet, (CUdevice *device, int ordinal), (device, ordinal))
CCUDA_CALL(CUresult, cuDeviceGetName, (char *name, int length, CUdevice device), (name, length, device))
CCUDA_CALL(CUresult, cuDeviceGetAttribute, (int *value, int attribute, CUdevice device), (value, attribute, device))
CCUDA_CALL(CUresult, cuDeviceTotalMem, (size_t *bytes, CUdevice device), (bytes, device))
CCUDA_CALL(CUresult, cuDevicePrimaryCtxRetain, (CUcontext *context, CUdevice device), (context, device))
CCUDA_CALL(CUresult, cuCtxSetCurrent, (CUcontext context), (context))
CCUDA_CALL(CUresult, cuMemGetInfo, (size_t *free, size_t *total), (free, total))
CCUDA_CALL(CUresult, cuMemAlloc, (CUdeviceptr *pointer, size_t bytes), (pointer, bytes))
CCUDA_CALL(CUresult, cuMemFree, (CUdeviceptr pointer), (pointer))
CCUDA_CALL(CUresult, cuMemHostAlloc, (void **pointer, size_t bytes, unsigned int flags), (pointer, bytes, flags))
CCUDA_CALL(CUresult, cuMemFreeHost, (void *pointer), (pointer))
CCUDA_CALL(CUresult, cuMemcpyHtoD, (CUdeviceptr destination, const void *source, size_t bytes),
           (destination, source, bytes))
CCUDA_CALL(CUresult, cuMemcpyHtoDAsync, (CUdeviceptr destination, const void *source, size_t bytes, CUstream stream),
           (destination, source, bytes, stream))
CCUDA_CALL(CUresult, cuMemcpyDtoHAsync, (void *destination, CUdeviceptr source, size_t bytes, CUstream stream),
           (destination, source, bytes, stream))
CCUDA_CALL(CUresult, cuStreamCreate, (CUstream *stream, unsigned int flags), (stream, flags))
CCUDA_CALL(CUresult, cuStreamDestroy, (CUstream stream), (stream))
CCUDA_CALL(CUresult, cuStreamSynchronize, (CUstream stream), (stream))
CCUDA_CALL(CUresult, cuEventCreate, (CUevent *event, unsigned int flags), (event, flags))
CCUDA_CALL(CUresult, cuEventDestroy, (CUevent event), (event))
CCUDA_CALL(CUresult, cuEventRecord, (CUevent event, CUstream stream), (event, stream))
CCUDA_CALL(CUresult, cuEventSynchronize, (CUevent event), (event))
CCUDA_CALL(CUresult, cuModuleLoadData, (CUmodule *module, const void *image), (module, image))
CCUDA_CALL(CUresult, cuModuleGetFunction, (CUfunction *function, CUmodule module, const char *name),
           (function, module, name))
CCUDA_CALL(CUresult, cuLaunchKernel,
           (CUfunction function, unsigned int gridX, unsigned int gridY, unsigned int gridZ, unsigned int blockX,
            unsigned int blockY, unsigned int blockZ, unsigned int sharedBytes, CUstream stream, void **parameters,
            void **extra),
           (function, gridX, gridY, gridZ, blockX, blockY, blockZ, sharedBytes, stream, parameters, extra))

// cuEventElapsedTime became cuEventElapsedTime_v2 in CUDA 12.8; older drivers have only the first.
CUresult ccuda_cuEventElapsedTime(float *milliseconds, CUevent start, CUevent end) {
    static void *elapsed;
    if (!elapsed) {
        void *driver = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
        if (driver) elapsed = dlsym(driver, "cuEventElapsedTime_v2");
        if (!elapsed && driver) elapsed = dlsym(driver, "cuEventElapsedTime");
        if (!elapsed) return 500;  // CUDA_ERROR_NOT_FOUND
    }
    return ((CUresult(*)(float *, CUevent, CUevent))elapsed)(milliseconds, start, end);
}

CCUDA_CALL(cublasStatus_t, cublasLtCreate, (cublasLtHandle_t *handle), (handle))
CCUDA_CALL(cublasStatus_t, cublasLtDestroy, (cublasLtHandle_t handle), (handle))
CCUDA_CALL(size_t, cublasLtGetVersion, (void), ())
CCUDA_CALL(const char *, cublasLtGetStatusString, (cublasStatus_t status), (status))
CCUDA_CALL(cublasStatus_t, cublasLtMatmulDescCreate, (cublasLtMatmulDesc_t *desc, int computeType, int scaleType),
           (desc, computeType, scaleType))
CCUDA_CALL(cublasStatus_t, cublasLtMatmulDescDestroy, (cublasLtMatmulDesc_t desc), (desc))
CCUDA_CALL(cublasStatus_t, cublasLtMatmulDescSetAttribute,
           (cublasLtMatmulDesc_t desc, int attribute, const void *value, size_t size), (desc, attribute, value, size))
CCUDA_CALL(cublasStatus_t, cublasLtMatrixLayoutCreate,
           (cublasLtMatrixLayout_t *layout, int type, uint64_t rows, uint64_t columns, int64_t leadingDimension),
           (layout, type, rows, columns, leadingDimension))
CCUDA_CALL(cublasStatus_t, cublasLtMatrixLayoutDestroy, (cublasLtMatrixLayout_t layout), (layout))
CCUDA_CALL(cublasStatus_t, cublasLtMatmulPreferenceCreate, (cublasLtMatmulPreference_t *preference), (preference))
CCUDA_CALL(cublasStatus_t, cublasLtMatmulPreferenceDestroy, (cublasLtMatmulPreference_t preference), (preference))
CCUDA_CALL(cublasStatus_t, cublasLtMatmulPreferenceSetAttribute,
           (cublasLtMatmulPreference_t preference, int attribute, const void *value, size_t size),
           (preference, attribute, value, size))
CCUDA_CALL(cublasStatus_t, cublasLtMatmulAlgoGetHeuristic,
           (cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
            cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d, cublasLtMatmulPreference_t preference, int requested,
            cublasLtMatmulHeuristicResult_t *results, int *returned),
           (handle, desc, a, b, c, d, preference, requested, results, returned))
CCUDA_CALL(cublasStatus_t, cublasLtMatmul,
           (cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void *alpha, const void *a,
            cublasLtMatrixLayout_t aLayout, const void *b, cublasLtMatrixLayout_t bLayout, const void *beta,
            const void *c, cublasLtMatrixLayout_t cLayout, void *d, cublasLtMatrixLayout_t dLayout,
            const cublasLtMatmulAlgo_t *algo, void *workspace, size_t workspaceSize, CUstream stream),
           (handle, desc, alpha, a, aLayout, b, bLayout, beta, c, cLayout, d, dLayout, algo, workspace, workspaceSize,
            stream))

CCUDA_CALL(cublasStatus_t, cublasCreate, (cublasHandle_t *handle), (handle))
CCUDA_CALL(cublasStatus_t, cublasDestroy, (cublasHandle_t handle), (handle))
CCUDA_CALL(cublasStatus_t, cublasSetStream, (cublasHandle_t handle, CUstream stream), (handle, stream))
CCUDA_CALL(cublasStatus_t, cublasGemmGroupedBatchedEx,
           (cublasHandle_t handle, const int *transA, const int *transB, const int *m, const int *n, const int *k,
            const void *alpha, const void *const a[], int aType, const int *lda, const void *const b[], int bType,
            const int *ldb, const void *beta, void *const c[], int cType, const int *ldc, int groupCount,
            const int *groupSize, int computeType),
           (handle, transA, transB, m, n, k, alpha, a, aType, lda, b, bType, ldb, beta, c, cType, ldc, groupCount,
            groupSize, computeType))

CCUDA_CALL(nvrtcResult, nvrtcVersion, (int *major, int *minor), (major, minor))
CCUDA_CALL(const char *, nvrtcGetErrorString, (nvrtcResult result), (result))
CCUDA_CALL(nvrtcResult, nvrtcCompileProgram, (nvrtcProgram program, int optionCount, const char *const *options),
           (program, optionCount, options))
CCUDA_CALL(nvrtcResult, nvrtcGetPTXSize, (nvrtcProgram program, size_t *size), (program, size))
CCUDA_CALL(nvrtcResult, nvrtcGetPTX, (nvrtcProgram program, char *ptx), (program, ptx))
CCUDA_CALL(nvrtcResult, nvrtcGetProgramLogSize, (nvrtcProgram program, size_t *size), (program, size))
CCUDA_CALL(nvrtcResult, nvrtcGetProgramLog, (nvrtcProgram program, char *log), (program, log))
CCUDA_CALL(nvrtcResult, nvrtcDestroyProgram, (nvrtcProgram *program), (program))

nvrtcResult ccuda_nvrtcCreateProgram(nvrtcProgram *program, const char *source, const char *name) {
    typedef nvrtcResult (*create_t)(nvrtcProgram *, const char *, const char *, int, const char *const *,
                                    const char *const *);
    return ((create_t)p_nvrtcCreateProgram)(program, source, name, 0, NULL, NULL);
}
