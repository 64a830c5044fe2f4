import GRPCCore
import MoECore
import MoEModel
import MoEInProcess
import MoEProcesses
import MoERouter
import MoERuntime
import MoEServing
import MoETestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Real `moemesh` processes on loopback: the mesh's answers equal the in-process reference.
@Suite("mesh of real processes on loopback", .serialized)
struct MeshTests {
    static let shape = ModelSynthesizer.Shape(experts: 8, topK: 2, hiddenSize: 64, intermediateSize: 96, layers: 2)

    @Test(
        "moemesh up: output and routing equal the in-process reference for T = 1, 7, 256; bad input refused; clean stop"
    )
    func upMatchesReference() async throws {
        let model = try SmallModel(shape: Self.shape, seed: 11)
        defer { model.remove() }
        let up = try await Self.startUp(model)
        // If the test stops early, take the mesh down with it (the children follow their parent).
        defer { if up.pollExit() == nil { up.signal(SIGKILL) } }
        guard let router = await Self.router(of: up) else { return }
        let children = MoemeshBinary.children(of: up.pid)
        #expect(children.count == 9, "one process per expert and a router")

        let reference = try InProcessMoE(checkpoint: MoECheckpoint(path: model.path))
        try await RouterClient.with(endpoint: router) { client in
            for (tokens, layer) in [(1, "0"), (7, "1"), (256, "0")] {
                let hidden = model.randomHidden(tokens: tokens, seed: UInt64(100 + tokens))
                let expected = try await reference.forward(layer: layer, hidden: hidden)
                let result = try await client.forward(layer: layer, hiddenStates: try Tensor(hidden))
                #expect(result.output.shape == [tokens, 64])
                #expect(relativeError(result.output.floats(), expected.output.values) <= 1e-5, "T = \(tokens)")
                #expect(result.routing?.topkIDs == expected.routing.topkIDs, "T = \(tokens)")
                #expect(result.routing?.topkWeights == expected.routing.topkWeights, "T = \(tokens)")
            }

            // Bad input over real sockets, then a good call: the mesh keeps serving.
            let badCalls: [(String, Tensor, RPCError.Code, String)] = [
                (
                    "0", try Tensor(shape: [2, 63], floats: [Float](repeating: 0, count: 126)), .invalidArgument,
                    "hidden_states: hidden size: expected 64, got 63"
                ),
                ("4", try Tensor(model.randomHidden(tokens: 2)), .notFound, "layer '4' is not an MoE layer"),
                (
                    "0", try Tensor(shape: [1, 64], floats: [Float](repeating: .nan, count: 64)), .invalidArgument,
                    "hidden_states: expected finite values, got nan at token 0, column 0"
                ),
            ]
            for (layer, hidden, code, message) in badCalls {
                do {
                    _ = try await client.forward(layer: layer, hiddenStates: hidden)
                    Issue.record("accepted: \(message)")
                } catch let error as RPCError {
                    #expect(error.code == code)
                    #expect(error.message.hasPrefix(message), "\(error.message)")
                }
            }
            let again = try await client.forward(layer: "1", hiddenStates: try Tensor(model.randomHidden(tokens: 3)))
            #expect(again.output.shape == [3, 64])
        }

        // The CLI client: [B, S, H] in a file → output and routing in a file.
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let hidden = model.randomHidden(tokens: 6, seed: 5)
        try SafeTensorsWriter.write(
            [.init(name: "hidden_states", tensor: try Tensor(hidden, shape: [2, 3, 64]))],
            to: directory.file("in.safetensors"))
        let forward = try await ChildProcess.start(
            name: "forward", executable: MoemeshBinary.path,
            arguments: [
                "forward", "--router", router.description, "--layer", "1",
                "--input", directory.file("in.safetensors"), "--output", directory.file("out.safetensors"),
            ])
        var printed: [String] = []
        for await line in forward.outputLines { printed.append(line) }
        #expect(await forward.waitForExit(timeout: .seconds(30)) == 0)
        #expect(printed.first?.hasPrefix("layer 1: 6 tokens × H=64 (f32) in ") == true, "\(printed)")
        let written = try SafeTensorsFile(path: directory.file("out.safetensors"))
        let expected = try await reference.forward(layer: "1", hidden: hidden)
        #expect(written.entries["output"]?.shape == [2, 3, 64])
        #expect(relativeError(try written.tensor("output").floats(), expected.output.values) <= 1e-5)
        #expect(written.entries["topk_ids"]?.shape == [2, 3, 2] && written.entries["topk_ids"]?.dtype == .i32)
        #expect(try written.tensor("topk_weights").floats() == expected.routing.topkWeights)

        // SIGTERM stops up and every child.
        #expect(await up.stop(grace: .seconds(20)) == 0)
        for child in children { #expect(!MoemeshBinary.isAlive(child), "child \(child) outlived moemesh up") }
    }

    @Test("moemesh up --experts-per-process 4: two expert processes of four experts each answer as the reference")
    func upGroupsExperts() async throws {
        let model = try SmallModel(shape: Self.shape, seed: 12)
        defer { model.remove() }
        let up = try await Self.startUp(model, "--experts-per-process", "4")
        defer { if up.pollExit() == nil { up.signal(SIGKILL) } }
        guard let router = await Self.router(of: up) else { return }
        #expect(MoemeshBinary.children(of: up.pid).count == 3, "two expert processes and a router")
        let reference = try InProcessMoE(checkpoint: MoECheckpoint(path: model.path))
        try await RouterClient.with(endpoint: router) { client in
            for (tokens, layer) in [(1, "1"), (7, "0")] {
                let hidden = model.randomHidden(tokens: tokens, seed: UInt64(200 + tokens))
                let expected = try await reference.forward(layer: layer, hidden: hidden)
                let result = try await client.forward(layer: layer, hiddenStates: try Tensor(hidden))
                #expect(relativeError(result.output.floats(), expected.output.values) <= 1e-5, "T = \(tokens)")
                #expect(result.routing?.topkIDs == expected.routing.topkIDs, "T = \(tokens)")
            }
        }
        #expect(await up.stop(grace: .seconds(20)) == 0)
    }

    /// `moemesh up` on `model` with `extra` options, a child of this process.
    static func startUp(_ model: SmallModel, _ extra: String...) async throws -> ChildProcess {
        try await ChildProcess.start(
            name: "up", executable: MoemeshBinary.path,
            arguments: [
                "up", "--model", model.path, "--port", "0", "--coordinator-port", "0", "--log-level", "warning",
                "--parent-pid", String(getpid()),
            ] + extra)
    }

    /// The router `up` announces, or nil (recorded as an issue, `up` stopped) when it announces none.
    static func router(of up: ChildProcess) async -> ServiceEndpoint? {
        if let router = await up.waitForReadyLine(role: "router", timeout: .seconds(120)) { return router }
        await up.stop()
        Issue.record("moemesh up did not announce the router (exit status \(String(describing: up.pollExit())))")
        return nil
    }

    @Test("router + expert processes started by hand; a router whose experts do not cover the model refuses to start")
    func separateProcesses() async throws {
        let model = try SmallModel(shape: Self.shape, seed: 12)
        defer { model.remove() }
        let parent = String(getpid())
        var experts: [ChildProcess] = []
        var endpoints: [ServiceEndpoint] = []
        for group in ["*:0-3", "*:4-7"] {
            let expert = try await ChildProcess.start(
                name: "expert \(group)", executable: MoemeshBinary.path,
                arguments: [
                    "expert", "--model", model.path, "--experts", group, "--port", "0", "--threads", "1",
                    "--parent-pid", parent, "--log-level", "warning",
                ])
            experts.append(expert)
            if let endpoint = await expert.waitForReadyLine(role: "expert", timeout: .seconds(60)) {
                endpoints.append(endpoint)
            }
        }
        defer { for expert in experts { expert.signal(SIGKILL); _ = expert.pollExit() } }
        try #require(endpoints.count == 2)

        // Only the first half of the experts: the router must refuse, naming what is missing.
        let partial = try await ChildProcess.start(
            name: "router", executable: MoemeshBinary.path,
            arguments: [
                "router", "--model", model.path, "--port", "0", "--expert", endpoints[0].description,
                "--parent-pid", parent, "--log-level", "warning",
            ])
        let status = await partial.waitForExit(timeout: .seconds(60))
        #expect(status != nil && status != 0)

        let router = try await ChildProcess.start(
            name: "router", executable: MoemeshBinary.path,
            arguments: [
                "router", "--model", model.path, "--port", "0", "--parent-pid", parent, "--log-level", "warning",
            ]
                + endpoints.flatMap { ["--expert", $0.description] })
        defer { router.signal(SIGKILL); _ = router.pollExit() }
        let routerEndpoint = try #require(await router.waitForReadyLine(role: "router", timeout: .seconds(60)))
        let reference = try InProcessMoE(checkpoint: MoECheckpoint(path: model.path))
        let hidden = model.randomHidden(tokens: 33, seed: 3)
        let expected = try await reference.forward(layer: "0", hidden: hidden)
        let result = try await RouterClient.with(endpoint: routerEndpoint) { client in
            try await client.forward(layer: "0", hiddenStates: try Tensor(hidden))
        }
        #expect(relativeError(result.output.floats(), expected.output.values) <= 1e-5)
        #expect(result.routing?.topkIDs == expected.routing.topkIDs)
        #expect(await router.stop() == 0)
    }
}
