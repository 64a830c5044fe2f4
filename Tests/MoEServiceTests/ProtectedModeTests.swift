import Foundation
import MoEServing
import Testing

@Suite("protected mode: who may change a service that has neither TLS nor tokens")
struct ProtectedModeTests {
    @Test("peers of this host are loopback addresses and Unix sockets; any other address is another host")
    func loopbackPeers() {
        for peer in [
            "ipv4:127.0.0.1:5000", "ipv4:127.3.4.5:1", "ipv6:[::1]:5000", "ipv6:[::ffff:127.0.0.1]:9", "unix:/s",
        ] {
            #expect(ProtectedModeInterceptor.isLoopback(peer: peer), "\(peer)")
        }
        for peer in ["ipv4:10.231.0.2:5000", "ipv4:1.127.0.0:1", "ipv6:[fe80::1]:5000", "ipv6:[::2]:1", "in-process:x"]
        {
            #expect(!ProtectedModeInterceptor.isLoopback(peer: peer), "\(peer)")
        }
    }

    @Test("it applies beyond loopback with neither TLS nor tokens, unless insecure")
    func whenItApplies() throws {
        #expect(!ServingConfiguration(host: "127.0.0.1").isProtected)
        var open = ServingConfiguration(host: "0.0.0.0")
        #expect(open.isProtected)
        open.insecure = true
        #expect(!open.isProtected)
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("protected-mode-tokens").path
        try "mesh secret-token-0123456789abcdef\n".write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        #expect(!ServingConfiguration(host: "0.0.0.0", acceptedTokens: try AuthTokens(path: file)).isProtected)
    }
}
