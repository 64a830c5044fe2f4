import GRPCNIOTransportHTTP2
import MoECore

extension ServiceEndpoint {
    /// The endpoint of a server transport's bound address; nil for a non-IP (e.g. Unix socket) address.
    public init?(listening address: SocketAddress) {
        if let ipv4 = address.ipv4 {
            self.init(host: ipv4.host, port: ipv4.port)
        } else if let ipv6 = address.ipv6 {
            self.init(host: ipv6.host, port: ipv6.port)
        } else {
            return nil
        }
    }
}
