// A C interface to gRPC's C++ core (libgrpc++): generic servers and calls over byte buffers, so that Swift encodes
// and decodes every message (SwiftProtobuf) and the C++ core moves the bytes.
//
// Threads: every callback below runs on a thread of gRPC's core and must not block for long (an expert's decode
// FFN, tens of microseconds to a few milliseconds, is the longest work meant to run inline). Every function below
// may be called from any thread.
//
// Lifetimes: a server call and a client call are reference-counted. The core holds one reference until the call's
// `done` callback has returned; whoever receives a call holds one more and gives it back with the matching
// `_release`. Writing to, finishing or cancelling a call whose RPC is over does nothing.
#ifndef MOEMESH_GRPC_BRIDGE_H
#define MOEMESH_GRPC_BRIDGE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// gRPC status codes (the numbers of the gRPC specification).
enum {
    MM_STATUS_OK = 0,
    MM_STATUS_CANCELLED = 1,
    MM_STATUS_UNKNOWN = 2,
    MM_STATUS_INVALID_ARGUMENT = 3,
    MM_STATUS_DEADLINE_EXCEEDED = 4,
    MM_STATUS_NOT_FOUND = 5,
    MM_STATUS_RESOURCE_EXHAUSTED = 8,
    MM_STATUS_UNIMPLEMENTED = 12,
    MM_STATUS_INTERNAL = 13,
    MM_STATUS_UNAVAILABLE = 14,
    MM_STATUS_UNAUTHENTICATED = 16,
};

/// Whether a TLS server asks for client certificates.
typedef enum {
    MM_CLIENT_AUTH_NONE = 0,      // server-only TLS
    MM_CLIENT_AUTH_OPTIONAL = 1,  // a certificate is verified when sent
    MM_CLIENT_AUTH_REQUIRE = 2,   // mutual TLS
} mm_client_auth;

/// One metadata entry (header): key and value, not NUL-terminated.
typedef struct {
    const char *key;
    size_t key_length;
    const char *value;
    size_t value_length;
} mm_metadata_entry;

/// TLS material as PEM text (NUL-terminated), NULL where absent. A server needs `certificate_chain` and
/// `private_key`; `root_certificates` are the CA it verifies client certificates with. A client verifies servers
/// with `root_certificates` and presents `certificate_chain`/`private_key` when given.
typedef struct {
    const char *certificate_chain;
    const char *private_key;
    const char *root_certificates;
    mm_client_auth client_auth;
    /// Client only: the name the server's certificate must carry instead of the host dialled (also the authority).
    const char *server_name_override;
} mm_tls;

// MARK: - Servers

typedef struct mm_server mm_server;
typedef struct mm_server_call mm_server_call;

/// What a server calls back. `context` is the server's `mm_server_options.context`; `call_context` is what
/// `on_call` returned for that call.
typedef struct {
    void *context;
    /// A call has begun: `method` ("/package.Service/Method"), its metadata, its deadline as nanoseconds from now
    /// (INT64_MAX: none) and the peer's address. Returns the call's context (handed to the call's other callbacks),
    /// and takes a reference to `call` (give it back with `mm_server_call_release`). Called once per call.
    void *(*on_call)(
        void *context, mm_server_call *call, const char *method, size_t method_length,
        const mm_metadata_entry *metadata, size_t metadata_count, int64_t deadline_nanoseconds_from_now,
        const char *peer, size_t peer_length);
    /// A message arrived; `bytes` are valid during the callback only. The call's next message is read once this
    /// returns: work done here holds back that call only (an expert's decode FFN needs no other thread).
    void (*on_message)(void *call_context, const uint8_t *bytes, size_t length);
    /// The client will send nothing more.
    void (*on_half_close)(void *call_context);
    /// The call was cancelled (by its client, its deadline, a broken connection or the server's shutdown).
    void (*on_cancel)(void *call_context);
    /// The call is over; no callback of it follows.
    void (*on_done)(void *call_context);
} mm_server_callbacks;

typedef struct {
    /// "host:port" (port 0: any free port) or "unix:/path".
    const char *address;
    /// A second address serving the same calls (an expert's Unix socket beside its TCP port), or NULL.
    const char *also_address;
    /// Largest message the core accepts or sends, in bytes (0: gRPC's default, 4 MiB).
    int max_receive_message_bytes;
    int max_send_message_bytes;
    /// Calls one connection (one peer address) may have open at once (0: unlimited). A call beyond it is refused
    /// RESOURCE_EXHAUSTED at once, and the connection's other calls go on. (It is not advertised as HTTP/2's
    /// SETTINGS_MAX_CONCURRENT_STREAMS: the core closes a whole connection that exceeds that.)
    int max_concurrent_streams;
    /// Keepalive pings on idle connections, and the ping interval clients may use (milliseconds; 0: gRPC's).
    int keepalive_time_ms;
    int keepalive_timeout_ms;
    int keepalive_min_client_ping_interval_ms;
    /// Connections are closed gracefully (GOAWAY, calls in flight finish) after this age (0: never), so that
    /// clients spread over servers added later.
    int max_connection_age_ms;
    /// TLS, or NULL for plaintext.
    const mm_tls *tls;
    mm_server_callbacks callbacks;
} mm_server_options;

