import GRPCCore
import MoECore
import MoEKernels
import MoEInProcess
import MoEModel
import MoEProcesses
import MoERouter
import MoERuntime
import MoEServing
import MoETestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Same answers on every machine: routing is batch-invariant and independent of the BLAS kernel set, and every
/// process of the project runs the same kernel set.
@Suite("reproducible routing (real processes)", .serialized)
struct ReproducibilityTests {
    /// Wide enough (H = 2048, E = 16) that a BLAS gate rounded differently inside a batch than alone.
    static let shape = ModelSynthesizer.Shape(experts: 16, topK: 2, hiddenSize: 2048, intermediateSize: 32, layers: 1)

    @Test(
        "16 concurrent calls of 1–3 tokens through a batching router: routing bitwise equal to each call alone and in process"
    )
    func batchedRoutingIsBitwiseStable() async throws {
        let model = try SmallModel(shape: Self.shape, seed: 51)
        defer { model.remove() }
        let reference = try InProcessMoE(checkpoint: MoECheckpoint(path: model.path))
        // Batching is on by default: calls that arrive while a batch of the layer runs share the next one.
        try await withUpMesh(model: model.path) { router, _ in
            try await RouterClient.with(endpoint: router) { client in
                let inputs = (0..<16).map { model.randomHidden(tokens: 1 + $0 % 3, seed: UInt64(900 + $0)) }
                let batched = try await withThrowingTaskGroup(of: (Int, RouterClient.ForwardResult).self) { group in
                    for (index, hidden) in inputs.enumerated() {
                        group.addTask {
                            (index, try await client.forward(layer: "0", hiddenStates: try Tensor(hidden)))
                        }
                    }
                    var results = [RouterClient.ForwardResult?](repeating: nil, count: inputs.count)
                    for try await (index, result) in group { results[index] = result }
                    return results.map { $0! }
                }
                for (index, hidden) in inputs.enumerated() {
                    let alone = try await client.forward(layer: "0", hiddenStates: try Tensor(hidden))
                    let local = try await reference.forward(layer: "0", hidden: hidden)
                    let routing = try #require(batched[index].routing)
                    #expect(routing.topkIDs == alone.routing?.topkIDs, "call \(index)")
                    #expect(
                        routing.topkWeights.map(\.bitPattern) == alone.routing?.topkWeights.map(\.bitPattern),
                        "call \(index)")
                    #expect(routing.topkIDs == local.routing.topkIDs, "call \(index)")
                    #expect(
                        routing.topkWeights.map(\.bitPattern) == local.routing.topkWeights.map(\.bitPattern),
                        "call \(index)")
                    // Expert outputs are BLAS sgemm results: equal within a tolerance, not bitwise.
                    #expect(
                        relativeError(try batched[index].output.floats(), local.output.values) <= 1e-5, "call \(index)")
                }
            }
        }
    }

    @Test("the gate under two OpenBLAS kernel sets in two processes: logits, ids and weights bitwise equal")
    func routingIndependentOfKernelSet() async throws {
        let model = try SmallModel(shape: Self.shape, seed: 52)
        defer { model.remove() }
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        // Prescott (SSE3) runs on every x86-64 CPU; the other process makes the project's own choice.
        var printed: [String: [String]] = [:]
        for kernels in ["Prescott", "chosen"] {
            let environment =
                ChildProcess.environment.filter { !$0.hasPrefix("OPENBLAS_CORETYPE=") }
                + (kernels == "chosen" ? [] : ["OPENBLAS_CORETYPE=\(kernels)"])
            let forward = try await ChildProcess.start(
                name: "forward \(kernels)", executable: MoemeshBinary.path,
                arguments: [
                    "forward", "--model", model.path, "--layer", "0", "--random", "64", "--seed", "3",
                    "--output", directory.file("\(kernels).safetensors"),
                ],
                environment: environment)
            var lines: [String] = []
            for await line in forward.outputLines { lines.append(line) }
            #expect(await forward.waitForExit(timeout: .seconds(60)) == 0, "\(lines)")
            printed[kernels] = lines
        }
        let prescott = try SafeTensorsFile(path: directory.file("Prescott.safetensors"))
        let chosen = try SafeTensorsFile(path: directory.file("chosen.safetensors"))
        #expect(
            printed["Prescott"]?.contains { $0.contains("OpenBLAS PRESCOTT") || $0.contains("OpenBLAS Prescott") }
                == true,
            "\(printed["Prescott"] ?? [])")
        for name in ["router_logits", "topk_weights"] {
            #expect(
                try prescott.tensor(name).floats().map(\.bitPattern) == chosen.tensor(name).floats().map(\.bitPattern),
                "\(name)")
        }
        #expect(
            prescott.bytes(of: prescott.entries["topk_ids"]!).elementsEqual(
                chosen.bytes(of: chosen.entries["topk_ids"]!)))
        #expect(relativeError(try prescott.tensor("output").floats(), try chosen.tensor("output").floats()) <= 1e-5)

        // This test process runs the same kernel set as the binary (chosen the same way), so the in-process layer
        // computes the same routing and the same expert outputs, bitwise.
        #expect(
            printed["chosen"]?.contains { $0.contains("OpenBLAS \(BLASKernelSet.current)") } == true,
            "binary: \(printed["chosen"] ?? []), test process: \(BLASKernelSet.current)")
        let hidden = Matrix(
            rows: 64, columns: 2048, values: ModelSynthesizer.uniform(count: 64 * 2048, scale: 1.7320508, seed: 3))
        let local = try await InProcessMoE(checkpoint: MoECheckpoint(path: model.path)).forward(
            layer: "0", hidden: hidden)
        #expect(
            local.logits.values.map(\.bitPattern) == (try chosen.tensor("router_logits").floats()).map(\.bitPattern))
        #expect(local.output.values.map(\.bitPattern) == (try chosen.tensor("output").floats()).map(\.bitPattern))
    }
}
