import GRPCCore
import MoEDataPlane
import MoEProto
import Synchronization

extension HealthService {
    /// `grpc.health.v1.Health` on a data-plane server: `Check`, `List` and `Watch` (the status now, then each change,
    /// until the process stops or the client goes).
    public var dataPlaneMethods: [String: DataPlaneMethod] {
        [
            "/grpc.health.v1.Health/Check": .inlineUnary { bytes, _ in
                try self.check(DataPlaneCalls.decode(Grpc_Health_V1_HealthCheckRequest.self, Array(bytes)))
                    .serializedBytes()
            },
            "/grpc.health.v1.Health/List": .inlineUnary { _, _ in try self.list().serializedBytes() },
            "/grpc.health.v1.Health/Watch": .bidirectionalStream { _, stream in
                HealthWatch(health: self, stream: stream)
            },
        ]
    }
}

/// One `Watch` call: subscribes on its request, writes each status, ends with the process or the call.
private final class HealthWatch: DataPlaneStreamHandler, Sendable {
    private let health: HealthService
    private let stream: DataPlaneServerStream
    private let watcher = Mutex<Int?>(nil)

    init(health: HealthService, stream: DataPlaneServerStream) {
        self.health = health
        self.stream = stream
    }

    func receive(_ message: UnsafeRawBufferPointer) {
        let request: Grpc_Health_V1_HealthCheckRequest
        do {
            request = try DataPlaneCalls.decode(Grpc_Health_V1_HealthCheckRequest.self, Array(message))
        } catch {
            return self.stream.finish(error)
        }
        let stream = self.stream
        let id = self.health.watch(
            request.service,
            changed: { status in
                if let bytes = try? Grpc_Health_V1_HealthCheckResponse.with({ $0.status = status }).serializedBytes()
                    as [UInt8]
                {
                    stream.write(bytes)
                }
            },
            ended: { stream.finish(RPCError(code: .unavailable, message: "the service is shutting down")) })
        let previous = self.watcher.withLock { watcher in
            defer { watcher = id }
            return watcher
        }
        if let previous { self.health.stopWatching(previous) }
    }

    func inputEnded() {}

    func cancelled() {
        if let id = self.watcher.withLock({ $0 }) { self.health.stopWatching(id) }
    }
}
