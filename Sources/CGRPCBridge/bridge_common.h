// Helpers shared by the bridge's server and client halves.
#pragma once

#include <grpcpp/grpcpp.h>
#include <grpcpp/support/byte_buffer.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>

#include "grpc_bridge.h"

namespace mm_bridge {

/// Counts of live bridge objects (`mm_bridge_live_objects`).
struct LiveObjects {
    std::atomic<int64_t> servers{0};
    std::atomic<int64_t> server_calls{0};
    std::atomic<int64_t> channels{0};
    std::atomic<int64_t> client_calls{0};
};
LiveObjects &live_objects();

/// A byte buffer's bytes in one piece: the buffer's own slice when it has one, else a copy.
class ContiguousBytes {
  public:
    explicit ContiguousBytes(const grpc::ByteBuffer &buffer) {
        if (!buffer.Valid()) return;
        if (!buffer.TrySingleSlice(&slice_).ok()) (void)buffer.DumpToSingleSlice(&slice_);
    }
    const uint8_t *data() const { return slice_.size() == 0 ? nullptr : slice_.begin(); }
    size_t size() const { return slice_.size(); }

  private:
    grpc::Slice slice_;
};

/// A byte buffer holding a copy of `bytes`.
inline grpc::ByteBuffer copy_to_buffer(const uint8_t *bytes, size_t length) {
    grpc::Slice slice(bytes == nullptr ? "" : reinterpret_cast<const char *>(bytes), length);
    return grpc::ByteBuffer(&slice, 1);
}

/// Writes `message` into a caller's error buffer.
inline void write_error(char *error, size_t capacity, const std::string &message) {
    if (error == nullptr || capacity == 0) return;
    size_t n = std::min(capacity - 1, message.size());
    std::memcpy(error, message.data(), n);
    error[n] = 0;
}

/// A deadline `nanoseconds` from now as gRPC's clock takes it.
inline std::chrono::system_clock::time_point deadline_after(int64_t nanoseconds) {
    return std::chrono::system_clock::now() + std::chrono::nanoseconds(nanoseconds);
}

}  // namespace mm_bridge
