import MoECore
import MoEProto

extension Moemesh_V1_ExpertKey {
    public init(_ address: ExpertAddress) {
        self.init()
        self.layer = address.layer
        self.expert = Int32(address.expert)
    }

    public var address: ExpertAddress { ExpertAddress(layer: self.layer, expert: Int(self.expert)) }
}
