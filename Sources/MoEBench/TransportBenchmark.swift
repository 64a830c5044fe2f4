import MoECore
import CGRPCBridge
import GRPCCore
import GRPCNIOTransportHTTP2
import MoEDataPlane
import MoEProto
import MoEServing
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// `moemesh bench transport`: one echo round trip of a payload on each transport the data plane could use, client
/// and server in this process on loopback, paired in one run: gRPC's C++ core alone (C++ client, C++ server: the
/// floor), the bridge (Swift channel and Swift server on the C++ core, the server's method inline on the core's
/// thread or as a task), and grpc-swift (HTTP/2 on NIO). Swift rows encode and decode the `EchoRequest` with
/// SwiftProtobuf on both sides; the floor moves the same bytes without protobuf.
public struct TransportBenchmark: Sendable {
    public struct Row: Sendable {
        public var transport: String
        /// "unary" or "stream" (one message at a time over one open stream).
        public var call: String
        public var payloadBytes: Int
        public var roundTrips: Int
        public var p50: Double
        public var p99: Double
        /// Process CPU (client and server together) per round trip, µs.
        public var cpuPerRoundTrip: Double
        /// p50 over the C++ core's stream echo of the same payload.
        public var overFloor: Double = 0
    }

    public var payloads: [Int]
    public var secondsPerRow: Double
    /// Rounds over all transports, interleaved, so that drift falls on every row alike.
    public var rounds: Int

    public init(payloads: [Int] = [4 << 10, 24 << 10, 1 << 20], secondsPerRow: Double = 1, rounds: Int = 2) {
        self.payloads = payloads
        self.secondsPerRow = secondsPerRow
        self.rounds = rounds
    }

    static let unaryMethod = "/moemesh.v1.Bench/Echo"
    static let streamMethod = "/moemesh.v1.Bench/EchoStream"

