import ArgumentParser
import MoECore
import MoERouter
import MoEServing
import ServiceLifecycle

#if canImport(Glibc)
    import Glibc
#endif

struct Router: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Serve the public router API (gRPC moemesh.v1.Router) over expert services: fixed (--expert) or a coordinator's (--coordinator)."
    )

    @Option(help: "Model folder (config.json + *.safetensors); the router holds every MoE layer's gate.")
    var model: String

    @Option(name: .customLong("expert"), help: "An expert service, HOST:PORT (repeat for each).")
    var experts: [ServiceEndpoint] = []

    @Option(
        help:
            "Follow this coordinator's topology (HOST:PORT) instead of --expert services; demand is reported to it and experts scaled to zero are started through it."
    )
    var coordinator: ServiceEndpoint?

    @Option(help: "Name of this router in the coordinator's status (default: $POD_NAME, else router-PID).")
    var routerId: String?

    @Option(help: "Address to listen on.")
    var host: String = "127.0.0.1"

    @Option(help: "Port to listen on (0: any free port, printed in the ready line).")
    var port: Int = RouterConfiguration.defaultPort

    @Option(help: "Deadline of one expert call, in milliseconds.")
    var expertTimeoutMs: Int = 30_000

    @Option(help: "How long to wait at start for every expert service to answer, in seconds.")
    var discoveryTimeoutS: Int = 60

    @Option(help: "Dtype of the rows sent to experts: f32, bf16 or f16.")
    var expertWireDtype: DType = .f32

    @Option(help: "Dynamic batching of concurrent calls for the same layer: on or off.")
    var batching: BatchingSwitch = .on

    @Option(help: "Most rows in one batch.")
    var batchMaxTokens: Int = 4096

    @Option(help: "How long a batch leader waits for more calls under concurrent load, in microseconds.")
    var batchDelayUs: Int = 2000

    @Option(help: "Batches of one layer running at once (a batch held up by a slow expert holds up only its calls).")
    var batchConcurrency: Int = 2

    @Option(
        help:
            "How expert calls travel: stream (one long-lived ComputeStream per replica, calls multiplexed) or unary (one RPC each)."
    )
    var expertCalls: ExpertCalls = .stream

    @Option(
        help:
            "Reach replicas on this host that listen on a Unix domain socket through it (on), or always over TCP (off)."
    )
    var unixSockets: BatchingSwitch = .on

    @Option(
        help:
            "Send an expert call that is slow to answer to a second replica as well (on or off); the first answer wins."
    )
    var hedging: BatchingSwitch = .on

    @Option(
        help: "Hedge delay: this many times the p95 of the expert's recent call latencies (for calls of that size).")
    var hedgeFactor: Double = 2

    @Option(help: "Shortest hedge delay, in ms.")
    var hedgeFloorMs: Int = 5

    @Option(help: "Longest hedge delay (and the delay until 16 latencies are known), in ms.")
    var hedgeCeilingMs: Int = 250

    @Option(help: "Hedges allowed per expert call (0.1: at most 10% more calls).")
    var hedgeBudget: Double = 0.1

    @Option(help: "Eject a replica from this router's choice after it lost this many hedges in a row.")
    var ejectAfterHedgeLosses: Int = 3

    @Option(help: "How long an ejected replica is left out, in ms (doubled each time it is ejected again, up to 30 s).")
    var ejectionMs: Int = 1000

    @Option(help: "Largest message, in MiB.")
    var maxMessageMib: Int = 256

    @Option(
        help:
            "Close a client's connection gracefully (GOAWAY; its calls and streams finish) after this many seconds, so that clients reconnect and spread over routers added since (an HPA's); 0: never."
    )
    var maxConnectionAgeS: Double = 300

    @Option(help: .hidden)
    var parentPid: Int32?

    @OptionGroup var routing: RoutingOptions
    @OptionGroup var auth: ServiceAuthOptions
    @OptionGroup var limits: ConnectionLimitOptions
    @OptionGroup var dataPlane: DataPlaneOptions
    @OptionGroup var tls: TLSOptions
    @OptionGroup var http: HTTPOptions
    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        let logger = try self.logging.bootstrap(label: "moemesh.router")
        let configuration = RouterConfiguration(
            modelPath: self.model, expertEndpoints: self.experts,
            expertTimeout: .milliseconds(self.expertTimeoutMs), discoveryTimeout: .seconds(self.discoveryTimeoutS),
            expertWireDType: self.expertWireDtype, routing: try self.routing.configuration(),
            batching: self.batching == .off
                ? nil
                : ForwardBatcher.Configuration(
                    maxTokens: self.batchMaxTokens, maxDelay: .microseconds(self.batchDelayUs),
                    maxConcurrentBatches: self.batchConcurrency),
            replicas: ReplicaScheduler.Configuration(
                hedging: self.hedging == .on, hedgeFactor: self.hedgeFactor,
                hedgeFloor: .milliseconds(self.hedgeFloorMs),
                hedgeCeiling: .milliseconds(self.hedgeCeilingMs), hedgeBudget: self.hedgeBudget,
                ejectAfterHedgeLosses: self.ejectAfterHedgeLosses, ejectionTime: .milliseconds(self.ejectionMs)),
            expertStreams: self.expertCalls == .stream, unixSockets: self.unixSockets == .on,
            serving: try self.tls.appliedToService(
                self.auth.applied(
                    to: self.dataPlane.applied(
                        to: self.limits.applied(
                            to: ServingConfiguration(
                                host: self.host, port: self.port, maxMessageBytes: self.maxMessageMib << 20,
                                maxConnectionAge: try self.maxConnectionAge))))),
            coordinator: self.coordinator,
            routerID: self.routerId ?? getenv("POD_NAME").map { String(cString: $0) } ?? "router-\(getpid())")
        if self.coordinator != nil && !self.experts.isEmpty {
            throw ValidationError(
                "--expert and --coordinator: give one or the other (with a coordinator, replicas come from its topology)"
            )
        }
        configuration.serving.warnIfPlaintextBeyondLoopback(logger)
        self.http.bootstrapMetrics()
        let services = try buildRouterServices(configuration: configuration, logger: logger)
        let http =
            self.http.metricsEndpoint(serving: configuration.serving, logger: logger).map { [$0 as any Service] } ?? []
        let tracing = try Observability.tracingService(serviceName: "moemesh-router", logger: logger).map { [$0] } ?? []
        try await runServiceGroup(services: tracing + http + services, parentPID: self.parentPid, logger: logger)
    }
}

enum BatchingSwitch: String, ExpressibleByArgument {
    case on, off
}

enum ExpertCalls: String, ExpressibleByArgument {
    case stream, unary
}

extension Router {
    /// `--max-connection-age-s` as a duration (nil: never).
    fileprivate var maxConnectionAge: Duration? {
        get throws {
            guard self.maxConnectionAgeS >= 0, self.maxConnectionAgeS <= 86_400 else {
                throw ValidationError(
                    "--max-connection-age-s: expected 0 to 86400 seconds, got \(self.maxConnectionAgeS)")
            }
            return self.maxConnectionAgeS == 0 ? nil : .milliseconds(Int64(self.maxConnectionAgeS * 1000))
        }
    }
}
