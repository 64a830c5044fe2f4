import MoECore
import ArgumentParser
import GRPCCore
import GRPCNIOTransportHTTP2
import MoEProto
import MoEServing

struct Health: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ask a service's gRPC health (grpc.health.v1): prints its status; exits 0 only if SERVING.",
        discussion:
            "For container health checks: 'moemesh health --endpoint 127.0.0.1:50051'. Exit status: 0 SERVING, 1 not serving, 2 unreachable."
    )

    @Option(help: "The service, HOST:PORT.")
    var endpoint: ServiceEndpoint

    @Option(help: "Service name (\"\" for the whole process, or e.g. moemesh.v1.Router).")
    var service: String = ""

    @Option(help: "Give up after this many milliseconds.")
    var timeoutMs: Int = 2000

    @OptionGroup var tls: TLSOptions

    func run() async throws {
        let serving = try self.tls.appliedToClient(ServingConfiguration())
        let status: Grpc_Health_V1_HealthCheckResponse.ServingStatus
        do {
            status = try await serving.withClient(to: self.endpoint) { client in
                try await Grpc_Health_V1_Health.Client(wrapping: client).check(
                    .with { $0.service = self.service },
                    options: serving.callOptions(timeout: .milliseconds(self.timeoutMs))
                ).status
            }
        } catch let error as RPCError {
            print("\(self.endpoint): \(error.code): \(error.message)")
            throw ExitCode(2)
        }
        print("\(self.endpoint)\(self.service.isEmpty ? "" : " \(self.service)"): \(Self.name(status))")
        if status != .serving { throw ExitCode(1) }
    }

    static func name(_ status: Grpc_Health_V1_HealthCheckResponse.ServingStatus) -> String {
        switch status {
        case .serving: "SERVING"
        case .notServing: "NOT_SERVING"
        case .serviceUnknown: "SERVICE_UNKNOWN"
        case .unknown: "UNKNOWN"
        case .UNRECOGNIZED(let value): "UNRECOGNIZED(\(value))"
        }
    }
}