    public func run(progress: @Sendable (String) -> Void = { _ in }) async throws -> [Row] {
        let maxBytes = 64 << 20
        var error = [CChar](repeating: 0, count: 256)
        guard let floorServer = mm_bench_echo_server_start("127.0.0.1:0", Int32(maxBytes), &error, error.count) else {
            throw DataPlaneSetupError(error.withUnsafeBufferPointer { String(cString: $0.baseAddress!) })
        }
        let floorTarget = "127.0.0.1:\(mm_server_port(floorServer))"
        defer { mm_server_shutdown(floorServer, 0, nil) }

        var serverConfiguration = DataPlaneServer.Configuration(address: "127.0.0.1:0")
        serverConfiguration.maxReceiveMessageBytes = maxBytes
        serverConfiguration.maxSendMessageBytes = maxBytes
        let inline = try DataPlaneServer(configuration: serverConfiguration, methods: Self.echoMethods(async: false))
        let tasks = try DataPlaneServer(configuration: serverConfiguration, methods: Self.echoMethods(async: true))
        var channelConfiguration = DataPlaneChannel.Configuration()
        channelConfiguration.maxReceiveMessageBytes = maxBytes
        channelConfiguration.maxSendMessageBytes = maxBytes
        let inlineChannel = try DataPlaneChannel(
            target: "127.0.0.1:\(inline.port)", configuration: channelConfiguration)
        let taskChannel = try DataPlaneChannel(target: "127.0.0.1:\(tasks.port)", configuration: channelConfiguration)

        var serving = ServingConfiguration(maxMessageBytes: maxBytes)
        serving.port = 0
        let swiftTransport = serving.makeServerTransport()
        let swiftServer = GRPCServer(transport: swiftTransport, services: [EchoService()])

        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await tasks.run() }
            group.addTask { try await swiftServer.serve() }
            defer { swiftServer.beginGracefulShutdown() }
            let address = try await swiftTransport.listeningAddress
            let endpoint = ServiceEndpoint(host: "127.0.0.1", port: address.ipv4?.port ?? 0)
            let rows = try await withGRPCClient(transport: try serving.makeClientTransport(to: endpoint)) { client in
                let echo = Moemesh_V1_Bench.Client(wrapping: client)
                var rows: [String: Row] = [:]
                for payload in self.payloads {
                    let request = Self.request(bytes: payload)
                    let encoded: [UInt8] = try request.serializedBytes()
                    let measurements: [(String, String, () async throws -> LatencySamples)] = [
                        ("C++ core (floor)", "unary", { try self.floor(floorTarget, streaming: false, encoded.count) }),
                        ("C++ core (floor)", "stream", { try self.floor(floorTarget, streaming: true, encoded.count) }),
                        ("bridge, inline method", "unary", { try await self.bridgeUnary(inlineChannel, request) }),
                        ("bridge, inline method", "stream", { try await self.bridgeStream(inlineChannel, request) }),
                        ("bridge, method in a task", "unary", { try await self.bridgeUnary(taskChannel, request) }),
                        ("grpc-swift (NIO)", "unary", { try await self.swiftUnary(echo, request, serving) }),
                        ("grpc-swift (NIO)", "stream", { try await self.swiftStream(echo, request, serving) }),
                    ]
                    for round in 0..<self.rounds {
                        for (transport, call, measure) in measurements {
                            progress("\(transport) \(call), \(payload) B, round \(round + 1)")
                            let cpuBefore = processCPUSeconds()
                            let samples = try await measure()
                            let cpu = processCPUSeconds() - cpuBefore
                            let key = "\(payload) \(transport) \(call)"
                            var row =
                                rows[key]
                                ?? Row(
                                    transport: transport, call: call, payloadBytes: encoded.count, roundTrips: 0,
                                    p50: 0, p99: 0, cpuPerRoundTrip: 0)
                            row.cpuPerRoundTrip =
                                (row.cpuPerRoundTrip * Double(row.roundTrips) + cpu * 1e6)
                                / Double(row.roundTrips + samples.count)
                            row.roundTrips += samples.count
                            rows[key] = row
                            Self.samples.withLock { $0[key, default: LatencySamples()].append(contentsOf: samples) }
                        }
                    }
                }
                return rows
            }
            await inline.shutdown(grace: .zero)
            await tasks.shutdown(grace: .zero)
            group.cancelAll()
            var result: [Row] = []
            for payload in self.payloads {
                let prefix = "\(payload) "
                let floor = Self.samples.withLock { $0[prefix + "C++ core (floor) stream"]?.p50 ?? 0 }
                for key in rows.keys.filter({ $0.hasPrefix(prefix) }).sorted(by: { Self.order($0) < Self.order($1) }) {
                    var row = rows[key]!
                    let samples = Self.samples.withLock { $0[key]! }
                    row.p50 = samples.p50
                    row.p99 = samples.p99
                    row.overFloor = floor > 0 ? row.p50 / floor : 0
                    result.append(row)
                }
            }
            Self.samples.withLock { $0 = [:] }
            return result
        }
    }

    private static let samples = Mutex<[String: LatencySamples]>([:])

    private static func order(_ key: String) -> Int {
        let names = [
            "C++ core (floor) unary", "C++ core (floor) stream", "bridge, inline method unary",
            "bridge, inline method stream", "bridge, method in a task unary", "grpc-swift (NIO) unary",
            "grpc-swift (NIO) stream",
        ]
        return names.firstIndex { key.hasSuffix($0) } ?? names.count
    }

    private static func request(bytes: Int) -> Moemesh_V1_EchoRequest {
        .with {
            $0.tensor.dtype = .f32
            $0.tensor.shape = [Int64(bytes / 4)]
            $0.tensor.data = .init(repeating: 7, count: bytes)
        }
    }

    /// Echo methods that decode the request and encode the answer, as every data-plane method does.
    private static func echoMethods(async: Bool) -> [String: DataPlaneMethod] {
        @Sendable func echo(_ bytes: UnsafeRawBufferPointer) throws -> [UInt8] {
            let request = try Moemesh_V1_EchoRequest(serializedBytes: Array(bytes))
            return try Moemesh_V1_EchoResponse.with { $0.tensor = request.tensor }.serializedBytes()
        }
        struct EchoStream: DataPlaneStreamHandler {
            let stream: DataPlaneServerStream
            func receive(_ message: UnsafeRawBufferPointer) {
                do { self.stream.write(try echo(message)) } catch { self.stream.finish(RPCError(answering: error)) }
            }
            func inputEnded() { self.stream.finish() }
            func cancelled() {}
        }
        return [
            Self.unaryMethod: async
                ? .unary { request, _ in try request.withUnsafeBytes { try echo($0) } }
                : .inlineUnary { request, _ in try echo(request) },
            Self.streamMethod: .bidirectionalStream { _, stream in EchoStream(stream: stream) },
        ]
    }

    /// Round trips for about `secondsPerRow`, after a warm-up that also sizes the run.
    private func timed(_ roundTrip: () async throws -> Void) async throws -> LatencySamples {
        let clock = ContinuousClock()
        var warmUp = LatencySamples()
        for _ in 0..<20 { warmUp.append(try await clock.measure { try await roundTrip() }) }
        var samples = LatencySamples()
        let end = clock.now + .milliseconds(Int64(self.secondsPerRow * 1000))
        while clock.now < end || samples.count < 20 {
            samples.append(try await clock.measure { try await roundTrip() })
        }
        return samples
    }

    private func floor(_ target: String, streaming: Bool, _ bytes: Int) throws -> LatencySamples {
        var warmUp = [Int64](repeating: 0, count: 20)
        let method = streaming ? Self.streamMethod : Self.unaryMethod
        guard mm_bench_echo_client(target, method, streaming ? 1 : 0, bytes, 20, &warmUp) == 0 else {
            throw RPCError(code: .unavailable, message: "the C++ echo failed")
        }
        let mean = Double(warmUp.reduce(0, +)) / 20
        let count = max(20, Int(self.secondsPerRow * 1e9 / max(mean, 1)))
        var nanoseconds = [Int64](repeating: 0, count: count)
        let status = mm_bench_echo_client(target, method, streaming ? 1 : 0, bytes, Int32(count), &nanoseconds)
        guard status == 0 else { throw RPCError(code: .unavailable, message: "the C++ echo failed: status \(status)") }
        var samples = LatencySamples()
        for value in nanoseconds { samples.append(.nanoseconds(value)) }
        return samples
    }

    private func bridgeUnary(_ channel: DataPlaneChannel, _ request: Moemesh_V1_EchoRequest) async throws
        -> LatencySamples
    {
        try await self.timed {
            let answer = try await channel.unary(Self.unaryMethod, request: try request.serializedBytes())
            _ = try Moemesh_V1_EchoResponse(serializedBytes: answer)
        }
    }

    private func bridgeStream(_ channel: DataPlaneChannel, _ request: Moemesh_V1_EchoRequest) async throws
        -> LatencySamples
    {
        let stream = SerialBridgeStream(channel: channel, method: Self.streamMethod)
        defer { stream.close() }
        return try await self.timed {
            let answer = try await stream.roundTrip(try request.serializedBytes())
            _ = try Moemesh_V1_EchoResponse(serializedBytes: answer)
        }
    }

    private func swiftUnary(
        _ echo: Moemesh_V1_Bench.Client<HTTP2ClientTransport.Posix>, _ request: Moemesh_V1_EchoRequest,
        _ serving: ServingConfiguration
    ) async throws -> LatencySamples {
        let options = serving.callOptions()
        return try await self.timed { _ = try await echo.echo(request, options: options) }
    }

    private func swiftStream(
        _ echo: Moemesh_V1_Bench.Client<HTTP2ClientTransport.Posix>, _ request: Moemesh_V1_EchoRequest,
        _ serving: ServingConfiguration
    ) async throws -> LatencySamples {
        let options = serving.callOptions()
        return try await SerialStream<Moemesh_V1_EchoRequest, Moemesh_V1_EchoResponse>.with(open: { requests, deliver in
            try await echo.echoStream(
                request: StreamingClientRequest { writer in
                    for await message in requests { try await writer.write(message) }
                }, options: options
            ) { response in
                for try await message in response.messages { deliver(message) }
            }
        }) { send in
            try await self.timed { _ = try await send(request) }
        }
    }
}

