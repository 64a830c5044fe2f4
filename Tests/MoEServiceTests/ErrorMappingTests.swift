import GRPCCore
import MoECore
import MoEExpert
import MoERouter
import MoEServing
import MoEWire
import Testing

@Suite("service errors map to gRPC status codes")
struct ErrorMappingTests {
    static let address = ExpertAddress(layer: "0", expert: 3)
    static let endpoint = ServiceEndpoint(host: "127.0.0.1", port: 5000)

    static let routerCases: [(RouterError, RPCError.Code, String)] = [
        (
            .invalidInput(.hiddenSize(field: "hidden_states", expected: 4096, got: 4095)), .invalidArgument,
            "hidden_states: hidden size: expected 4096, got 4095"
        ),
        (
            .invalidInput(.emptyBatch(field: "hidden_states", shape: [0, 8])), .invalidArgument,
            "hidden_states: empty batch: expected at least one token, got shape [0, 8]"
        ),
        (
            .unknownLayer("7", known: ["0", "1"]), .notFound,
            "layer '7' is not an MoE layer of this model; MoE layers: 0, 1"
        ),
        (.noReplica(address), .unavailable, "no replica of layer 0 expert 3 is known to this router"),
        (
            .expertUnavailable(address, endpoint: endpoint, reason: "connection refused"), .unavailable,
            "layer 0 expert 3 at 127.0.0.1:5000 is unavailable: connection refused"
        ),
        (
            .expertFailed(address, endpoint: endpoint, reason: "answered 2 rows for the 3 sent"), .internalError,
            "layer 0 expert 3 at 127.0.0.1:5000 failed: answered 2 rows for the 3 sent"
        ),
        (
            .routing(.tokenIDCount(expected: 3, got: 2)), .invalidArgument,
            RoutingError.tokenIDCount(expected: 3, got: 2).description
        ),
        (
            .notReady("waiting for expert replicas"), .unavailable,
            "the router is not ready yet: waiting for expert replicas"
        ),
        (
            .coldStartFailed(address, reason: "no scaler"), .unavailable,
            "layer 0 expert 3 has no replica and could not be started: no scaler"
        ),
        (
            .expertRejectedInput(address, reason: "rows: too large"), .invalidArgument,
            "hidden_states refused by layer 0 expert 3: rows: too large"
        ),
        (
            .deadlineExceeded(address, tried: 2), .deadlineExceeded,
            "the call's deadline passed before layer 0 expert 3 answered (2 replicas tried)"
        ),
        (
            .expertOverloaded(address, endpoint: endpoint, reason: "busy"), .resourceExhausted,
            "layer 0 expert 3 at 127.0.0.1:5000 refused: busy"
        ),
    ]

    @Test("the router table covers every RouterError case")
    func routerTableIsComplete() {
        let covered = Set(Self.routerCases.map { Self.caseName($0.0) })
        #expect(
            covered == [
                "invalidInput", "routing", "unknownLayer", "notReady", "noReplica", "coldStartFailed",
                "expertUnavailable", "expertFailed", "expertRejectedInput", "deadlineExceeded", "expertOverloaded",
            ])
    }

    @Test("the expert table covers every ExpertError case")
    func expertTableIsComplete() {
        let covered = Set(Self.expertCases.map { Self.caseName($0.0) })
        #expect(
            covered == [
                "invalidInput", "unknownExpert", "loadFailed", "computeFailed", "cancelled", "tooLarge",
                "invalidParts", "overloaded",
            ])
    }

    /// An enum case's name (`.notReady("…")` → "notReady").
    static func caseName(_ value: Any) -> String {
        String(String(describing: value).prefix { $0 != "(" })
    }

    @Test("router errors", arguments: routerCases)
    func routerErrors(error: RouterError, code: RPCError.Code, message: String) {
        #expect(error.rpcErrorCode == code)
        #expect(error.rpcErrorMessage == message)
    }

    static let expertCases: [(ExpertError, RPCError.Code, String)] = [
        (
            .invalidInput(.nonFinite(field: "rows", value: .nan, row: 2, column: 5)), .invalidArgument,
            "rows: expected finite values, got nan at token 2, column 5"
        ),
        (
            .invalidInput(.tensor(field: "rows", .byteCount(dtype: .bf16, shape: [2, 4], expected: 16, got: 15))),
            .invalidArgument, "rows: data length: expected 16 bytes for bf16 [2, 4], got 15"
        ),
        (
            .unknownExpert(address, hosted: "layer 0 experts 0-2"), .notFound,
            "layer 0 expert 3 is not hosted by this expert service; it hosts layer 0 experts 0-2"
        ),
        (
            .loadFailed(address, reason: "no such file"), .internalError,
            "layer 0 expert 3 could not be loaded: no such file"
        ),
        (
            .computeFailed(address, reason: "out of memory"), .internalError,
            "layer 0 expert 3 failed on the device: out of memory"
        ),
        (.cancelled(address), .cancelled, "the call to layer 0 expert 3 was cancelled by its caller before it ran"),
        (
            .tooLarge(PayloadTooLarge(field: "rows", bytes: 3 << 20, limit: 1 << 20)), .resourceExhausted,
            "rows: 3.0 MiB, above this service's limit of 1.0 MiB (--max-message-mib); send fewer tokens per call"
        ),
        (.invalidParts("row_counts [1] must sum to 2"), .invalidArgument, "row_counts [1] must sum to 2"),
        (
            .overloaded(Overloaded(service: "expert", reason: "busy")), .resourceExhausted,
            "the expert is overloaded, so it refused this call at once: busy"
        ),
    ]

    @Test("expert errors", arguments: expertCases)
    func expertErrors(error: ExpertError, code: RPCError.Code, message: String) {
        #expect(error.rpcErrorCode == code)
        #expect(error.rpcErrorMessage == message)
    }
}
