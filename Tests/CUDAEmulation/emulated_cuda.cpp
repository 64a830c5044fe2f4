// A CUDA device on the CPU, for tests: the driver API, cuBLASLt and cuBLAS functions MoEMesh's CUDA backend loads
// (Sources/CCUDA), in one shared library that stands in for libcuda.so.1, libcublasLt.so.12 and libcublas.so.12
// (MOEMESH_CUDA_LIB_DIR points at a folder of links to it; NVRTC stays the real one). Device memory is host memory;
// every stream runs its work at once, in order; modules are NVRTC's PTX, whose kernels must be among
// expert_kernels.cu's, which run through cuda_emulation.h; the GEMMs are plain loops with f32 accumulation that check
// their layouts as cuBLAS would. So the backend's Swift code runs here as it runs on a GPU: buffers, argument lists,
// layouts, the grouped GEMM. Speed and the real libraries' numerics are checked on a GPU (scripts/gpu-verify.sh).
#include "cuda_emulation.h"

#include "../../Sources/MoECUDA/expert_kernels.cu"

#include <atomic>
#include <chrono>
#include <string>
#include <utility>
#include <vector>

extern "C" {
#include "../../Sources/CCUDA/include/ccuda.h"
}

namespace {
constexpr CUresult success = 0, invalidValue = 1, outOfMemory = 2, notFound = 500;
constexpr cublasStatus_t blasSuccess = 0;
constexpr size_t totalBytes = size_t(16) << 30;
std::atomic<size_t> allocated{0};

struct Function {
    const char *name;
    void (*launch)(unsigned int grid, unsigned int block, void **parameters);
};

// Reads each parameter from its slot, as cuLaunchKernel does.
template <class... Parameters>
void launchWith(void (*kernel)(Parameters...), unsigned int grid, unsigned int block, void **slots) {
    [&]<size_t... I>(std::index_sequence<I...>) {
        emulateLaunch(kernel, grid, block, *static_cast<Parameters *>(slots[I])...);
    }(std::index_sequence_for<Parameters...>{});
}

#define KERNEL(name) Function{#name, [](unsigned int g, unsigned int b, void **p) { launchWith(name, g, b, p); }}
const Function functions[] = {
    KERNEL(f32_to_bf16),         KERNEL(bf16_to_f32),      KERNEL(gated_activation),   KERNEL(clamped_swiglu),
    KERNEL(activation_in_place), KERNEL(add_bias),         KERNEL(fill_uniform_bf16),  KERNEL(quantized_matmul),
    KERNEL(dequantize_to_bf16),  KERNEL(fill_random_bytes),
};

struct Module {
    std::string ptx;
};
struct Event {
    std::chrono::steady_clock::time_point time;
};

float load(const void *base, int type, size_t index) {
    if (type == CCUDA_R_32F) return static_cast<const float *>(base)[index];
    return bf16_to_float(static_cast<const bf16 *>(base)[index]);
}

void store(void *base, int type, size_t index, float value) {
    if (type == CCUDA_R_32F) static_cast<float *>(base)[index] = value;
    else static_cast<bf16 *>(base)[index] = float_to_bf16(value);
}

bool supported(int type) { return type == CCUDA_R_32F || type == CCUDA_R_16BF; }

// Column-major `D [m, n] = α op(A) op(B) + β C`, f32 accumulation; op(A) `[m, k]`, op(B) `[k, n]`.
void gemm(bool transA, bool transB, int m, int n, int k, float alpha, const void *a, int aType, int64_t lda,
          const void *b, int bType, int64_t ldb, float beta, const void *c, int cType, int64_t ldc, void *d, int dType,
          int64_t ldd) {
    std::vector<float> opA(size_t(m) * k), opB(size_t(k) * n);  // op(A) row i, op(B) column j: contiguous in k
    for (int i = 0; i < m; i++) {
        for (int p = 0; p < k; p++) opA[size_t(i) * k + p] = load(a, aType, transA ? p + i * lda : i + p * lda);
    }
    for (int j = 0; j < n; j++) {
        for (int p = 0; p < k; p++) opB[size_t(j) * k + p] = load(b, bType, transB ? j + p * ldb : p + j * ldb);
    }
    for (int j = 0; j < n; j++) {
        for (int i = 0; i < m; i++) {
            float sum = 0;
            const float *x = &opA[size_t(i) * k], *y = &opB[size_t(j) * k];
            for (int p = 0; p < k; p++) sum += x[p] * y[p];
            float value = alpha * sum;
            if (beta != 0) value += beta * load(c, cType, i + j * ldc);
            store(d, dType, i + j * ldd, value);
        }
    }
}
}  // namespace

