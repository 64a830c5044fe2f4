import GRPCCore
import MoEDataPlane

#if canImport(Glibc)
    import Glibc
#endif

extension ServingConfiguration {
    /// The data plane's server settings from this configuration: its address (and `unixSocket` beside it), TLS
    /// read from the PEM files, the core's message limit at twice the services' own (they refuse larger messages
    /// RESOURCE_EXHAUSTED naming their limit, before decoding), streams per connection, keepalive, connection age.
    public func dataPlaneServerConfiguration(unixSocket: String? = nil) throws -> DataPlaneServer.Configuration {
        let address = self.host.contains(":") ? "[\(self.host)]:\(self.port)" : "\(self.host):\(self.port)"
        if let tls = self.tls, tls.clientAuth == .optional, tls.ca != nil, self.acceptedTokens == nil {
            throw TLSError(
                "--tls-client-auth optional lets clients in without a certificate: expected --auth-tokens as well, "
                    + "so that they need a token, got none")
        }
        var configuration = DataPlaneServer.Configuration(address: address, tls: try self.tls?.dataPlaneServerTLS())
        configuration.alsoAddress = unixSocket.map { "unix:\($0)" }
        configuration.maxReceiveMessageBytes = min(self.maxMessageBytes * 2, Int(Int32.max))
        configuration.maxSendMessageBytes = min(self.maxMessageBytes * 2, Int(Int32.max))
        configuration.maxConcurrentStreams = self.maxConcurrentCallsPerConnection
        configuration.keepaliveTime = Self.keepaliveTime
        configuration.keepaliveTimeout = Self.keepaliveTimeout
        configuration.maxConnectionAge = self.maxConnectionAge
        return configuration
    }

    /// The data plane's channel settings: TLS from the PEM files (and `--tls-server-name`), the message limit,
    /// keepalive.
    public func dataPlaneChannelConfiguration() throws -> DataPlaneChannel.Configuration {
        var configuration = DataPlaneChannel.Configuration(tls: try self.tls?.dataPlaneClientTLS())
        configuration.maxReceiveMessageBytes = min(self.maxMessageBytes * 2, Int(Int32.max))
        configuration.maxSendMessageBytes = min(self.maxMessageBytes * 2, Int(Int32.max))
        configuration.keepaliveTime = Self.keepaliveTime
        configuration.keepaliveTimeout = Self.keepaliveTimeout
        return configuration
    }

    /// The token check of every data-plane server of this process (`AuthPolicy.mesh`), when tokens are configured.
    public var dataPlaneAdmission: DataPlaneServer.Admission? {
        guard let tokens = self.acceptedTokens else { return nil }
        return { context in
            do throws(RPCError) {
                try AuthPolicy.mesh.check(context.metadata, method: String(context.method.dropFirst()), tokens: tokens)
                return nil
            } catch {
                return error
            }
        }
    }
}

extension TLSFiles {
    /// A server's TLS: its certificate and key; with a CA, client certificates that CA signed are required.
    public func dataPlaneServerTLS() throws -> DataPlaneTLS {
        try self.validateForServer()
        return DataPlaneTLS(
            certificateChain: try Self.read(self.certificate!, "--tls-cert"),
            privateKey: try Self.read(self.privateKey!, "--tls-key"),
            rootCertificates: try self.ca.map { try Self.read($0, "--tls-ca") }, clientAuth: self.clientAuth)
    }

    /// A client's TLS: the CA it verifies servers with, its own certificate when it has one, the server name.
    public func dataPlaneClientTLS() throws -> DataPlaneTLS {
        try self.validateForClient()
        return DataPlaneTLS(
            certificateChain: try self.certificate.map { try Self.read($0, "--tls-cert") },
            privateKey: try self.privateKey.map { try Self.read($0, "--tls-key") },
            rootCertificates: try Self.read(self.ca!, "--tls-ca"), serverName: self.serverName)
    }

    /// The text of a PEM file, or an error naming the option and the file.
    static func read(_ path: String, _ option: String) throws(TLSError) -> String {
        guard let file = fopen(path, "rb") else {
            throw TLSError("\(option): cannot read \(path): \(String(cString: strerror(errno)))")
        }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16 << 10)
        while true {
            let count = fread(&buffer, 1, buffer.count, file)
            if count <= 0 { break }
            bytes += buffer.prefix(count)
        }
        guard bytes.count < 1 << 20, String(decoding: bytes, as: UTF8.self).contains("-----BEGIN") else {
            throw TLSError("\(option): expected a PEM file, got \(bytes.count) bytes without '-----BEGIN' in \(path)")
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
