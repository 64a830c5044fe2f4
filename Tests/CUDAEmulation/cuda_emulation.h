// Runs MoEMesh's CUDA kernels (Sources/MoECUDA/expert_kernels.cu) on the CPU, so that tests check them on
// machines without a GPU. Each CUDA thread is a fiber (ucontext) on the launching thread; the 32 lanes of a warp take
// turns, one warp after another, one block after another (the kernels use grid-stride loops, so any grid covers the
// work). A warp shuffle writes the lane's value, lets every other lane of the warp run to the same shuffle, then
// reads its partner's (two slot buffers used in turn, so one switch per shuffle suffices). Shared memory and
// __syncthreads are not emulated: the kernels use neither. Launches on different threads are independent.
#pragma once

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <ucontext.h>

#define __global__
#define __device__
#define __forceinline__ inline

struct dim3 {
    unsigned int x = 1, y = 1, z = 1;
};
struct alignas(8) uint2 {
    unsigned int x, y;
};
struct alignas(16) uint4 {
    unsigned int x, y, z, w;
};
struct alignas(16) float4 {
    float x, y, z, w;
};

inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

inline float __uint_as_float(unsigned int bits) {
    float value;
    std::memcpy(&value, &bits, 4);
    return value;
}
inline unsigned int __float_as_uint(float value) {
    unsigned int bits;
    std::memcpy(&bits, &value, 4);
    return bits;
}
inline int min(int a, int b) { return a < b ? a : b; }

namespace emulation {
struct Lane {
    ucontext_t context;
    bool finished;
};
// The warp running on this thread: its lanes' contexts and the shuffle slots.
struct Warp {
    ucontext_t scheduler;
    Lane lanes[32];
    unsigned int slots[2][32];
    int phase[32];
    int current;
    void (*body)(void *);
    void *argument;
};
inline thread_local Warp *warp = nullptr;
constexpr size_t stackBytes = 256 << 10;
inline thread_local char *stacks = nullptr;  // 32 stacks, kept for the thread's later launches

inline void yield() { swapcontext(&warp->lanes[warp->current].context, &warp->scheduler); }

inline void start() {
    Warp *w = warp;
    w->body(w->argument);
    w->lanes[w->current].finished = true;  // returning resumes uc_link: the scheduler
}

// Runs lanes [0, count) of warp `index` in block `block` to completion.
inline void runWarp(Warp &w, unsigned int block, unsigned int index, unsigned int count) {
    if (!stacks) stacks = static_cast<char *>(std::malloc(32 * stackBytes));
    for (unsigned int lane = 0; lane < count; lane++) {
        Lane &l = w.lanes[lane];
        l.finished = false;
        w.phase[lane] = 0;
        getcontext(&l.context);
        l.context.uc_stack.ss_sp = stacks + lane * stackBytes;
        l.context.uc_stack.ss_size = stackBytes;
        l.context.uc_link = &w.scheduler;
        makecontext(&l.context, start, 0);
    }
    for (bool running = true; running;) {
        running = false;
        for (unsigned int lane = 0; lane < count; lane++) {
            if (w.lanes[lane].finished) continue;
            running = true;
            w.current = (int)lane;
            threadIdx = dim3{index * 32 + lane, 0, 0};
            blockIdx = dim3{block, 0, 0};
            swapcontext(&w.scheduler, &w.lanes[lane].context);
        }
    }
}

template <class Kernel> void invoke(void *kernel) { (*static_cast<Kernel *>(kernel))(); }
}  // namespace emulation

template <class T> T __shfl_xor_sync(unsigned int, T value, int laneMask) {
    static_assert(sizeof(T) == 4, "32-bit shuffles only");
    emulation::Warp &w = *emulation::warp;
    const int lane = w.current, phase = w.phase[lane];
    std::memcpy(&w.slots[phase][lane], &value, 4);
    w.phase[lane] = 1 - phase;
    emulation::yield();  // every lane of the warp writes its value before any reads
    T result;
    std::memcpy(&result, &w.slots[phase][lane ^ laneMask], 4);
    return result;
}

// kernel<<<grid, block>>>(arguments...) on the calling thread; returns when every thread has finished.
template <class... Parameters, class... Arguments>
void emulateLaunch(void (*kernel)(Parameters...), unsigned int grid, unsigned int block, Arguments... arguments) {
    gridDim = dim3{grid, 1, 1};
    blockDim = dim3{block, 1, 1};
    auto body = [&] { kernel(arguments...); };
    emulation::Warp w;
    w.body = emulation::invoke<decltype(body)>;
    w.argument = &body;
    emulation::Warp *outer = emulation::warp;
    emulation::warp = &w;
    for (unsigned int b = 0; b < grid; b++) {
        for (unsigned int first = 0; first < block; first += 32) {
            emulation::runWarp(w, b, first / 32, block - first < 32 ? block - first : 32);
        }
    }
    emulation::warp = outer;
}
