// Generic servers on gRPC's callback API: every method of every service reaches one reactor type, which hands the
// call and its messages to the callbacks (Swift) and sends what they write.
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/security/server_credentials.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "bridge_common.h"

namespace mm_bridge {
LiveObjects &live_objects() {
    static LiveObjects objects;
    return objects;
}
}  // namespace mm_bridge

using mm_bridge::live_objects;

struct mm_server;

/// One call: a bidirectional reactor whatever the method's kind (a unary call is a stream of one message each way).
/// Reference-counted: the core's reference ends at OnDone, the callbacks' owner's at `mm_server_call_release`.
struct mm_server_call final : public grpc::ServerGenericBidiReactor {
    mm_server_call(mm_server *server, grpc::GenericCallbackServerContext *context);

    void write(const uint8_t *bytes, size_t length, bool then_finish);
    void finish(grpc::Status status);
    void retain() { refs_.fetch_add(1, std::memory_order_relaxed); }
    void release() {
        if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
    }

    void OnReadDone(bool ok) override;
    void OnWriteDone(bool ok) override;
    void OnCancel() override;
    void OnDone() override;

  private:
    ~mm_server_call() override { live_objects().server_calls.fetch_sub(1); }
    /// Starts the next queued write, or the pending finish; called without `mutex_` held (a reaction may run inline).
    void pump();
    /// Starts the next read unless the call is finishing: no operation may start after Finish (the core's call would
    /// be unreffed once too often: `ref_counted.h: prior > 0`). A finish asked for meanwhile waits until StartRead
    /// has returned, then `pump` sends it.
    void read_next();

    mm_server *server_;
    grpc::GenericCallbackServerContext *context_;
    void *call_context_ = nullptr;
    std::atomic<int> refs_{1};
    grpc::ByteBuffer incoming_;
    std::string peer_;

    std::mutex mutex_;
    std::deque<grpc::ByteBuffer> outgoing_;  // front: being written while `writing_`
    bool writing_ = false;
    bool finish_requested_ = false;
    bool finish_with_last_write_ = false;
    bool finished_ = false;  // Finish (or StartWriteAndFinish) called
    bool broken_ = false;    // a write failed or the call was cancelled: nothing more is sent
    bool starting_read_ = false;  // StartRead is being called: Finish waits for it
    grpc::Status finish_status_;
};

namespace {
class GenericService final : public grpc::CallbackGenericService {
  public:
    explicit GenericService(mm_server *server) : server_(server) {}
    grpc::ServerGenericBidiReactor *CreateReactor(grpc::GenericCallbackServerContext *context) override;

  private:
    mm_server *server_;
};
}  // namespace

struct mm_server {
    explicit mm_server(const mm_server_callbacks &callbacks) : callbacks(callbacks), service(this) {
        live_objects().servers.fetch_add(1);
    }
    ~mm_server() { live_objects().servers.fetch_sub(1); }

    mm_server_callbacks callbacks;
    GenericService service;
    std::unique_ptr<grpc::Server> server;
    int port = 0;

    /// Calls one connection (peer address) may have open at once; 0: no limit.
    int max_calls_per_connection = 0;

    std::mutex mutex;
    std::condition_variable calls_changed;
    std::unordered_set<mm_server_call *> calls;
    std::unordered_map<std::string, int> calls_per_peer;
    bool stopping = false;
    std::string stopping_message = "the service is shutting down";
};

grpc::ServerGenericBidiReactor *GenericService::CreateReactor(grpc::GenericCallbackServerContext *context) {
    return new mm_server_call(server_, context);
}

mm_server_call::mm_server_call(mm_server *server, grpc::GenericCallbackServerContext *context)
    : server_(server), context_(context) {
    live_objects().server_calls.fetch_add(1);
    std::string refusal;
    grpc::StatusCode refusal_code = grpc::StatusCode::UNAVAILABLE;
    peer_ = context->peer();
    {
        std::lock_guard<std::mutex> lock(server->mutex);
        server->calls.insert(this);
        int &open = server->calls_per_peer[peer_];
        open += 1;
        if (server->stopping) {
            refusal = server->stopping_message;
        } else if (server->max_calls_per_connection > 0 && open > server->max_calls_per_connection) {
            refusal_code = grpc::StatusCode::RESOURCE_EXHAUSTED;

            refusal = "too many calls at once on this connection: at most " +
                      std::to_string(server->max_calls_per_connection) +
                      " (--max-concurrent-calls); this call is refused, the connection's other calls go on";
        }
    }
    if (!refusal.empty()) {
        finish(grpc::Status(refusal_code, refusal));
        return;
    }
    std::vector<mm_metadata_entry> metadata;
    metadata.reserve(context->client_metadata().size());
    for (const auto &[key, value] : context->client_metadata()) {
        metadata.push_back({key.data(), key.size(), value.data(), value.size()});
    }
    auto deadline = context->deadline();
    int64_t remaining = INT64_MAX;
    if (deadline != std::chrono::system_clock::time_point::max()) {
        remaining = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - std::chrono::system_clock::now())
                        .count();
    }
    retain();  // the callbacks' owner's reference
    const std::string &method = context->method();
    call_context_ = server->callbacks.on_call(
        server->callbacks.context, this, method.data(), method.size(), metadata.data(), metadata.size(), remaining,
        peer_.data(), peer_.size());
    read_next();
}

