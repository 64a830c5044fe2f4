import MoECore
import Crypto
import MoEServing
import SwiftASN1
import X509

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// A development CA and certificates signed by it (`moemesh certs`): `ca.pem`/`ca-key.pem`, `server.pem`/
/// `server-key.pem` (every service: it names `hosts`, `localhost` and 127.0.0.1, and serves as a client certificate
/// too, for the mesh's own calls under mutual TLS), `client.pem`/`client-key.pem` (users' tools). ECDSA P-256,
/// valid for `days`.
enum DevelopmentCertificates {
    struct Files: Sendable {
        var pem: [String: String] = [:]
    }

    /// The PEM text of each file, by name.
    static func make(hosts: [String], days: Int = 365) throws -> Files {
        let now = Date()
        let notBefore = now.addingTimeInterval(-3600)
        let notAfter = now.addingTimeInterval(Double(days) * 86_400)
        let caKey = P256.Signing.PrivateKey()
        let caName = try DistinguishedName { CommonName("MoEMesh development CA") }
        let ca = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(),
            publicKey: Certificate.PublicKey(caKey.publicKey), notValidBefore: notBefore, notValidAfter: notAfter,
            issuer: caName, subject: caName, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(digitalSignature: true, keyCertSign: true))
                SubjectKeyIdentifier(hash: Certificate.PublicKey(caKey.publicKey))
            },
            issuerPrivateKey: Certificate.PrivateKey(caKey))

        var names: [GeneralName] = [.dnsName("localhost"), .ipAddress(ASN1OctetString(contentBytes: [127, 0, 0, 1]))]
        for host in hosts where host != "localhost" && host != "127.0.0.1" {
            if let address = ServiceEndpoint.ipv4Bytes(host) {
                names.append(.ipAddress(ASN1OctetString(contentBytes: ArraySlice(address))))
            } else {
                names.append(.dnsName(host))
            }
        }
        func leaf(_ commonName: String, _ alternativeNames: [GeneralName]) throws -> (
            Certificate, P256.Signing.PrivateKey
        ) {
            let key = P256.Signing.PrivateKey()
            let certificate = try Certificate(
                version: .v3, serialNumber: Certificate.SerialNumber(),
                publicKey: Certificate.PublicKey(key.publicKey), notValidBefore: notBefore, notValidAfter: notAfter,
                issuer: caName, subject: try DistinguishedName { CommonName(commonName) },
                signatureAlgorithm: .ecdsaWithSHA256,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.notCertificateAuthority)
                    Critical(KeyUsage(digitalSignature: true))
                    try ExtendedKeyUsage([.serverAuth, .clientAuth])
                    SubjectAlternativeNames(alternativeNames)
                },
                issuerPrivateKey: Certificate.PrivateKey(caKey))
            return (certificate, key)
        }
        let (server, serverKey) = try leaf("moemesh service", names)
        let (client, clientKey) = try leaf("moemesh client", [.dnsName("moemesh-client")])
        var files = Files()
        files.pem["ca.pem"] = try ca.serializeAsPEM().pemString + "\n"
        files.pem["ca-key.pem"] = caKey.pemRepresentation + "\n"
        files.pem["server.pem"] = try server.serializeAsPEM().pemString + "\n"
        files.pem["server-key.pem"] = serverKey.pemRepresentation + "\n"
        files.pem["client.pem"] = try client.serializeAsPEM().pemString + "\n"
        files.pem["client-key.pem"] = clientKey.pemRepresentation + "\n"
        return files
    }
}
