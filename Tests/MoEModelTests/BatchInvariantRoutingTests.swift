import MoECore
import MoERuntime
import MoETestSupport
import Testing

@testable import MoEModel

/// The layer's routing of a token does not depend on the batch it comes in (`GateProjection`).
@Suite("batch-invariant routing of the layer pipeline")
struct BatchInvariantRoutingTests {
    @Test(
        "logits, ids and weights of each token are bitwise the same alone and in a batch",
        arguments: [
            ModelSynthesizer.Shape(experts: 16, topK: 2, hiddenSize: 2048, intermediateSize: 8, layers: 1),
            ModelSynthesizer.Shape(experts: 64, topK: 6, hiddenSize: 1024, intermediateSize: 8, layers: 1),
            ModelSynthesizer.Shape(experts: 8, topK: 2, hiddenSize: 4096, intermediateSize: 8, layers: 1),
        ])
    func batchInvariant(shape: ModelSynthesizer.Shape) throws {
        let model = try SmallModel(shape: shape, seed: 77)
        defer { model.remove() }
        let checkpoint = try MoECheckpoint(path: model.path)
        let pipeline = try MoELayerPipeline(checkpoint: checkpoint, layer: checkpoint.layer("0"))
        let batch = model.randomHidden(tokens: 300, seed: 78)
        let together = pipeline.logits(batch)
        let routing = try pipeline.route(batch)
        let k = shape.topK
        for token in 0..<batch.rows {
            let alone = Matrix(rows: 1, columns: shape.hiddenSize, values: Array(batch.row(token)))
            #expect(
                pipeline.logits(alone).values.map(\.bitPattern) == Array(together.row(token)).map(\.bitPattern),
                "token \(token)")
            let single = try pipeline.route(alone)
            #expect(single.topkIDs == Array(routing.topkIDs[(token * k)..<((token + 1) * k)]), "token \(token)")
            #expect(
                single.topkWeights.map(\.bitPattern)
                    == Array(routing.topkWeights[(token * k)..<((token + 1) * k)]).map(\.bitPattern), "token \(token)")
        }
    }
}
