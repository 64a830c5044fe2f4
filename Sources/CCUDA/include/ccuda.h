#ifndef MOEMESH_CCUDA_H
#define MOEMESH_CCUDA_H
// The parts of the CUDA driver API, cuBLASLt and NVRTC that MoEMesh uses, declared here so that the package builds
// without CUDA installed. Nothing links against CUDA: `ccuda_load` opens the libraries with dlopen at run time and
// every `ccuda_*` call goes through the symbols it found. Values mirror cuda.h, cublasLt.h, library_types.h and
// nvrtc.h (checked against the real headers by scripts/check-cuda-abi.sh on a machine with CUDA).
#include <stddef.h>
#include <stdint.h>

typedef int CUresult;              // CUDA_SUCCESS = 0
typedef int CUdevice;
typedef struct CUctx_st *CUcontext;
typedef struct CUstream_st *CUstream;
typedef struct CUevent_st *CUevent;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef unsigned long long CUdeviceptr;

enum {
    CCUDA_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16,     // CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT
    CCUDA_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE = 36,        // CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE
    CCUDA_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH = 37,  // CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH
    CCUDA_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75, // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
    CCUDA_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76, // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR
    CCUDA_STREAM_NON_BLOCKING = 1,                        // CU_STREAM_NON_BLOCKING
    CCUDA_EVENT_DEFAULT = 0,                              // CU_EVENT_DEFAULT
    CCUDA_MEMHOSTALLOC_PORTABLE = 1,                      // CU_MEMHOSTALLOC_PORTABLE
};

typedef int cublasStatus_t;        // CUBLAS_STATUS_SUCCESS = 0
typedef struct cublasLtContext *cublasLtHandle_t;
typedef struct cublasLtMatmulDescOpaque_t *cublasLtMatmulDesc_t;
typedef struct cublasLtMatrixLayoutOpaque_t *cublasLtMatrixLayout_t;
typedef struct cublasLtMatmulPreferenceOpaque_t *cublasLtMatmulPreference_t;
typedef struct { uint64_t data[8]; } cublasLtMatmulAlgo_t;
typedef struct {
    cublasLtMatmulAlgo_t algo;
    size_t workspaceSize;
    cublasStatus_t state;
    float wavesCount;
    int reserved[4];
} cublasLtMatmulHeuristicResult_t;

enum {
    CCUDA_R_32F = 0,                                 // CUDA_R_32F
    CCUDA_R_16F = 2,                                 // CUDA_R_16F
    CCUDA_R_16BF = 14,                               // CUDA_R_16BF
    CCUBLAS_COMPUTE_32F = 68,                        // CUBLAS_COMPUTE_32F
    CCUBLAS_OP_N = 0,                                // CUBLAS_OP_N
    CCUBLAS_OP_T = 1,                                // CUBLAS_OP_T
    CCUBLASLT_MATMUL_DESC_TRANSA = 3,                // CUBLASLT_MATMUL_DESC_TRANSA
    CCUBLASLT_MATMUL_DESC_TRANSB = 4,                // CUBLASLT_MATMUL_DESC_TRANSB
    CCUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES = 1,   // CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES
    CCUBLAS_STATUS_INVALID_VALUE = 7,                // CUBLAS_STATUS_INVALID_VALUE
    CCUBLAS_STATUS_NOT_SUPPORTED = 15,               // CUBLAS_STATUS_NOT_SUPPORTED
};

typedef struct cublasContext *cublasHandle_t;

typedef int nvrtcResult;           // NVRTC_SUCCESS = 0
typedef struct _nvrtcProgram *nvrtcProgram;

/// Opens the CUDA driver (libcuda.so.1), cuBLASLt and NVRTC (CUDA 13, else 12 sonames; `MOEMESH_CUDA_LIB_DIR` first
/// when set). Returns 0, or -1 with a message naming what is missing in `error`. Safe to call again.
int ccuda_load(char *error, size_t error_size);
/// The libraries `ccuda_load` opened, as "libcuda.so.1, libcublasLt.so.13, libnvrtc.so.13".
const char *ccuda_loaded_libraries(void);

