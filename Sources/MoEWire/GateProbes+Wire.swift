import MoECore
import MoEProto

extension GateProbes {
    /// The probes as sent by experts (`DescribeExperts`, `Register`).
    public var messages: [Moemesh_V1_GateProbe] {
        self.layers.map { layer in
            .with {
                $0.layer = layer.name
                $0.values = layer.values
            }
        }
    }

    public init(_ messages: [Moemesh_V1_GateProbe]) {
        self.init(layers: messages.map { ($0.layer, $0.values) })
    }
}