struct cublasLtContext {};
struct cublasContext {
    CUstream stream = nullptr;
};
struct cublasLtMatmulDescOpaque_t {
    int computeType, scaleType, transA = CCUBLAS_OP_N, transB = CCUBLAS_OP_N;
};
struct cublasLtMatrixLayoutOpaque_t {
    int type;
    uint64_t rows, columns;
    int64_t leadingDimension;
};
struct cublasLtMatmulPreferenceOpaque_t {
    size_t workspace = 0;
};

extern "C" {
// The driver.
CUresult cuInit(unsigned int) { return success; }
// NVRTC (12.9) looks for the driver's export tables to set up its cache: there are none here.
CUresult cuGetExportTable(const void **table, const void *) {
    *table = nullptr;
    return 801;  // CUDA_ERROR_NOT_SUPPORTED
}
CUresult cuDriverGetVersion(int *version) {
    *version = 12080;
    return success;
}
CUresult cuGetErrorString(CUresult error, const char **text) {
    *text = error == outOfMemory ? "out of memory (emulated)" : error == notFound ? "not found (emulated)"
                                                                                 : "invalid value (emulated)";
    return success;
}
CUresult cuDeviceGetCount(int *count) {
    *count = 1;
    return success;
}
CUresult cuDeviceGet(CUdevice *device, int ordinal) {
    if (ordinal != 0) return invalidValue;
    *device = 0;
    return success;
}
CUresult cuDeviceGetName(char *name, int length, CUdevice) {
    std::snprintf(name, size_t(length), "CUDA emulator (CPU)");
    return success;
}
CUresult cuDeviceGetAttribute(int *value, int attribute, CUdevice) {
    switch (attribute) {
    case CCUDA_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: *value = 1; return success;
    case CCUDA_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *value = 9; return success;
    case CCUDA_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: *value = 0; return success;
    // An H100 SXM's HBM3: 2,619 MHz, 5,120 bits (3.35 TB/s).
    case CCUDA_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE: *value = 2619000; return success;
    case CCUDA_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH: *value = 5120; return success;
    default: return invalidValue;
    }
}
CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice) {
    *bytes = totalBytes;
    return success;
}
CUresult cuDevicePrimaryCtxRetain(CUcontext *context, CUdevice) {
    static int primary;
    *context = reinterpret_cast<CUcontext>(&primary);
    return success;
}
CUresult cuCtxSetCurrent(CUcontext) { return success; }
CUresult cuMemGetInfo_v2(size_t *free, size_t *total) {
    *total = totalBytes;
    *free = totalBytes - allocated.load();
    return success;
}
// Allocations carry their size in front (for cuMemGetInfo), and start on 256-byte boundaries as cuMemAlloc's do.
CUresult cuMemAlloc_v2(CUdeviceptr *pointer, size_t bytes) {
    const size_t rounded = (bytes + 255) / 256 * 256;
    if (allocated.load() + rounded > totalBytes) return outOfMemory;
    char *base = static_cast<char *>(std::aligned_alloc(256, rounded + 256));
    if (!base) return outOfMemory;
    *reinterpret_cast<size_t *>(base) = rounded;
    allocated += rounded;
    *pointer = reinterpret_cast<CUdeviceptr>(base + 256);
    return success;
}
CUresult cuMemFree_v2(CUdeviceptr pointer) {
    char *base = reinterpret_cast<char *>(pointer) - 256;
    allocated -= *reinterpret_cast<size_t *>(base);
    std::free(base);
    return success;
}
CUresult cuMemHostAlloc(void **pointer, size_t bytes, unsigned int) {
    *pointer = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
    return *pointer ? success : outOfMemory;
}
CUresult cuMemFreeHost(void *pointer) {
    std::free(pointer);
    return success;
}
CUresult cuMemcpyHtoD_v2(CUdeviceptr destination, const void *source, size_t bytes) {
    std::memcpy(reinterpret_cast<void *>(destination), source, bytes);
    return success;
}
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr destination, const void *source, size_t bytes, CUstream) {
    return cuMemcpyHtoD_v2(destination, source, bytes);
}
CUresult cuMemcpyDtoHAsync_v2(void *destination, CUdeviceptr source, size_t bytes, CUstream) {
    std::memcpy(destination, reinterpret_cast<const void *>(source), bytes);
    return success;
}
CUresult cuStreamCreate(CUstream *stream, unsigned int) {
    *stream = reinterpret_cast<CUstream>(new int(0));
    return success;
}
CUresult cuStreamDestroy_v2(CUstream stream) {
    delete reinterpret_cast<int *>(stream);
    return success;
}
CUresult cuStreamSynchronize(CUstream) { return success; }
CUresult cuEventCreate(CUevent *event, unsigned int) {
    *event = reinterpret_cast<CUevent>(new Event());
    return success;
}
CUresult cuEventDestroy_v2(CUevent event) {
    delete reinterpret_cast<Event *>(event);
    return success;
}
CUresult cuEventRecord(CUevent event, CUstream) {
    reinterpret_cast<Event *>(event)->time = std::chrono::steady_clock::now();
    return success;
}
CUresult cuEventSynchronize(CUevent) { return success; }
CUresult cuEventElapsedTime_v2(float *milliseconds, CUevent start, CUevent end) {
    const auto elapsed = reinterpret_cast<Event *>(end)->time - reinterpret_cast<Event *>(start)->time;
    *milliseconds = std::chrono::duration<float, std::milli>(elapsed).count();
    return success;
}
CUresult cuModuleLoadData(CUmodule *module, const void *image) {
    const std::string ptx(static_cast<const char *>(image));
    if (ptx.find(".entry") == std::string::npos) return invalidValue;  // not PTX
    *module = reinterpret_cast<CUmodule>(new Module{ptx});
    return success;
}
// A kernel the PTX defines and the emulator runs.
CUresult cuModuleGetFunction(CUfunction *function, CUmodule module, const char *name) {
    const std::string entry = std::string(".entry ") + name + "(";
    if (reinterpret_cast<Module *>(module)->ptx.find(entry) == std::string::npos) return notFound;
    for (const Function &candidate : functions) {
        if (std::strcmp(candidate.name, name) == 0) {
            *function = reinterpret_cast<CUfunction>(const_cast<Function *>(&candidate));
            return success;
        }
    }
    return notFound;
}
CUresult cuLaunchKernel(CUfunction function, unsigned int gridX, unsigned int gridY, unsigned int gridZ,
                        unsigned int blockX, unsigned int blockY, unsigned int blockZ, unsigned int sharedBytes,
                        CUstream, void **parameters, void **extra) {
    if (gridY != 1 || gridZ != 1 || blockY != 1 || blockZ != 1 || sharedBytes != 0 || extra != nullptr) {
        return invalidValue;  // the backend launches one-dimensional grids without shared memory
    }
    if (gridX == 0 || blockX == 0 || blockX > 1024) return invalidValue;
    reinterpret_cast<const Function *>(function)->launch(gridX, blockX, parameters);
    return success;
}

