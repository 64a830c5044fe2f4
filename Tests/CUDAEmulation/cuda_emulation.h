// Runs MoEMesh's CUDA kernels (Sources/MoEKernels/CUDA/expert_kernels.cu) on the CPU, so that tests check their
// arithmetic on machines without a GPU. Every CUDA thread of a block is a std::thread; blocks run one after another
// (the kernels use grid-stride loops, so any grid covers the work). Warp shuffles exchange values through a slot per
// lane between two barriers of the warp; shared memory and __syncthreads are not emulated (the kernels use neither).
#pragma once

#include <barrier>
#include <cmath>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

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

inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

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

// One warp's exchange: each lane's value in its slot, read by its partner between two barriers.
struct EmulatedWarp {
    explicit EmulatedWarp(int lanes) : barrier(lanes) {}
    std::barrier<> barrier;
    unsigned int slots[32] = {};
};
inline thread_local EmulatedWarp *currentWarp = nullptr;

template <class T> T __shfl_xor_sync(unsigned int, T value, int laneMask) {
    static_assert(sizeof(T) == 4, "32-bit shuffles only");
    const int lane = (int)(threadIdx.x & 31);
    std::memcpy(&currentWarp->slots[lane], &value, 4);
    currentWarp->barrier.arrive_and_wait();
    T result;
    std::memcpy(&result, &currentWarp->slots[lane ^ laneMask], 4);
    currentWarp->barrier.arrive_and_wait();
    return result;
}

// kernel<<<grid, block>>>(arguments...), on CPU threads; returns when every thread has finished.
template <class... Parameters, class... Arguments>
void emulateLaunch(void (*kernel)(Parameters...), unsigned int grid, unsigned int block, Arguments... arguments) {
    gridDim = dim3{grid, 1, 1};
    blockDim = dim3{block, 1, 1};
    for (unsigned int b = 0; b < grid; b++) {
        std::vector<std::unique_ptr<EmulatedWarp>> warps;
        for (unsigned int first = 0; first < block; first += 32) {
            warps.push_back(std::make_unique<EmulatedWarp>((int)(block - first < 32 ? block - first : 32)));
        }
        std::vector<std::thread> threads;
        threads.reserve(block);
        for (unsigned int t = 0; t < block; t++) {
            threads.emplace_back([&, t, b] {
                threadIdx = dim3{t, 0, 0};
                blockIdx = dim3{b, 0, 0};
                currentWarp = warps[t / 32].get();
                kernel(arguments...);
            });
        }
        for (auto &thread : threads) thread.join();
    }
}
