#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif
import GRPCCore
import GRPCNIOTransportHTTP2
import MoECore
import MoEModel
import MoEProcesses
import MoEProto
import MoERouter
import MoEServing
import MoETestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `grpc.health.v1` status of the process at `endpoint`; nil if it does not answer.
func healthStatus(_ endpoint: ServiceEndpoint) async -> Grpc_Health_V1_HealthCheckResponse.ServingStatus? {
    let serving = ServingConfiguration()
    return try? await withGRPCClient(transport: try serving.makeClientTransport(to: endpoint)) { client in
        try await Grpc_Health_V1_Health.Client(wrapping: client).check(
            .init(), options: serving.callOptions(timeout: .seconds(2))
        ).status
    }
}

/// Polls until `condition` holds for the health status at `endpoint`, within `timeout`.
func waitForHealth(
    _ endpoint: ServiceEndpoint, timeout: Duration = .seconds(30),
    _ condition: (Grpc_Health_V1_HealthCheckResponse.ServingStatus?) -> Bool
) async -> Grpc_Health_V1_HealthCheckResponse.ServingStatus? {
    let deadline = ContinuousClock.now + timeout
    var status = await healthStatus(endpoint)
    while !condition(status) && ContinuousClock.now < deadline {
        try? await Task.sleep(for: .milliseconds(100))
        status = await healthStatus(endpoint)
    }
    return status
}

@Suite("operations: health, metrics over HTTP, status page data, configuration file", .serialized)
struct OperationsTests {
    static let shape = ModelSynthesizer.Shape(experts: 4, topK: 2, hiddenSize: 32, intermediateSize: 48, layers: 1)