// cuBLASLt.
cublasStatus_t cublasLtCreate(cublasLtHandle_t *handle) {
    *handle = new cublasLtContext();
    return blasSuccess;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) {
    delete handle;
    return blasSuccess;
}
size_t cublasLtGetVersion(void) { return 120900; }
const char *cublasLtGetStatusString(cublasStatus_t status) {
    return status == CCUBLAS_STATUS_NOT_SUPPORTED ? "CUBLAS_STATUS_NOT_SUPPORTED (emulated)"
                                                  : "CUBLAS_STATUS_INVALID_VALUE (emulated)";
}
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *desc, int computeType, int scaleType) {
    if (computeType != CCUBLAS_COMPUTE_32F || scaleType != CCUDA_R_32F) return CCUBLAS_STATUS_NOT_SUPPORTED;
    *desc = new cublasLtMatmulDescOpaque_t{computeType, scaleType};
    return blasSuccess;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
    delete desc;
    return blasSuccess;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc, int attribute, const void *value,
                                              size_t size) {
    if (size != sizeof(int)) return CCUBLAS_STATUS_INVALID_VALUE;
    const int operation = *static_cast<const int *>(value);
    if (operation != CCUBLAS_OP_N && operation != CCUBLAS_OP_T) return CCUBLAS_STATUS_INVALID_VALUE;
    if (attribute == CCUBLASLT_MATMUL_DESC_TRANSA) desc->transA = operation;
    else if (attribute == CCUBLASLT_MATMUL_DESC_TRANSB) desc->transB = operation;
    else return CCUBLAS_STATUS_INVALID_VALUE;
    return blasSuccess;
}
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *layout, int type, uint64_t rows, uint64_t columns,
                                          int64_t leadingDimension) {
    if (!supported(type) || leadingDimension < int64_t(rows)) return CCUBLAS_STATUS_INVALID_VALUE;
    *layout = new cublasLtMatrixLayoutOpaque_t{type, rows, columns, leadingDimension};
    return blasSuccess;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
    delete layout;
    return blasSuccess;
}
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *preference) {
    *preference = new cublasLtMatmulPreferenceOpaque_t();
    return blasSuccess;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t preference) {
    delete preference;
    return blasSuccess;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t preference, int attribute,
                                                    const void *value, size_t size) {
    if (attribute != CCUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES || size != sizeof(size_t)) {
        return CCUBLAS_STATUS_INVALID_VALUE;
    }
    preference->workspace = *static_cast<const size_t *>(value);
    return blasSuccess;
}
// The layouts must agree as cuBLASLt requires: op(A) [m, k], op(B) [k, n], C and D [m, n].
static bool agrees(cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                   cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d) {
    const uint64_t m = d->rows, n = d->columns;
    const uint64_t aRows = desc->transA == CCUBLAS_OP_T ? a->columns : a->rows;
    const uint64_t k = desc->transA == CCUBLAS_OP_T ? a->rows : a->columns;
    const uint64_t bRows = desc->transB == CCUBLAS_OP_T ? b->columns : b->rows;
    const uint64_t bColumns = desc->transB == CCUBLAS_OP_T ? b->rows : b->columns;
    return aRows == m && bRows == k && bColumns == n && c->rows == m && c->columns == n && c->type == d->type &&
           a->type == CCUDA_R_16BF && b->type == CCUDA_R_16BF;
}
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t a,
                                              cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c,
                                              cublasLtMatrixLayout_t d, cublasLtMatmulPreference_t, int requested,
                                              cublasLtMatmulHeuristicResult_t *results, int *returned) {
    *returned = 0;
    if (requested < 1 || !agrees(desc, a, b, c, d)) return CCUBLAS_STATUS_NOT_SUPPORTED;
    std::memset(results, 0, sizeof *results);
    *returned = 1;
    return blasSuccess;
}
cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t desc, const void *alpha, const void *a,
                              cublasLtMatrixLayout_t aLayout, const void *b, cublasLtMatrixLayout_t bLayout,
                              const void *beta, const void *c, cublasLtMatrixLayout_t cLayout, void *d,
                              cublasLtMatrixLayout_t dLayout, const cublasLtMatmulAlgo_t *, void *, size_t, CUstream) {
    if (!agrees(desc, aLayout, bLayout, cLayout, dLayout)) return CCUBLAS_STATUS_INVALID_VALUE;
    const bool transA = desc->transA == CCUBLAS_OP_T, transB = desc->transB == CCUBLAS_OP_T;
    gemm(transA, transB, int(dLayout->rows), int(dLayout->columns), int(transA ? aLayout->rows : aLayout->columns),
         *static_cast<const float *>(alpha), a, aLayout->type, aLayout->leadingDimension, b, bLayout->type,
         bLayout->leadingDimension, *static_cast<const float *>(beta), c, cLayout->type, cLayout->leadingDimension, d,
         dLayout->type, dLayout->leadingDimension);
    return blasSuccess;
}

