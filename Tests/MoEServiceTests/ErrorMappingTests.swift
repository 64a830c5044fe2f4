import GRPCCore
import MoECore
import MoEExpert
import MoERouter
import MoEServing
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
    ]

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
    ]

    @Test("expert errors", arguments: expertCases)
    func expertErrors(error: ExpertError, code: RPCError.Code, message: String) {
        #expect(error.rpcErrorCode == code)
        #expect(error.rpcErrorMessage == message)
    }
}
