// Channels and generic calls on gRPC's callback API: a unary call is one batch (send, half-close, receive, status);
// a streaming call is a bidirectional reactor whose writes may come from any thread.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/security/credentials.h>

#include <deque>
#include <mutex>

#include "bridge_common.h"

using mm_bridge::live_objects;

struct mm_channel {
    explicit mm_channel(std::shared_ptr<grpc::Channel> channel) : channel(channel), stub(channel) {
        live_objects().channels.fetch_add(1);
    }
    ~mm_channel() { live_objects().channels.fetch_sub(1); }

    std::shared_ptr<grpc::Channel> channel;
    grpc::GenericStub stub;
};

/// One call. Reference-counted: the core's reference ends after `on_done`, the caller's at `mm_client_call_release`.
struct mm_client_call final : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
    mm_client_call(const char *method, mm_client_callbacks callbacks) : method(method), callbacks(callbacks) {
        live_objects().client_calls.fetch_add(1);
    }

    void start_unary(mm_channel *channel, const uint8_t *bytes, size_t length);
    void start_streaming(mm_channel *channel, const uint8_t *bytes, size_t length);
    void write(const uint8_t *bytes, size_t length);
    void close_send();
    void release() {
        if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
    }
    /// The caller's release: a call still running is cancelled (nobody would hear its end).
    void release_by_caller() {
        if (!done_.load(std::memory_order_acquire)) context.TryCancel();
        release();
    }

    void OnReadDone(bool ok) override;
    void OnWriteDone(bool ok) override;
    void OnWritesDoneDone(bool ok) override;
    void OnDone(const grpc::Status &status) override;

    grpc::ClientContext context;
    std::string method;
    mm_client_callbacks callbacks;

  private:
    ~mm_client_call() override { live_objects().client_calls.fetch_sub(1); }
    void deliver(const grpc::ByteBuffer &buffer) {
        mm_bridge::ContiguousBytes bytes(buffer);
        callbacks.on_message(callbacks.context, bytes.data(), bytes.size());
    }
    void finish(const grpc::Status &status) {
        const std::string &message = status.error_message();
        callbacks.on_done(callbacks.context, status.error_code(), message.data(), message.size());
        done_.store(true, std::memory_order_release);
        release();
    }
    /// Starts the next queued write or the half-close; called without `mutex_` held (a reaction may run inline).
    void pump();
    /// Ends the hold that keeps OnDone back while writes may still start from other threads, once none can.
    void release_hold_if_due();

    std::atomic<int> refs_{2};
    std::atomic<bool> done_{false};
    grpc::ByteBuffer unary_request_;
    grpc::ByteBuffer incoming_;

    std::mutex mutex_;
    std::deque<grpc::ByteBuffer> outgoing_;  // front: being written while `writing_`
    bool writing_ = false;
    bool close_requested_ = false;
    bool close_started_ = false;
    bool close_done_ = false;
    bool broken_ = false;  // a write failed or the server ended the call: nothing more is sent
    int starting_ = 0;     // operations being started outside the lock
    bool hold_released_ = false;
};

void mm_client_call::start_unary(mm_channel *channel, const uint8_t *bytes, size_t length) {
    unary_request_ = mm_bridge::copy_to_buffer(bytes, length);
    channel->stub.UnaryCall(
        &context, method, grpc::StubOptions(), &unary_request_, &incoming_, [this](grpc::Status status) {
            if (status.ok()) deliver(incoming_);
            // The core's reference goes first: the caller's outlives `on_done` (it awaits it), so once the caller
            // has heard the end and released the call, nothing of it is left.
            done_.store(true, std::memory_order_release);
            release();
            const std::string &message = status.error_message();
            callbacks.on_done(callbacks.context, status.error_code(), message.data(), message.size());
        });
}

void mm_client_call::start_streaming(mm_channel *channel, const uint8_t *bytes, size_t length) {
    channel->stub.PrepareBidiStreamingCall(&context, method, grpc::StubOptions(), this);
    AddHold();
    if (length > 0) write(bytes, length);
    StartRead(&incoming_);
    StartCall();
}

void mm_client_call::write(const uint8_t *bytes, size_t length) {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (broken_ || close_requested_) return;
        outgoing_.push_back(mm_bridge::copy_to_buffer(bytes, length));
    }
    pump();
}

void mm_client_call::close_send() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (close_requested_) return;
        close_requested_ = true;
    }
    pump();
}

void mm_client_call::pump() {
    enum { nothing, write, writes_done } action = nothing;
    const grpc::ByteBuffer *message = nullptr;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (writing_ || hold_released_) return;
        if (broken_) outgoing_.clear();
        if (!outgoing_.empty()) {
            writing_ = true;
            message = &outgoing_.front();
            action = write;
        } else if (close_requested_ && !close_started_ && !broken_) {
            close_started_ = true;
            action = writes_done;
        }
        if (action != nothing) starting_ += 1;
    }
    if (action == write) StartWrite(message);
    if (action == writes_done) StartWritesDone();
    if (action != nothing) {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            starting_ -= 1;
        }
        release_hold_if_due();
    }
}