    @Test(
        "health: NOT_SERVING before ready (expert not registered, router without experts), SERVING after; /metrics and /status.json over HTTP"
    )
    func healthAndHTTP() async throws {
        let model = try SmallModel(shape: Self.shape, seed: 51)
        defer { model.remove() }
        // Held until the coordinator starts: other tests' processes, running meanwhile, cannot take it.
        let coordinatorPort = Loopback.ReservedPort()
        let coordinator = ServiceEndpoint(host: "127.0.0.1", port: coordinatorPort.port)
        let router = ServiceEndpoint(host: "127.0.0.1", port: Loopback.freePort())
        var processes: [ChildProcess] = []
        defer { processes.forEach { $0.signal(SIGKILL) } }
        // Experts whose coordinator is not there yet: they serve, but are not ready.
        var experts: [ServiceEndpoint] = []
        for expert in 0..<4 {
            let (process, endpoint) = try await startMoemesh(
                "expert \(expert)", role: "expert",
                [
                    "expert", "--model", model.path, "--experts", "*:\(expert)", "--threads", "1", "--coordinator",
                    coordinator.description,
                ])
            processes.append(process)
            experts.append(endpoint)
        }
        #expect(await healthStatus(experts[0]) == .notServing)
        let routerProcess = try await ChildProcess.start(
            name: "router", executable: MoemeshBinary.path,
            arguments: [
                "router", "--model", model.path, "--port", String(router.port), "--coordinator",
                coordinator.description,
                "--http-port", "0", "--log-level", "warning",
            ])
        processes.append(routerProcess)
        let routerHTTP = try #require(await routerProcess.waitForReadyLine(role: "http", timeout: .seconds(60)))
        #expect(await waitForHealth(router) { $0 != nil } == .notServing)
        try await RouterClient.with(endpoint: router) { client in
            do {
                _ = try await client.forward(layer: "0", hiddenStates: try Tensor(model.randomHidden(tokens: 2)))
                Issue.record("a router that is not ready answered")
            } catch let error as RPCError {
                #expect(error.code == .unavailable)
                #expect(error.message.hasPrefix("the router is not ready yet"))
            }
        }
        // The coordinator arrives: experts register, the router's topology covers the model.
        coordinatorPort.release()
        let (coordinatorProcess, _) = try await startMoemesh(
            "coordinator", role: "coordinator",
            ["coordinator", "--model", model.path, "--port", String(coordinator.port), "--http-port", "0"])
        processes.append(coordinatorProcess)
        let coordinatorHTTP = try #require(
            await coordinatorProcess.waitForReadyLine(role: "http", timeout: .seconds(30)))
        for expert in experts { #expect(await waitForHealth(expert) { $0 == .serving } == .serving) }
        #expect(await waitForHealth(router) { $0 == .serving } == .serving)
        #expect(await healthStatus(coordinator) == .serving)
        try await RouterClient.with(endpoint: router) { client in
            for call in 0..<3 {
                _ = try await client.forward(
                    layer: "0", hiddenStates: try Tensor(model.randomHidden(tokens: 4, seed: UInt64(call))))
            }
        }
        let metrics = try #require(Loopback.get(port: routerHTTP.port, path: "/metrics"))
        #expect(metrics.status == 200)
        #expect(metrics.body.contains(#"moemesh_router_requests_total{layer="0"} 3"#))
        #expect(metrics.body.contains(#"moemesh_router_tokens_total{layer="0"} 12"#))
        #expect(
            metrics.body.contains(#"moemesh_rpc_errors_total{service="router",method="Forward",code="unavailable"} 1"#))
        // The coordinator's status page data: after traffic, some expert's demand is above zero.
        var demand = 0.0
        let deadline = ContinuousClock.now + .seconds(10)
        while demand == 0 && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(300))
            let json = try #require(Loopback.get(port: coordinatorHTTP.port, path: "/status.json"))
            let decoder = JSONDecoder()
            decoder.keyDecodingStrategy = .convertFromSnakeCase
            struct Status: Decodable {
                struct Expert: Decodable { var demandRowsPerSecond: Double; var servingReplicas: Int }
                var experts: [Expert]
            }
            let status = try decoder.decode(Status.self, from: Data(json.body.utf8))
            #expect(status.experts.count == 4)
            demand = status.experts.map(\.demandRowsPerSecond).reduce(0, +)
        }
        #expect(demand > 0)
        let page = try #require(Loopback.get(port: coordinatorHTTP.port, path: "/"))
        #expect(page.status == 200 && page.body.contains("id=\"heatmap\""))
        #expect(Loopback.get(port: coordinatorHTTP.port, path: "/nothing")?.status == 404)
    }

    @Test("k8s secrets: a certificate set without the CA's key, and each role's tokens file holds only its roles")
    func kubernetesSecrets() async throws {
        let folder = TemporaryDirectory()
        defer { folder.remove() }
        let out = folder.file("secrets")
        func run() async throws -> Int32? {
            let process = try await ChildProcess.start(
                name: "secrets", executable: MoemeshBinary.path, arguments: ["k8s", "secrets", "--out", out])
            for await _ in process.outputLines {}
            return await process.waitForExit(timeout: .seconds(30))
        }
        #expect(try await run() == 0)
        func read(_ name: String) throws -> String {
            String(decoding: try FileSystem.readFile(out + "/" + name), as: UTF8.self)
        }
        func roles(_ name: String) throws -> [String] {
            try read(name).split(separator: "\n").map { String($0.split(separator: " ")[0]) }
        }
        #expect(try roles("tokens-coordinator") == ["client", "admin", "mesh"])
        #expect(try roles("tokens-router") == ["client", "mesh"])
        #expect(try roles("tokens-expert") == ["mesh"])
        let mesh = try read("mesh-token").trimmingCharacters(in: .whitespacesAndNewlines)
        let (expertTokens, routerTokens) = (try read("tokens-expert"), try read("tokens-router"))
        let (client, admin) = (
            try read("client-token").trimmingCharacters(in: .newlines),
            try read("admin-token").trimmingCharacters(in: .newlines)
        )
        #expect(mesh.count == 32 && expertTokens == "mesh \(mesh)\n")
        #expect(routerTokens.contains(client) && !routerTokens.contains(admin))
        #expect(try read("tls.crt").hasPrefix("-----BEGIN CERTIFICATE-----"))
        #expect(!FileSystem.fileExists(out + "/ca-key.pem"))
        var status = stat()
        #expect(stat(out + "/tls.key", &status) == 0 && status.st_mode & 0o777 == 0o600)
        #expect(stat(out + "/tokens-expert", &status) == 0 && status.st_mode & 0o777 == 0o600)
        // A second run keeps the set it finds.
        #expect(try await run() != 0)
        #expect(try read("mesh-token").trimmingCharacters(in: .whitespacesAndNewlines) == mesh)
    }

    @Test("configuration: a YAML file, then MOEMESH_* variables, then flags, each overriding the one before")
    func configurationSources() async throws {
        let folder = TemporaryDirectory()
        defer { folder.remove() }
        let model = try SmallModel(shape: Self.shape, seed: 52)
        defer { model.remove() }
        let config = folder.file("moemesh.yaml")
        try FileSystem.writeFile(
            config,
            chunks: [
                Array(
                    """
                    all:
                      log-level: warning
                    k8s render:
                      image: registry.example/moemesh:1.0
                      replicas: 3
                      experts-per-deployment: 1
                      gpu: true
                    """.utf8)
            ])
        func render(_ arguments: [String], environment: [String: String] = [:]) async throws -> (Int32?, String) {
            let out = folder.file("out-" + String(UInt64.random(in: 0...UInt64.max), radix: 16))
            let process = try await ChildProcess.start(
                name: "render", executable: "/usr/bin/env",
                arguments: environment.map { "\($0.key)=\($0.value)" } + [
                    MoemeshBinary.path, "k8s", "render", "--model", model.path, "--out", out,
                ] + arguments)
            for await _ in process.outputLines {}
            let status = await process.waitForExit(timeout: .seconds(30))
            let experts =
                (try? FileSystem.readFile(out + "/experts.yaml")).map { String(decoding: $0, as: UTF8.self) } ?? ""
            return (status, experts)
        }
        let (status, fromFile) = try await render(["--config", config])
        #expect(status == 0)
        #expect(
            fromFile.contains("image: registry.example/moemesh:1.0-cuda")
                && fromFile.contains(#"planned-replicas: "3""#)
                && fromFile.contains("nvidia.com/gpu: 1"))
        let (_, fromEnvironment) = try await render(
            ["--config", config], environment: ["MOEMESH_REPLICAS": "5", "MOEMESH_EXPERTS_PER_DEPLOYMENT": "2"])
        #expect(fromEnvironment.contains(#"planned-replicas: "5""#) && fromEnvironment.contains("*:0-1"))
        let (_, fromFlags) = try await render(
            ["--config", config, "--replicas", "7"], environment: ["MOEMESH_REPLICAS": "5", "MOEMESH_CONFIG": config])
        #expect(fromFlags.contains(#"planned-replicas: "7""#))
        // `all` gives what the command's own section does not; the section wins where both give an option.
        // In either order in the file.
        for text in [
            "k8s render:\n  replicas: 4\nall:\n  replicas: 9\n", "all:\n  replicas: 9\nk8s render:\n  replicas: 4\n",
        ] {
            try FileSystem.writeFile(config, chunks: [Array(text.utf8)])
            let (_, rendered) = try await render(["--config", config])
            #expect(rendered.contains(#"planned-replicas: "4""#), "\(text)")
        }

        // A typo, a wrong shape and a flag that is not true or false each fail and say what was expected.
        let refusals = [
            ("k8s render:\n  colour: blue\n", "'colour' is not an option of moemesh k8s render; its options: base,"),
            (
                "k8s render:\n  replicas: {a: 1}\n",
                "k8s render: replicas: expected a value or a list of values, got a mapping"
            ),
            ("- k8s render\n", "expected a mapping of command sections, got a list"),
            ("k8s render: 3\n", "k8s render: expected option: value lines, got '3'"),
            (
                "all:\n  gpu: maybe\n",
                "gpu (MOEMESH_GPU or the config file) is a flag: expected true or false, got maybe"
            ),
        ]
        for (text, message) in refusals {
            try FileSystem.writeFile(config, chunks: [Array(text.utf8)])
            let bad = try await ChildProcess.start(
                name: "render", executable: "/bin/sh",
                arguments: [
                    "-c", "exec \"$0\" k8s render --model \"$1\" --out \"$2\" --config \"$3\" 2>&1",
                    MoemeshBinary.path, model.path, folder.file("bad"), config,
                ])
            var output = ""
            for await line in bad.outputLines { output += line + "\n" }
            #expect(await bad.waitForExit(timeout: .seconds(30)) != 0)
            #expect(output.contains(message), "\(text): \(output)")
        }
    }
}
