import MoECore
import MoEModel
import MoEInProcess
import MoERuntime
import MoETestSupport
import Testing

/// Every architecture, in process: the same layer code the mesh runs, against the independent numpy references.
@Suite("seven architectures against their published formulas (in process)")
struct GoldenModelTests {
    @Test("output and routing match the reference", arguments: GoldenFixture.all)
    func matchesReference(fixture: GoldenFixture) async throws {
        let checkpoint = try MoECheckpoint(path: fixture.modelPath)
        let reference = try fixture.reference()
        let layers = try fixture.layers()
        #expect(checkpoint.layers.map(\.name).sorted() == layers, "MoE layers")
        let model = try InProcessMoE(checkpoint: checkpoint)
        for layer in layers {
            let hidden = try reference.matrix("\(layer).hidden_states")
            let result = try await model.forward(layer: layer, hidden: hidden)
            let expected = try reference.tensor("\(layer).output").floats()
            let error = relativeError(result.output.values, expected)
            #expect(error <= fixture.tolerance, "layer \(layer): relative error \(error)")
            let ids = reference.entries["\(layer).topk_ids"].map { entry in
                reference.bytes(of: entry).withMemoryRebound(to: Int32.self) { Array($0) }
            }
            #expect(result.routing.topkIDs == ids, "layer \(layer) routing")
            let weights = try reference.tensor("\(layer).topk_weights").floats()
            #expect(relativeError(result.routing.topkWeights, weights) <= 1e-5, "layer \(layer) weights")
        }
    }

    @Test(
        "Switch's per-sequence expert capacity passes dropped tokens through as max p · x",
        arguments: [
            GoldenFixture(architecture: "switch_transformers", dtype: .f32),
            GoldenFixture(architecture: "switch_transformers", dtype: .bf16),
        ])
    func switchCapacity(fixture: GoldenFixture) async throws {
        let checkpoint = try MoECheckpoint(path: fixture.modelPath)
        let reference = try fixture.reference()
        let model = try InProcessMoE(checkpoint: checkpoint) { layer in
            RoutingPolicy(sequenceCapacity: layer.expertCapacity)
        }
        var dropped = 0
        for layer in try fixture.layers() {
            let batch = try reference.tensor("\(layer).capacity_hidden_states")
            let result = try await model.forward(
                layer: layer, hidden: batch.matrix(), request: RoutingRequest(shape: batch.shape))
            dropped += result.routing.droppedSlots
            let error = relativeError(result.output.values, try reference.tensor("\(layer).capacity_output").floats())
            #expect(error <= fixture.tolerance, "layer \(layer): relative error \(error)")
        }
        #expect(dropped > 0, "the fixture must exercise the capacity")
    }
}
