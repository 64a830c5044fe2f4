import GRPCCore
import Logging
import MoEDataPlane
import SwiftProtobuf
import Tracing

/// What every data-plane call of a service shares, in one place for unary calls and for the calls a stream
/// carries alike: a server span (child of the trace context in the call's metadata, with its request id), the
/// request and error counters (`moemesh_rpc_requests_total`, `moemesh_rpc_errors_total`), the caller's deadline
/// as `RequestDeadline.current`, and a log line for each failure.
public struct DataPlaneCalls: Sendable {
    public let metrics: ServiceMetrics
    /// `expert`, `router`: the `service` label of the counters.
    public let service: String
    public let tracer: any Tracer
    public let logger: Logger

    public init(
        metrics: ServiceMetrics, service: String, tracer: any Tracer = InstrumentationSystem.tracer, logger: Logger
    ) {
        self.metrics = metrics
        self.service = service
        self.tracer = tracer
        self.logger = logger
    }

    /// Serves one call of `method` (`moemesh.v1.Expert/Compute`): `body` in a server span, under `deadline`, with
    /// the call counted and its failure counted and logged. `streamed`: the call is one message of a stream.
    public func serve<Result: Sendable>(
        _ method: String, metadata: Metadata, deadline: ContinuousClock.Instant?, streamed: Bool = false,
        _ body: @Sendable () async throws -> Result
    ) async throws -> Result {
        let shortName = method.split(separator: "/").last.map(String.init) ?? method
        self.metrics.counter("moemesh_rpc_requests_total", [("service", self.service), ("method", shortName)])
            .increment()
        let serviceContext = incomingContext(metadata, tracer: self.tracer)
        let requestID = serviceContext.requestID!
        return try await self.tracer.withSpan(method, context: serviceContext, ofKind: .server) { span in
            span.attributes["rpc.system"] = "grpc"
            span.attributes["rpc.service"] = String(method.prefix { $0 != "/" })
            span.attributes["rpc.method"] = shortName
            span.attributes["moemesh.request_id"] = requestID
            if streamed { span.attributes["moemesh.stream"] = true }
            do {
                return try await RequestDeadline.$current.withValue(deadline) { try await body() }
            } catch {
                let status = RPCError(answering: error)
                span.attributes["rpc.grpc.status_code"] = status.code.rawValue
                span.setStatus(SpanStatus(code: .error, message: status.message))
                self.metrics.counter(
                    "moemesh_rpc_errors_total",
                    [("service", self.service), ("method", shortName), ("code", "\(status.code)")]
                ).increment()
                self.logger.warning(
                    "call failed",
                    metadata: [
                        "request_id": "\(requestID)", "method": "\(method)", "code": "\(status.code)",
                        "error": "\(status.message)",
                    ])
                throw status
            }
        }
    }

    /// A unary method (`path`: `/moemesh.v1.Expert/Compute`) that decodes its `Request`, serves it (`serve`) and
    /// encodes the answer: an entry of a `DataPlaneServer`'s method table.
    public func unary<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
        _ path: String, _ body: @escaping @Sendable (Request, DataPlaneCallContext) async throws -> Response
    ) -> (String, DataPlaneMethod) {
        let method = String(path.dropFirst())
        return (
            path,
            .unary { bytes, context in
                let request = try Self.decode(Request.self, bytes)
                let response = try await self.serve(method, metadata: context.metadata, deadline: context.deadline) {
                    try await body(request, context)
                }
                return try response.serializedBytes()
            }
        )
    }

    /// `bytes` as a `Message`, or INVALID_ARGUMENT naming the type expected.
    public static func decode<Message: SwiftProtobuf.Message>(
        _ type: Message.Type, _ bytes: some SwiftProtobufContiguousBytes
    ) throws(RPCError) -> Message {
        do {
            return try Message(serializedBytes: bytes)
        } catch {
            throw RPCError(
                code: .invalidArgument, message: "Can't deserialize to message of type \(Message.self): \(error)")
        }
    }
}