// cuBLAS: the handle and the grouped GEMM (bf16 in, bf16 out, as cuBLAS 13 allows).
cublasStatus_t cublasCreate_v2(cublasHandle_t *handle) {
    *handle = new cublasContext();
    return blasSuccess;
}
cublasStatus_t cublasDestroy_v2(cublasHandle_t handle) {
    delete handle;
    return blasSuccess;
}
cublasStatus_t cublasSetStream_v2(cublasHandle_t handle, CUstream stream) {
    handle->stream = stream;
    return blasSuccess;
}
cublasStatus_t cublasGemmGroupedBatchedEx(cublasHandle_t, const int *transA, const int *transB, const int *m,
                                          const int *n, const int *k, const void *alpha, const void *const a[],
                                          int aType, const int *lda, const void *const b[], int bType, const int *ldb,
                                          const void *beta, void *const c[], int cType, const int *ldc,
                                          int groupCount, const int *groupSize, int computeType) {
    if (computeType != CCUBLAS_COMPUTE_32F || aType != CCUDA_R_16BF || bType != CCUDA_R_16BF || cType != CCUDA_R_16BF) {
        return CCUBLAS_STATUS_NOT_SUPPORTED;
    }
    int problem = 0;
    for (int g = 0; g < groupCount; g++) {
        const bool ta = transA[g] == CCUBLAS_OP_T, tb = transB[g] == CCUBLAS_OP_T;
        if (lda[g] < (ta ? k[g] : m[g]) || ldb[g] < (tb ? n[g] : k[g]) || ldc[g] < m[g]) {
            return CCUBLAS_STATUS_INVALID_VALUE;
        }
        for (int i = 0; i < groupSize[g]; i++, problem++) {
            gemm(ta, tb, m[g], n[g], k[g], static_cast<const float *>(alpha)[g], a[problem], aType, lda[g],
                 b[problem], bType, ldb[g], static_cast<const float *>(beta)[g], c[problem], cType, ldc[g],
                 c[problem], cType, ldc[g]);
        }
    }
    return blasSuccess;
}
}
