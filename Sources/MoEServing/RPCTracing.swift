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
