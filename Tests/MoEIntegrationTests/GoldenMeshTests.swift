import GRPCCore
import MoECore
import MoEModel
import MoEProcesses
import MoERouter
import MoEServing
import MoETestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Starts `moemesh up` on a model (port 0), runs `body` with the router's endpoint and `up`'s PID, then stops the
/// mesh.
func withUpMesh(
    model: String, extraArguments: [String] = [], _ body: (ServiceEndpoint, Int32) async throws -> Void
) async throws {
    let up = try await ChildProcess.start(
        name: "up", executable: MoemeshBinary.path,
        arguments: [
            "up", "--model", model, "--port", "0", "--coordinator-port", "0", "--threads", "1", "--log-level",
            "warning",
            "--parent-pid", String(getpid()),
        ] + extraArguments)
    defer { if up.pollExit() == nil { up.signal(SIGKILL) } }
    let router = try #require(
        await up.waitForReadyLine(role: "router", timeout: .seconds(120)), "moemesh up did not start")
    try await body(router, up.pid)
    #expect(await up.stop(grace: .seconds(20)) == 0)
}

/// Every architecture through real processes: router and one expert process per expert (and shared expert).
@Suite("seven architectures through the mesh", .serialized)
struct GoldenMeshTests {
    @Test("mesh output and routing match the independent reference", arguments: GoldenFixture.all)
    func meshMatchesReference(fixture: GoldenFixture) async throws {
        let reference = try fixture.reference()
        try await withUpMesh(model: fixture.modelPath) { router, _ in
            try await RouterClient.with(endpoint: router) { client in
                for layer in try fixture.layers() {
                    let hidden = try reference.tensor("\(layer).hidden_states")
                    let result = try await client.forward(layer: layer, hiddenStates: hidden)
                    let error = relativeError(result.output.floats(), try reference.tensor("\(layer).output").floats())
                    #expect(error <= fixture.tolerance, "layer \(layer): relative error \(error)")
                    let ids = reference.entries["\(layer).topk_ids"].map { entry in
                        reference.bytes(of: entry).withMemoryRebound(to: Int32.self) { Array($0) }
                    }
                    #expect(result.routing?.topkIDs == ids, "layer \(layer) routing")
                }
            }
        }
    }

    @Test("Switch with --switch-capacity: per-sequence capacity over [B, S, H], dropped tokens as max p · x")
    func switchCapacityThroughMesh() async throws {
        let fixture = GoldenFixture(architecture: "switch_transformers", dtype: .f32)
        let reference = try fixture.reference()
        try await withUpMesh(model: fixture.modelPath, extraArguments: ["--switch-capacity"]) { router, _ in
            try await RouterClient.with(endpoint: router) { client in
                for layer in try fixture.layers() {
                    let batch = try reference.tensor("\(layer).capacity_hidden_states")
                    let result = try await client.forward(layer: layer, hiddenStates: batch)
                    #expect(result.output.shape == [2, 5, 16])
                    let error = relativeError(
                        result.output.floats(), try reference.tensor("\(layer).capacity_output").floats())
                    #expect(error <= 1e-5, "layer \(layer): relative error \(error)")
                }
            }
        }
    }
}