void mm_server_call::read_next() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (finished_ || finish_requested_) return;
        starting_read_ = true;
    }
    StartRead(&incoming_);
    {
        std::lock_guard<std::mutex> lock(mutex_);
        starting_read_ = false;
    }
    pump();
}

void mm_server_call::OnReadDone(bool ok) {
    if (!ok) {
        server_->callbacks.on_half_close(call_context_);
        return;
    }
    {
        mm_bridge::ContiguousBytes bytes(incoming_);
        server_->callbacks.on_message(call_context_, bytes.data(), bytes.size());
    }
    incoming_.Clear();
    read_next();
}

void mm_server_call::write(const uint8_t *bytes, size_t length, bool then_finish) {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (finished_ || finish_requested_ || broken_) return;
        outgoing_.push_back(mm_bridge::copy_to_buffer(bytes, length));
        if (then_finish) {
            finish_requested_ = true;
            finish_with_last_write_ = true;
            finish_status_ = grpc::Status::OK;
        }
    }
    pump();
}

void mm_server_call::finish(grpc::Status status) {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (finished_ || finish_requested_) return;
        finish_requested_ = true;
        finish_status_ = std::move(status);
    }
    pump();
}

void mm_server_call::pump() {
    enum { nothing, write, write_and_finish, finish } action = nothing;
    const grpc::ByteBuffer *message = nullptr;
    grpc::Status status;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (writing_ || finished_) return;
        if (broken_) outgoing_.clear();
        if (!outgoing_.empty()) {
            bool finishes = outgoing_.size() == 1 && finish_with_last_write_;
            if (finishes && starting_read_) return;  // `read_next` pumps again once its StartRead has returned
            writing_ = true;
            message = &outgoing_.front();
            if (finishes) {
                finished_ = true;
                action = write_and_finish;
                status = finish_status_;
            } else {
                action = write;
            }
        } else if (finish_requested_) {
            if (starting_read_) return;  // `read_next` pumps again once its StartRead has returned
            finished_ = true;
            action = finish;
            status = finish_status_;
        }
    }
    switch (action) {
    case nothing: break;
    case write: StartWrite(message); break;
    case write_and_finish: StartWriteAndFinish(message, grpc::WriteOptions(), status); break;
    case finish: Finish(status); break;
    }
}

void mm_server_call::OnWriteDone(bool ok) {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        writing_ = false;
        if (!outgoing_.empty()) outgoing_.pop_front();
        if (!ok) broken_ = true;
    }
    pump();
}

void mm_server_call::OnCancel() {
    if (call_context_ != nullptr) server_->callbacks.on_cancel(call_context_);
    {
        std::lock_guard<std::mutex> lock(mutex_);
        broken_ = true;
        if (!finish_requested_) {
            finish_requested_ = true;
            finish_with_last_write_ = false;
            finish_status_ = grpc::Status(grpc::StatusCode::CANCELLED, "the call was cancelled");
        }
    }
    pump();
}

void mm_server_call::OnDone() {
    if (call_context_ != nullptr) server_->callbacks.on_done(call_context_);
    // Last touch of the server, under its lock: `mm_server_shutdown` frees it once its set of calls is empty, and
    // by then this call's own reference is gone too.
    mm_server *server = server_;
    std::lock_guard<std::mutex> lock(server->mutex);
    server->calls.erase(this);
    auto open = server->calls_per_peer.find(peer_);
    if (open != server->calls_per_peer.end() && --open->second == 0) server->calls_per_peer.erase(open);
    release();
    server->calls_changed.notify_all();
}