void mm_client_call::release_hold_if_due() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (hold_released_ || starting_ > 0 || writing_) return;
        if (!close_done_ && !broken_) return;
        hold_released_ = true;
    }
    RemoveHold();
}

void mm_client_call::OnWriteDone(bool ok) {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        writing_ = false;
        if (!outgoing_.empty()) outgoing_.pop_front();
        if (!ok) broken_ = true;
    }
    pump();
    release_hold_if_due();
}

void mm_client_call::OnWritesDoneDone(bool ok) {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        close_done_ = true;
        if (!ok) broken_ = true;
    }
    release_hold_if_due();
}

void mm_client_call::OnReadDone(bool ok) {
    if (ok) {
        deliver(incoming_);
        incoming_.Clear();
        StartRead(&incoming_);
        return;
    }
    {
        std::lock_guard<std::mutex> lock(mutex_);
        broken_ = true;
    }
    release_hold_if_due();
}

void mm_client_call::OnDone(const grpc::Status &status) { finish(status); }

extern "C" {

mm_channel *mm_channel_create(const mm_channel_options *options, char *error, size_t error_capacity) {
    grpc::ChannelArguments arguments;
    // A connection of its own per channel: the router keeps one per replica and decides itself when to use which.
    arguments.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    if (options->max_receive_message_bytes > 0) arguments.SetMaxReceiveMessageSize(options->max_receive_message_bytes);
    if (options->max_send_message_bytes > 0) arguments.SetMaxSendMessageSize(options->max_send_message_bytes);
    if (options->keepalive_time_ms > 0) {
        arguments.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, options->keepalive_time_ms);
        arguments.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
        arguments.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
    }
    if (options->keepalive_timeout_ms > 0) arguments.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, options->keepalive_timeout_ms);
    // Only the first backoff: the core also takes GRPC_ARG_MIN_RECONNECT_BACKOFF_MS as the shortest time a connection
    // attempt may take (20 s by default), and a short one fails attempts on a busy machine.
    if (options->initial_reconnect_backoff_ms > 0) {
        arguments.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, options->initial_reconnect_backoff_ms);
    }
    if (options->max_reconnect_backoff_ms > 0) {
        arguments.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, options->max_reconnect_backoff_ms);
    }
    std::shared_ptr<grpc::ChannelCredentials> credentials;
    if (options->tls != nullptr) {
        const mm_tls &tls = *options->tls;
        if ((tls.certificate_chain == nullptr) != (tls.private_key == nullptr)) {
            mm_bridge::write_error(error, error_capacity, "a TLS client certificate needs its private key, and back");
            return nullptr;
        }
        grpc::SslCredentialsOptions ssl;
        if (tls.root_certificates != nullptr) ssl.pem_root_certs = tls.root_certificates;
        if (tls.private_key != nullptr) ssl.pem_private_key = tls.private_key;
        if (tls.certificate_chain != nullptr) ssl.pem_cert_chain = tls.certificate_chain;
        credentials = grpc::SslCredentials(ssl);
        if (tls.server_name_override != nullptr) arguments.SetSslTargetNameOverride(tls.server_name_override);
    } else {
        credentials = grpc::InsecureChannelCredentials();
    }
    auto channel = grpc::CreateCustomChannel(options->target, credentials, arguments);
    if (!channel) {
        mm_bridge::write_error(error, error_capacity, std::string("could not open a channel to ") + options->target);
        return nullptr;
    }
    return new mm_channel(channel);
}

void mm_channel_release(mm_channel *channel) { delete channel; }

int mm_channel_state(mm_channel *channel, int try_to_connect) {
    return static_cast<int>(channel->channel->GetState(try_to_connect != 0));
}

mm_client_call *mm_client_call_start(
    mm_channel *channel, const char *method, const mm_metadata_entry *metadata, size_t metadata_count,
    int64_t deadline_nanoseconds_from_now, int wait_for_ready, int streaming, const uint8_t *bytes, size_t length,
    mm_client_callbacks callbacks) {
    auto *call = new mm_client_call(method, callbacks);
    for (size_t i = 0; i < metadata_count; i++) {
        call->context.AddMetadata(
            std::string(metadata[i].key, metadata[i].key_length),
            std::string(metadata[i].value, metadata[i].value_length));
    }
    if (deadline_nanoseconds_from_now > 0) {
        call->context.set_deadline(mm_bridge::deadline_after(deadline_nanoseconds_from_now));
    }
    call->context.set_wait_for_ready(wait_for_ready != 0);
    if (streaming) {
        call->start_streaming(channel, bytes, length);
    } else {
        call->start_unary(channel, bytes, length);
    }
    return call;
}

void mm_client_call_write(mm_client_call *call, const uint8_t *bytes, size_t length) { call->write(bytes, length); }

void mm_client_call_close_send(mm_client_call *call) { call->close_send(); }

void mm_client_call_cancel(mm_client_call *call) { call->context.TryCancel(); }

void mm_client_call_release(mm_client_call *call) { call->release_by_caller(); }

}  // extern "C"
