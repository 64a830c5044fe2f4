import GRPCCore
import Logging
import ServiceContextModule
import Tracing

/// Trace context in gRPC metadata (W3C `traceparent`/`tracestate` with an OTel tracer; whatever keys the
/// process's instrument uses), and the request id (`x-request-id`) that every log line of a call carries.
public struct GRPCMetadataInjector: Injector {
    public init() {}
    public func inject(_ value: String, forKey key: String, into metadata: inout Metadata) {
        metadata.replaceOrAddString(value, forKey: key)
    }
}

public struct GRPCMetadataExtractor: Extractor {
    public init() {}
    public func extract(key: String, from metadata: Metadata) -> String? {
        metadata[stringValues: key].first(where: { _ in true })
    }
}

/// The id of the client request a call serves, for logs.
public enum RequestIDKey: ServiceContextKey {
    public typealias Value = String
    public static var nameOverride: String? { "x-request-id" }
}

extension ServiceContext {
    public var requestID: String? {
        get { self[RequestIDKey.self] }
        set { self[RequestIDKey.self] = newValue }
    }
}

/// Metadata for an outgoing call made while serving another: the current trace context and request id.
public func propagatedMetadata(tracer: any Tracer) -> Metadata {
    var metadata = Metadata()
    guard let context = ServiceContext.current else { return metadata }
    tracer.inject(context, into: &metadata, using: GRPCMetadataInjector())
    if let id = context.requestID { metadata.replaceOrAddString(id, forKey: "x-request-id") }
    return metadata
}

/// The trace context and request id (`x-request-id`, or a new one) a call's metadata carries, in a service context.
public func incomingContext(_ metadata: Metadata, tracer: any Tracer) -> ServiceContext {
    var serviceContext = ServiceContext.current ?? .topLevel
    tracer.extract(metadata, into: &serviceContext, using: GRPCMetadataExtractor())
    serviceContext.requestID =
        metadata[stringValues: "x-request-id"].first(where: { _ in true })
        ?? String(UInt64.random(in: 0...UInt64.max), radix: 16)
    return serviceContext
}

/// A server span per call (`rpc.system`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code`), child of the trace
/// context in the request's metadata; the request id (`x-request-id`, or a new one) in the task's context. Failed
/// calls are logged with it.
public struct TracingServerInterceptor: ServerInterceptor {
    public let tracer: any Tracer
    public let logger: Logger

    public init(tracer: any Tracer = InstrumentationSystem.tracer, logger: Logger) {
        self.tracer = tracer
        self.logger = logger
    }

    public func intercept<Input: Sendable, Output: Sendable>(
        request: StreamingServerRequest<Input>, context: ServerContext,
        next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
    ) async throws -> StreamingServerResponse<Output> {
        let serviceContext = incomingContext(request.metadata, tracer: self.tracer)
        let requestID = serviceContext.requestID!
        let descriptor = context.descriptor
        return try await self.tracer.withSpan(descriptor.fullyQualifiedMethod, context: serviceContext, ofKind: .server)
        { span in
            span.attributes["rpc.system"] = "grpc"
            span.attributes["rpc.service"] = descriptor.service.fullyQualifiedService
            span.attributes["rpc.method"] = descriptor.method
            span.attributes["moemesh.request_id"] = requestID
            do {
                let response = try await next(request, context)
                if case .failure(let error) = response.accepted {
                    self.failed(span, error.code, error.message, requestID, descriptor)
                }
                return response
            } catch {
                let code = (error as? RPCError)?.code ?? (error as? any RPCErrorConvertible)?.rpcErrorCode ?? .unknown
                let message =
                    (error as? RPCError)?.message ?? (error as? any RPCErrorConvertible)?.rpcErrorMessage ?? "\(error)"
                self.failed(span, code, message, requestID, descriptor)
                throw error
            }
        }
    }

    private func failed(
        _ span: any Span, _ code: RPCError.Code, _ message: String, _ requestID: String, _ descriptor: MethodDescriptor
    ) {
        span.attributes["rpc.grpc.status_code"] = code.rawValue
        span.setStatus(SpanStatus(code: .error, message: message))
        self.logger.warning(
            "call failed",
            metadata: [
                "request_id": "\(requestID)", "method": "\(descriptor.fullyQualifiedMethod)", "code": "\(code)",
                "error": "\(message)",
            ])
    }
}