CUresult ccuda_cuInit(unsigned int flags);
CUresult ccuda_cuDriverGetVersion(int *version);
CUresult ccuda_cuGetErrorString(CUresult error, const char **text);
CUresult ccuda_cuDeviceGetCount(int *count);
CUresult ccuda_cuDeviceGet(CUdevice *device, int ordinal);
CUresult ccuda_cuDeviceGetName(char *name, int length, CUdevice device);
CUresult ccuda_cuDeviceGetAttribute(int *value, int attribute, CUdevice device);
CUresult ccuda_cuDeviceTotalMem(size_t *bytes, CUdevice device);
CUresult ccuda_cuDevicePrimaryCtxRetain(CUcontext *context, CUdevice device);
CUresult ccuda_cuCtxSetCurrent(CUcontext context);
CUresult ccuda_cuMemGetInfo(size_t *free, size_t *total);
CUresult ccuda_cuMemAlloc(CUdeviceptr *pointer, size_t bytes);
CUresult ccuda_cuMemFree(CUdeviceptr pointer);
CUresult ccuda_cuMemHostAlloc(void **pointer, size_t bytes, unsigned int flags);
CUresult ccuda_cuMemFreeHost(void *pointer);
CUresult ccuda_cuMemcpyHtoD(CUdeviceptr destination, const void *source, size_t bytes);
CUresult ccuda_cuMemcpyHtoDAsync(CUdeviceptr destination, const void *source, size_t bytes, CUstream stream);
CUresult ccuda_cuMemcpyDtoHAsync(void *destination, CUdeviceptr source, size_t bytes, CUstream stream);
CUresult ccuda_cuStreamCreate(CUstream *stream, unsigned int flags);
CUresult ccuda_cuStreamDestroy(CUstream stream);
CUresult ccuda_cuStreamSynchronize(CUstream stream);
CUresult ccuda_cuEventCreate(CUevent *event, unsigned int flags);
CUresult ccuda_cuEventDestroy(CUevent event);
CUresult ccuda_cuEventRecord(CUevent event, CUstream stream);
CUresult ccuda_cuEventSynchronize(CUevent event);
CUresult ccuda_cuEventElapsedTime(float *milliseconds, CUevent start, CUevent end);
CUresult ccuda_cuModuleLoadData(CUmodule *module, const void *image);
CUresult ccuda_cuModuleGetFunction(CUfunction *function, CUmodule module, const char *name);
CUresult ccuda_cuLaunchKernel(
    CUfunction function, unsigned int gridX, unsigned int gridY, unsigned int gridZ, unsigned int blockX,
    unsigned int blockY, unsigned int blockZ, unsigned int sharedBytes, CUstream stream, void **parameters,
    void **extra);

cublasStatus_t ccuda_cublasLtCreate(cublasLtHandle_t *handle);
cublasStatus_t ccuda_cublasLtDestroy(cublasLtHandle_t handle);
size_t ccuda_cublasLtGetVersion(void);
const char *ccuda_cublasLtGetStatusString(cublasStatus_t status);
cublasStatus_t ccuda_cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *desc, int computeType, int scaleType);
cublasStatus_t ccuda_cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc);
cublasStatus_t ccuda_cublasLtMatmulDescSetAttribute(
    cublasLtMatmulDesc_t desc, int attribute, const void *value, size_t size);
cublasStatus_t ccuda_cublasLtMatrixLayoutCreate(
    cublasLtMatrixLayout_t *layout, int type, uint64_t rows, uint64_t columns, int64_t leadingDimension);
cublasStatus_t ccuda_cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout);
cublasStatus_t ccuda_cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *preference);
cublasStatus_t ccuda_cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t preference);
cublasStatus_t ccuda_cublasLtMatmulPreferenceSetAttribute(
    cublasLtMatmulPreference_t preference, int attribute, const void *value, size_t size);
cublasStatus_t ccuda_cublasLtMatmulAlgoGetHeuristic(
    cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
    cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d, cublasLtMatmulPreference_t preference, int requested,
    cublasLtMatmulHeuristicResult_t *results, int *returned);
cublasStatus_t ccuda_cublasLtMatmul(
    cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void *alpha, const void *a, cublasLtMatrixLayout_t aLayout,
    const void *b, cublasLtMatrixLayout_t bLayout, const void *beta, const void *c, cublasLtMatrixLayout_t cLayout,
    void *d, cublasLtMatrixLayout_t dLayout, const cublasLtMatmulAlgo_t *algo, void *workspace, size_t workspaceSize,
    CUstream stream);

/// Whether cuBLAS's grouped GEMM (`cublasGemmGroupedBatchedEx`, cuBLAS 12.5 and later) was found.
int ccuda_has_grouped_gemm(void);
cublasStatus_t ccuda_cublasCreate(cublasHandle_t *handle);
cublasStatus_t ccuda_cublasDestroy(cublasHandle_t handle);
cublasStatus_t ccuda_cublasSetStream(cublasHandle_t handle, CUstream stream);
/// Per group g: `C_j = α_g op(A_j) op(B_j) + β_g C_j` for its `groupSize[g]` problems; the per-group arrays live on the
/// host, the pointer arrays `a`, `b`, `c` on the device.
cublasStatus_t ccuda_cublasGemmGroupedBatchedEx(
    cublasHandle_t handle, const int *transA, const int *transB, const int *m, const int *n, const int *k,
    const void *alpha, const void *const a[], int aType, const int *lda, const void *const b[], int bType,
    const int *ldb, const void *beta, void *const c[], int cType, const int *ldc, int groupCount,
    const int *groupSize, int computeType);

nvrtcResult ccuda_nvrtcVersion(int *major, int *minor);
const char *ccuda_nvrtcGetErrorString(nvrtcResult result);
nvrtcResult ccuda_nvrtcCreateProgram(nvrtcProgram *program, const char *source, const char *name);
nvrtcResult ccuda_nvrtcCompileProgram(nvrtcProgram program, int optionCount, const char *const *options);
nvrtcResult ccuda_nvrtcGetPTXSize(nvrtcProgram program, size_t *size);
nvrtcResult ccuda_nvrtcGetPTX(nvrtcProgram program, char *ptx);
nvrtcResult ccuda_nvrtcGetProgramLogSize(nvrtcProgram program, size_t *size);
nvrtcResult ccuda_nvrtcGetProgramLog(nvrtcProgram program, char *log);
nvrtcResult ccuda_nvrtcDestroyProgram(nvrtcProgram *program);

#endif