/// Starts a server. On failure returns NULL and writes why into `error` (`error_capacity` bytes).
mm_server *mm_server_start(const mm_server_options *options, char *error, size_t error_capacity);

/// The TCP port the server listens on (the one chosen when 0 was asked), 0 for a Unix socket.
int mm_server_port(const mm_server *server);

/// Stops the server: no new calls (they are refused UNAVAILABLE); calls in flight have `grace_milliseconds` to
/// finish, then each is finished UNAVAILABLE with `message`; returns once every call is done (each `on_done` has
/// returned) and frees the server.
void mm_server_shutdown(mm_server *server, int64_t grace_milliseconds, const char *message);

/// Sends a message on `call`. `bytes` are copied. Messages are sent in the order written.
void mm_server_call_write(mm_server_call *call, const uint8_t *bytes, size_t length);

/// Ends `call` with a status once the messages written before are sent.
void mm_server_call_finish(mm_server_call *call, int code, const char *message, size_t message_length);

/// Sends one message and ends the call OK (a unary answer in one step).
void mm_server_call_write_and_finish(mm_server_call *call, const uint8_t *bytes, size_t length);

void mm_server_call_release(mm_server_call *call);

// MARK: - Channels and client calls

typedef struct mm_channel mm_channel;
typedef struct mm_client_call mm_client_call;

typedef struct {
    /// "host:port" or "unix:/path".
    const char *target;
    int max_receive_message_bytes;
    int max_send_message_bytes;
    int keepalive_time_ms;
    int keepalive_timeout_ms;
    /// The wait before the first reconnection after a failed attempt, doubling (with jitter) up to the maximum
    /// (milliseconds; 0: gRPC's, 1 s and 120 s). A connection attempt itself may take up to 20 s.
    int initial_reconnect_backoff_ms;
    int max_reconnect_backoff_ms;
    const mm_tls *tls;
} mm_channel_options;

/// Opens a channel (connections are made on the first call). On failure returns NULL and writes why.
mm_channel *mm_channel_create(const mm_channel_options *options, char *error, size_t error_capacity);

/// Closes the channel once its calls are done (calls in flight keep running to their end).
void mm_channel_release(mm_channel *channel);

/// Connectivity of a channel: 0 idle, 1 connecting, 2 ready, 3 transient failure, 4 shut down.
int mm_channel_state(mm_channel *channel, int try_to_connect);

/// What a client call calls back (`context` is the call's).
typedef struct {
    void *context;
    /// A response message; `bytes` are valid during the callback only. Messages arrive in order.
    void (*on_message)(void *context, const uint8_t *bytes, size_t length);
    /// The call ended with this status; nothing follows.
    void (*on_done)(void *context, int code, const char *message, size_t message_length);
} mm_client_callbacks;

/// Starts a call of `method` on `channel`. A unary call (`streaming` 0) sends `bytes` and half-closes at once; a
/// streaming call sends `bytes` when `length` > 0 and then what `mm_client_call_write` writes until
/// `mm_client_call_close_send`. `deadline_nanoseconds_from_now` ≤ 0: none. `wait_for_ready` 1: wait for a
/// connection instead of failing while the channel is not ready. Returns the call with a reference for the
/// caller.
mm_client_call *mm_client_call_start(
    mm_channel *channel, const char *method, const mm_metadata_entry *metadata, size_t metadata_count,
    int64_t deadline_nanoseconds_from_now, int wait_for_ready, int streaming, const uint8_t *bytes, size_t length,
    mm_client_callbacks callbacks);

/// Sends a message on a streaming call (copied; sent in the order written).
void mm_client_call_write(mm_client_call *call, const uint8_t *bytes, size_t length);

/// Half-closes a streaming call once the messages written before are sent.
void mm_client_call_close_send(mm_client_call *call);

/// Cancels the call: its server sees the cancellation, `on_done` reports CANCELLED.
void mm_client_call_cancel(mm_client_call *call);

/// Gives back the caller's reference; a call still running is cancelled.
void mm_client_call_release(mm_client_call *call);

// MARK: - The C++ core alone (benchmark floors)

/// Starts a server that answers every call with the messages it receives, in C++ alone: a method whose name ends in
/// "Stream" echoes each message of a stream, any other one message (unary). Stop it with `mm_server_shutdown`.
mm_server *mm_bench_echo_server_start(
    const char *address, int max_message_bytes, char *error, size_t error_capacity);

/// Makes `count` round trips of a `length`-byte message to `target` with gRPC's synchronous C++ API (as a generated
/// stub does), unary calls or one message at a time over one stream, and writes each one's nanoseconds into
/// `nanoseconds`. Returns 0, or the status code of the call that failed.
int mm_bench_echo_client(
    const char *target, const char *method, int streaming, size_t length, int count, int64_t *nanoseconds);

// MARK: - Accounting (tests)

/// Objects of the bridge alive now: servers, server calls, channels, client calls. A server stopped and a channel
/// released with their calls over leave all four as they were before.
typedef struct {
    int64_t servers;
    int64_t server_calls;
    int64_t channels;
    int64_t client_calls;
} mm_live_objects;

mm_live_objects mm_bridge_live_objects(void);

#ifdef __cplusplus
}
#endif

#endif
