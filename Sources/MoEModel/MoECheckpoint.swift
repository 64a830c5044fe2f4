import MoECore

/// A model folder read through its architecture: MoE layers, gate weights and expert weights.
public struct MoECheckpoint: Sendable {
    public let folder: ModelFolder
    public let architecture: any MoEArchitecture

    public init(path: String) throws(ModelError) {
        self.folder = try ModelFolder(path: path)
        self.architecture = try Architectures.resolve(self.folder.config)
    }

    public var modelType: String { self.architecture.modelType }
    public var hiddenSize: Int { self.architecture.hiddenSize }
    public var layers: [MoELayerSpec] { self.architecture.layers }

    /// The MoE layer named `name`.
    public func layer(_ name: String) throws(ModelError) -> MoELayerSpec {
        guard let layer = self.layers.first(where: { $0.name == name }) else {
            throw .unknownLayer(layer: name, known: self.layers.map(\.name))
        }
        return layer
    }

    /// The router tensors of a layer (`W_r: [E, H]` and biases).
    public func routerWeights(layer: MoELayerSpec) throws(ModelError) -> LayerRouterWeights {
        try self.architecture.routerWeights(layer: layer, from: self.folder)
    }

    /// The gate (router) weight `W_r: [E, H]` of a layer.
    public func gateWeight(layer: MoELayerSpec) throws(ModelError) -> Matrix {
        try self.routerWeights(layer: layer).weight
    }

    /// The weights of expert `expert` of `layer` (`ExpertAddress.shared` for its shared expert), widened to f32.
    public func expertWeights(layer: MoELayerSpec, expert: Int) throws(ModelError) -> ExpertWeights {
        guard (0..<layer.numExperts).contains(expert) || (expert == ExpertAddress.shared && layer.sharedExpert != nil)
        else {
            throw .unknownExpert(layer: layer.name, expert: expert, numExperts: layer.numExperts)
        }
        return try self.architecture.loadExpert(layer: layer, expert: expert, from: self.folder)
    }
}

extension GateProbes {
    /// The probes of every MoE layer of `checkpoint` (reads the gates only).
    public init(checkpoint: MoECheckpoint) throws(ModelError) {
        var layers: [(name: String, values: [Float])] = []
        for layer in checkpoint.layers {
            layers.append((layer.name, Self.probe(try checkpoint.gateWeight(layer: layer))))
        }
        self.init(layers: layers)
    }
}