extern "C" {

mm_server *mm_server_start(const mm_server_options *options, char *error, size_t error_capacity) {
    std::shared_ptr<grpc::ServerCredentials> credentials;
    if (options->tls != nullptr) {
        const mm_tls &tls = *options->tls;
        if (tls.certificate_chain == nullptr || tls.private_key == nullptr) {
            mm_bridge::write_error(error, error_capacity, "a TLS server needs a certificate chain and a private key");
            return nullptr;
        }
        grpc::SslServerCredentialsOptions ssl(
            tls.client_auth == MM_CLIENT_AUTH_REQUIRE
                ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                : (tls.client_auth == MM_CLIENT_AUTH_OPTIONAL ? GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY
                                                              : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE));
        if (tls.root_certificates != nullptr) ssl.pem_root_certs = tls.root_certificates;
        ssl.pem_key_cert_pairs.push_back({tls.private_key, tls.certificate_chain});
        credentials = grpc::SslServerCredentials(ssl);
    } else {
        credentials = grpc::InsecureServerCredentials();
    }

    auto server = std::make_unique<mm_server>(options->callbacks);
    grpc::ServerBuilder builder;
    builder.AddListeningPort(options->address, credentials, &server->port);
    if (options->also_address != nullptr) builder.AddListeningPort(options->also_address, credentials);
    builder.RegisterCallbackGenericService(&server->service);
    if (options->max_receive_message_bytes > 0) builder.SetMaxReceiveMessageSize(options->max_receive_message_bytes);
    if (options->max_send_message_bytes > 0) builder.SetMaxSendMessageSize(options->max_send_message_bytes);
    // Two servers must never share a port unnoticed.
    builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    // Not GRPC_ARG_MAX_CONCURRENT_STREAMS: the core closes a whole connection that exceeds it ("Failed parsing
    // HTTP/2"), failing every call on it; the limit is kept per connection here instead, refusing only the calls
    // over it.
    server->max_calls_per_connection = options->max_concurrent_streams;
    if (options->keepalive_time_ms > 0) {
        builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, options->keepalive_time_ms);
        builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    }
    if (options->keepalive_timeout_ms > 0) {
        builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, options->keepalive_timeout_ms);
    }
    if (options->keepalive_min_client_ping_interval_ms > 0) {
        builder.AddChannelArgument(
            GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, options->keepalive_min_client_ping_interval_ms);
        builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
    }
    if (options->max_connection_age_ms > 0) {
        builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS, options->max_connection_age_ms);
        builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS, 30000);
    }
    server->server = builder.BuildAndStart();
    if (!server->server) {
        std::string addresses = options->address;
        if (options->also_address != nullptr) addresses += std::string(" and ") + options->also_address;
        mm_bridge::write_error(
            error, error_capacity, "could not listen on " + addresses + " (in use, or not an address)");
        return nullptr;
    }
    return server.release();
}

int mm_server_port(const mm_server *server) { return server->port; }

void mm_server_shutdown(mm_server *server, int64_t grace_milliseconds, const char *message) {
    auto grace = std::chrono::milliseconds(grace_milliseconds < 0 ? 0 : grace_milliseconds);
    {
        std::lock_guard<std::mutex> lock(server->mutex);
        server->stopping = true;
        if (message != nullptr) server->stopping_message = message;
    }
    // GOAWAY to every client and no new calls; the core waits for the calls in flight (finished below at the
    // latest), cancelling what is left a second after the grace period.
    std::thread stopper([server, grace] {
        server->server->Shutdown(std::chrono::system_clock::now() + grace + std::chrono::seconds(1));
    });
    std::vector<mm_server_call *> remaining;
    {
        std::unique_lock<std::mutex> lock(server->mutex);
        server->calls_changed.wait_for(lock, grace, [server] { return server->calls.empty(); });
        for (mm_server_call *call : server->calls) {
            call->retain();
            remaining.push_back(call);
        }
    }
    for (mm_server_call *call : remaining) {
        call->finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, server->stopping_message));
        call->release();
    }
    stopper.join();
    server->server->Wait();
    {
        // The core may hand the last OnDone to another thread just after Shutdown returns.
        std::unique_lock<std::mutex> lock(server->mutex);
        server->calls_changed.wait(lock, [server] { return server->calls.empty(); });
    }
    server->server.reset();
    delete server;
}

void mm_server_call_write(mm_server_call *call, const uint8_t *bytes, size_t length) {
    call->write(bytes, length, false);
}

void mm_server_call_finish(mm_server_call *call, int code, const char *message, size_t message_length) {
    call->finish(grpc::Status(
        static_cast<grpc::StatusCode>(code), message == nullptr ? std::string() : std::string(message, message_length)));
}

void mm_server_call_write_and_finish(mm_server_call *call, const uint8_t *bytes, size_t length) {
    call->write(bytes, length, true);
}

void mm_server_call_release(mm_server_call *call) { call->release(); }

mm_live_objects mm_bridge_live_objects(void) {
    auto &objects = live_objects();
    return {objects.servers.load(), objects.server_calls.load(), objects.channels.load(), objects.client_calls.load()};
}

}  // extern "C"
