import GRPCCore
import CoreMetrics
import Logging
import MoEDataPlane
import ServiceContextModule
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

    /// One method of the service, with its request counter made once (`calls.method(...)`, when the method table is
    /// built), so that a call increments a handle instead of looking one up by name.
    public struct Method: Sendable {
        /// `moemesh.v1.Expert/Compute`.
        public let name: String
        /// `Compute`: the counters' `method` label.
        let shortName: String
        let requests: Counter
    }

    public init(
        metrics: ServiceMetrics, service: String, tracer: any Tracer = InstrumentationSystem.tracer, logger: Logger
    ) {
        self.metrics = metrics
        self.service = service
        self.tracer = tracer
        self.logger = logger
    }

    /// `name` (`moemesh.v1.Expert/Compute`) with its request counter.
    public func method(_ name: String) -> Method {
        let shortName = name.split(separator: "/").last.map(String.init) ?? name
        return Method(
            name: name, shortName: shortName,
            requests: self.metrics.counter(
                "moemesh_rpc_requests_total", [("service", self.service), ("method", shortName)]))
    }

    /// Serves one call of `method`: `body` in a server span, under `deadline`, with the call counted and its failure
    /// counted and logged. `streamed`: the call is one message of a stream.
    public func serve<Result: Sendable>(
        _ method: Method, metadata: Metadata, deadline: ContinuousClock.Instant?, streamed: Bool = false,
        _ body: @Sendable () async throws -> Result
    ) async throws -> Result {
        method.requests.increment()
        let serviceContext = incomingContext(metadata, tracer: self.tracer)
        return try await self.tracer.withSpan(method.name, context: serviceContext, ofKind: .server) { span in
            self.describe(span, method: method, serviceContext: serviceContext, streamed: streamed)
            do {
                return try await RequestDeadline.$current.withValue(deadline) { try await body() }
            } catch {
                throw self.failed(error, span: span, method: method, serviceContext: serviceContext)
            }
        }
    }

    private func describe(_ span: any Span, method: Method, serviceContext: ServiceContext, streamed: Bool) {
        span.attributes["rpc.system"] = "grpc"
        span.attributes["rpc.service"] = String(method.name.prefix { $0 != "/" })
        span.attributes["rpc.method"] = method.shortName
        span.attributes["moemesh.request_id"] = serviceContext.requestID
        if streamed { span.attributes["moemesh.stream"] = true }
    }

    /// Records a failed call (span status, error counter, a log line) and returns the status it ends with.
    private func failed(_ error: any Error, span: any Span, method: Method, serviceContext: ServiceContext) -> RPCError
    {
        let status = RPCError(answering: error)
        span.attributes["rpc.grpc.status_code"] = status.code.rawValue
        span.setStatus(SpanStatus(code: .error, message: status.message))
        // Looked up by name: a failure's code is known only now, and failures are the exception.
        self.metrics.counter(
            "moemesh_rpc_errors_total",
            [("service", self.service), ("method", method.shortName), ("code", "\(status.code)")]
        ).increment()
        self.logger.warning(
            "call failed",
            metadata: [
                "request_id": "\(serviceContext.requestID ?? "")", "method": "\(method.name)",
                "code": "\(status.code)", "error": "\(status.message)",
            ])
        return status
    }

    /// `serve` for a call answered on the calling thread (the transport's): the same span, counters and log.
    public func serveNow<Result>(
        _ method: Method, metadata: Metadata, deadline: ContinuousClock.Instant?, streamed: Bool = false,
        _ body: () throws -> Result
    ) throws -> Result {
        method.requests.increment()
        let serviceContext = incomingContext(metadata, tracer: self.tracer)
        return try self.tracer.withSpan(method.name, context: serviceContext, ofKind: .server) { span in
            self.describe(span, method: method, serviceContext: serviceContext, streamed: streamed)
            do {
                if let deadline, deadline <= .now {
                    throw RPCError(
                        code: .deadlineExceeded, message: "the request's deadline passed before it was answered")
                }
                return try body()
            } catch {
                throw self.failed(error, span: span, method: method, serviceContext: serviceContext)
            }
        }
    }

    /// A unary method (`path`: `/moemesh.v1.Expert/Compute`) answered on the transport's thread when `now` offers a
    /// job (synchronous work that can start at once), else by `later` in a task; served as `unary` is.
    public func unary<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
        _ path: String, now: @escaping @Sendable (Request, DataPlaneCallContext) -> (() throws -> Response)?,
        later: @escaping @Sendable (Request, DataPlaneCallContext) async throws -> Response
    ) -> (String, DataPlaneMethod) {
        let method = self.method(String(path.dropFirst()))
        let (_, asyncMethod) = self.unary(path, later)
        guard case .unary(let laterBytes) = asyncMethod else { preconditionFailure("unary makes a .unary method") }
        return (
            path,
            .unaryInlineFirst(
                now: { bytes, context in
                    let request = try Self.decode(Request.self, Array(bytes))
                    guard let job = now(request, context) else { return nil }
                    return try self.serveNow(method, metadata: context.metadata, deadline: context.deadline) {
                        try job()
                    }.serializedBytes()
                }, later: laterBytes)
        )
    }

    /// A unary method (`path`: `/moemesh.v1.Expert/Compute`) that decodes its `Request`, serves it (`serve`) and
    /// encodes the answer: an entry of a `DataPlaneServer`'s method table.
    public func unary<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
        _ path: String, _ body: @escaping @Sendable (Request, DataPlaneCallContext) async throws -> Response
    ) -> (String, DataPlaneMethod) {
        let method = self.method(String(path.dropFirst()))
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
