import ArgumentParser
import Logging
import MoECore
import MoEDataPlane
import MoEServing

#if canImport(Glibc)
    import Glibc
#endif

struct LoggingOptions: ParsableArguments {
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    func bootstrap(label: String) throws -> Logger {
        guard let level = Logger.Level(rawValue: self.logLevel) else {
            throw ValidationError(
                "--log-level: expected one of trace, debug, info, notice, warning, error, critical, got '\(self.logLevel)'"
            )
        }
        bootstrapLogging(level: level)
        return Logger(label: label)
    }
}

extension ServiceEndpoint: ExpressibleByArgument {
    public init?(argument: String) { self.init(argument) }
}

extension DType: ExpressibleByArgument {}

/// An error printed as its message alone (no usage text).
struct CommandFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// `--http-port`: plain HTTP for operators (`/metrics`; on the coordinator also the status page).
struct HTTPOptions: ParsableArguments {
    @Option(
        help:
            "Serve /metrics (Prometheus) over HTTP on this port (0: any free port, printed as 'http listening on HOST:PORT'); the coordinator also serves its status page (/) and /status.json there. Default: none."
    )
    var httpPort: Int?

    /// The process's metrics go to the Prometheus registry served at `/metrics`.
    func bootstrapMetrics() { PrometheusExport.bootstrap() }

    /// An HTTP service with `/metrics` alone (routers and experts), if a port was given; HTTPS with the service's
    /// own TLS files.
    func metricsEndpoint(serving: ServingConfiguration, logger: Logger) -> HTTPEndpoint? {
        guard let port = self.httpPort else { return nil }
        let (path, route) = PrometheusExport.route()
        return HTTPEndpoint(
            host: serving.host, port: port, routes: [path: route], logger: logger, tls: serving.tls,
            onListening: { ReadyLine.print(role: "http", endpoint: $0) })
    }
}

/// `--token-file` (or `$MOEMESH_TOKEN`): the bearer token this command sends with its calls.
struct TokenOptions: ParsableArguments {
    @Option(help: "A file holding the bearer token to send with each call (default: $MOEMESH_TOKEN; else none).")
    var tokenFile: String?

    func token() throws -> String? {
        if let path = self.tokenFile { return try AuthTokens.readToken(path: path) }
        guard let value = getenv("MOEMESH_TOKEN").map({ String(cString: $0) }), !value.isEmpty else { return nil }
        return value
    }

    /// `serving` sending this command's token.
    func applied(to serving: ServingConfiguration) throws -> ServingConfiguration {
        var serving = serving
        serving.token = try self.token()
        return serving
    }
}

/// `--auth-tokens`: the bearer tokens this service accepts; `--token-file`: the one it sends on its own calls.
struct ServiceAuthOptions: ParsableArguments {
    @Option(
        help:
            "Accept calls only with a bearer token from this file: lines 'ROLE TOKEN', roles client, admin, mesh (health checks stay open); reloaded when it changes or on SIGHUP. Default: no authentication."
    )
    var authTokens: String?

    @OptionGroup var outgoing: TokenOptions

    /// The same options for the replicas a local scaler starts: they accept the same tokens and send the same one.
    var replicaArguments: [String] {
        (self.authTokens.map { ["--auth-tokens", $0] } ?? [])
            + (self.outgoing.tokenFile.map { ["--token-file", $0] } ?? [])
    }

    /// `serving` with the tokens it accepts and the token it sends.
    func applied(to serving: ServingConfiguration) throws -> ServingConfiguration {
        var serving = try self.outgoing.applied(to: serving)
        if let path = self.authTokens {
            do { serving.acceptedTokens = try AuthTokens(path: path) } catch {
                throw ValidationError("--auth-tokens: \(error)")
            }
        }
        return serving
    }
}

/// `--max-concurrent-calls`: how many calls one client connection may have open at once.
struct ConnectionLimitOptions: ParsableArguments {
    @Option(
        help:
            "Calls one client connection may have open at once: on a router or expert one more is refused RESOURCE_EXHAUSTED at once, the connection's other calls going on; the coordinator advertises it as HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS (gRPC clients queue beyond it; a client that opens more anyway loses its connection)."
    )
    var maxConcurrentCalls: Int = ServingConfiguration.defaultMaxConcurrentCallsPerConnection

    func applied(to serving: ServingConfiguration) throws -> ServingConfiguration {
        guard self.maxConcurrentCalls >= 1 else {
            throw ValidationError("--max-concurrent-calls: expected at least 1, got \(self.maxConcurrentCalls)")
        }
        var serving = serving
        serving.maxConcurrentCallsPerConnection = self.maxConcurrentCalls
        return serving
    }
}

/// `--max-inflight-mib`, `--drain-timeout-s`: a router's or expert's data plane under overload and at shutdown.
struct DataPlaneOptions: ParsableArguments {
    @Option(
        help:
            "Request bytes (MiB) that the calls in flight may hold together; a call beyond it is refused RESOURCE_EXHAUSTED at once (a call alone is always admitted). Calls that could not meet their deadline behind those in flight are refused at once too."
    )
    var maxInflightMib: Int = LoadShedder.Configuration().maxInFlightBytes >> 20

