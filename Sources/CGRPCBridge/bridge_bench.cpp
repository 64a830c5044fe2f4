// The C++ core alone, for the benchmark floors: an echo server whose callbacks are C++ and a client on gRPC's
// synchronous API (what generated C++ stubs use).
#include <grpcpp/impl/codegen/client_unary_call.h>
#include <grpcpp/impl/codegen/rpc_method.h>
#include <grpcpp/impl/codegen/sync_stream.h>

#include <chrono>
#include <string>
#include <vector>

#include "bridge_common.h"

namespace {
struct EchoCall {
    mm_server_call *call;
    bool streaming;
};

void *echo_on_call(
    void *, mm_server_call *call, const char *method, size_t method_length, const mm_metadata_entry *, size_t,
    int64_t, const char *, size_t) {
    std::string name(method, method_length);
    bool streaming = name.size() >= 6 && name.compare(name.size() - 6, 6, "Stream") == 0;
    return new EchoCall{call, streaming};
}

void echo_on_message(void *context, const uint8_t *bytes, size_t length) {
    auto *echo = static_cast<EchoCall *>(context);
    if (echo->streaming) {
        mm_server_call_write(echo->call, bytes, length);
    } else {
        mm_server_call_write_and_finish(echo->call, bytes, length);
    }
}

void echo_on_half_close(void *context) {
    auto *echo = static_cast<EchoCall *>(context);
    if (echo->streaming) mm_server_call_finish(echo->call, MM_STATUS_OK, nullptr, 0);
}

void echo_on_cancel(void *) {}

void echo_on_done(void *context) {
    auto *echo = static_cast<EchoCall *>(context);
    mm_server_call_release(echo->call);
    delete echo;
}
}  // namespace

extern "C" {

mm_server *mm_bench_echo_server_start(const char *address, int max_message_bytes, char *error, size_t error_capacity) {
    mm_server_options options{};
    options.address = address;
    options.max_receive_message_bytes = max_message_bytes;
    options.max_send_message_bytes = max_message_bytes;
    // As the data plane's servers (DataPlaneServer.Configuration.minClientPingInterval): a channel's keepalive pings
    // on an idle connection are welcome, not struck out with a GOAWAY (too_many_pings) after the core's default 5 min.
    options.keepalive_min_client_ping_interval_ms = 5000;
    options.callbacks = {nullptr, echo_on_call, echo_on_message, echo_on_half_close, echo_on_cancel, echo_on_done};
    return mm_server_start(&options, error, error_capacity);
}

int mm_bench_echo_client(
    const char *target, const char *method, int streaming, size_t length, int count, int64_t *nanoseconds) {
    grpc::ChannelArguments arguments;
    arguments.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    arguments.SetMaxReceiveMessageSize(64 << 20);
    arguments.SetMaxSendMessageSize(64 << 20);
    auto channel = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), arguments);
    std::vector<uint8_t> payload(length, 7);
    grpc::ByteBuffer request = mm_bridge::copy_to_buffer(payload.data(), payload.size());
    using Clock = std::chrono::steady_clock;
    if (!streaming) {
        grpc::internal::RpcMethod rpc(method, grpc::internal::RpcMethod::NORMAL_RPC);
        for (int i = 0; i < count; i++) {
            grpc::ClientContext context;
            context.set_wait_for_ready(true);
            grpc::ByteBuffer response;
            auto start = Clock::now();
            grpc::Status status =
                grpc::internal::BlockingUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(
                    channel.get(), rpc, &context, request, &response);
            nanoseconds[i] = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count();
            if (!status.ok()) return status.error_code();
        }
        return 0;
    }
    grpc::internal::RpcMethod rpc(method, grpc::internal::RpcMethod::BIDI_STREAMING);
    grpc::ClientContext context;
    context.set_wait_for_ready(true);
    std::unique_ptr<grpc::ClientReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>> stream(
        grpc::internal::ClientReaderWriterFactory<grpc::ByteBuffer, grpc::ByteBuffer>::Create(
            channel.get(), rpc, &context));
    grpc::ByteBuffer response;
    for (int i = 0; i < count; i++) {
        auto start = Clock::now();
        if (!stream->Write(request) || !stream->Read(&response)) break;
        nanoseconds[i] = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count();
    }
    stream->WritesDone();
    grpc::Status status = stream->Finish();
    return status.error_code();
}

}  // extern "C"