/// One message at a time over one open bridge stream: `roundTrip` writes and waits for the next answer.
final class SerialBridgeStream: Sendable {
    /// The round trip waiting for its answer.
    private final class Pending: Sendable {
        let waiting = Mutex<CheckedContinuation<[UInt8], any Error>?>(nil)
        func take() -> CheckedContinuation<[UInt8], any Error>? {
            self.waiting.withLock { waiting in
                defer { waiting = nil }
                return waiting
            }
        }
    }

    private let pending: Pending
    private let stream: DataPlaneClientStream

    init(channel: DataPlaneChannel, method: String) {
        let pending = Pending()
        self.stream = channel.openStream(
            method, onMessage: { bytes in pending.take()?.resume(returning: Array(bytes)) },
            onEnd: { error in
                pending.take()?.resume(throwing: error ?? RPCError(code: .unavailable, message: "the stream ended"))
            })
        self.pending = pending
    }

    func roundTrip(_ bytes: [UInt8]) async throws -> [UInt8] {
        try await withCheckedThrowingContinuation { continuation in
            self.pending.waiting.withLock { $0 = continuation }
            self.stream.write(bytes)
        }
    }

    func close() { self.stream.closeSend() }
}

/// CPU time of this process so far (user and system), in seconds.
func processCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec)
        + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
}