    @Option(
        help:
            "On SIGTERM: health turns NOT_SERVING, new calls go elsewhere (GOAWAY), and the calls in flight get this many seconds to finish; what is left is answered UNAVAILABLE ('the service is shutting down')."
    )
    var drainTimeoutS: Double = ServingConfiguration().drainTimeout.seconds

    func applied(to serving: ServingConfiguration) throws -> ServingConfiguration {
        guard (1...(1 << 20)).contains(self.maxInflightMib) else {
            throw ValidationError("--max-inflight-mib: expected 1 to 1048576, got \(self.maxInflightMib)")
        }
        guard self.drainTimeoutS >= 0, self.drainTimeoutS <= 3600 else {
            throw ValidationError("--drain-timeout-s: expected 0 to 3600 seconds, got \(self.drainTimeoutS)")
        }
        var serving = serving
        serving.loadShedding.maxInFlightBytes = self.maxInflightMib << 20
        serving.drainTimeout = .milliseconds(Int64(self.drainTimeoutS * 1000))
        return serving
    }
}

/// `--tls-cert`, `--tls-key`, `--tls-ca` (PEM; `moemesh certs` writes a development set).
struct TLSOptions: ParsableArguments {
    @Option(help: "TLS certificate (PEM) this process presents: as a server, and as a client under mutual TLS.")
    var tlsCert: String?

    @Option(help: "Private key (PEM) of --tls-cert.")
    var tlsKey: String?

    @Option(
        help:
            "CA (PEM) that signed the peers' certificates: a server then requires client certificates it signed (mutual TLS); a client verifies servers against it."
    )
    var tlsCa: String?

    @Option(
        help:
            "The name every server's certificate must carry, instead of the host dialled (replicas reached by pod IP: give the mesh-wide name their certificates share). Default: the host dialled."
    )
    var tlsServerName: String?

    @Option(
        help:
            "With --tls-ca, whether a router or expert requires client certificates (require: mutual TLS, between mesh services) or verifies one only when sent (optional: end users with server-only TLS and a bearer token; needs --auth-tokens). The coordinator always requires them."
    )
    var tlsClientAuth: DataPlaneTLS.ClientAuth = .require

    /// The same options for the replicas a local scaler starts (mesh services: client certificates required).
    var replicaArguments: [String] {
        (self.tlsCert.map { ["--tls-cert", $0] } ?? []) + (self.tlsKey.map { ["--tls-key", $0] } ?? [])
            + (self.tlsCa.map { ["--tls-ca", $0] } ?? [])
            + (self.tlsServerName.map { ["--tls-server-name", $0] } ?? [])
    }

    var files: TLSFiles? {
        guard self.tlsCert != nil || self.tlsKey != nil || self.tlsCa != nil else { return nil }
        return TLSFiles(
            certificate: self.tlsCert, privateKey: self.tlsKey, ca: self.tlsCa, serverName: self.tlsServerName,
            clientAuth: self.tlsClientAuth)
    }

    /// `serving` with TLS for a service: it serves with the certificate and calls other services with it.
    func appliedToService(_ serving: ServingConfiguration) throws -> ServingConfiguration {
        var serving = serving
        guard let files = self.files else { return serving }
        do { try files.validateForServer() } catch { throw ValidationError("\(error)") }
        serving.tls = files
        return serving
    }

    /// `serving` with TLS for a client command.
    func appliedToClient(_ serving: ServingConfiguration) throws -> ServingConfiguration {
        var serving = serving
        guard let files = self.files else { return serving }
        do { try files.validateForClient() } catch { throw ValidationError("\(error)") }
        serving.tls = files
        return serving
    }
}

extension ServingConfiguration {
    /// Logs once that the service listens beyond loopback without TLS.
    func warnIfPlaintextBeyondLoopback(_ logger: Logger) {
        guard self.tls == nil, !self.listensOnLoopbackOnly else { return }
        logger.warning(
            """
            serving plaintext beyond loopback: anyone on the network can read the hidden states and tokens; \
            give --tls-cert, --tls-key and --tls-ca
            """,
            metadata: ["host": "\(self.host)"])
    }
}

extension ServingConfiguration {
    /// Says at start whether registrations and admin calls are taken from other hosts (see `isProtected`).
    func reportProtectedMode(_ logger: Logger) {
        guard self.isOpenBeyondLoopback else { return }
        if self.insecure {
            logger.warning(
                "--insecure: any host that reaches this port can register replicas, drain them and prune experts",
                metadata: ["host": "\(self.host)"])
        } else {
            logger.warning(
                """
                protected mode: neither TLS nor tokens, so registrations and admin calls are taken only from this \
                host; give --auth-tokens or TLS for a mesh across hosts (or --insecure on a network you trust)
                """,
                metadata: ["host": "\(self.host)"])
        }
    }
}

extension DataPlaneTLS.ClientAuth: ExpressibleByArgument {}
