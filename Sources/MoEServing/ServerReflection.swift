import Foundation
import GRPCCore
import GRPCProtobuf
import MoEProto
import SwiftProtobuf

/// gRPC server reflection (`grpc.reflection.v1.ServerReflection`, and the same messages under `v1alpha`, which older
/// tools ask): the services a server serves and the descriptors of Protos/, so that grpcurl, Postman or a client
/// generator reach every MoEMesh service without the .proto files.
///
/// Each request gets one response: `list_services` the server's services; `file_by_filename` and
/// `file_containing_symbol` (a package-qualified message, enum, service or method) the file and every file it
/// imports; the protos declare no extensions, so extension requests get an empty answer or NOT_FOUND.
public struct ServerReflection: Sendable {
    /// Full names of the services this server serves, as `list_services` gives them.
    public let services: [String]

    /// The reflection service of both versions (the messages are the same, field for field); v1's is listed beside
    /// the services given.
    public static let reflectionServices = [
        "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection",
    ]
    /// The method paths of both versions.
    public static let methods = Self.reflectionServices.map { "/\($0)/ServerReflectionInfo" }

    /// - Parameter services: the server's own services; health and reflection are added.
    public init(services: [String]) {
        self.services = services + ["grpc.health.v1.Health", Self.reflectionServices[0]]
    }

    /// The answer to one request.
    public func answer(_ request: Grpc_Reflection_V1_ServerReflectionRequest)
        -> Grpc_Reflection_V1_ServerReflectionResponse
    {
        var response = Grpc_Reflection_V1_ServerReflectionResponse()
        response.validHost = request.host
        response.originalRequest = request
        let index = Self.index
        switch request.messageRequest {
        case .listServices:
            response.listServicesResponse = .with {
                $0.service = self.services.map { name in .with { $0.name = name } }
            }
        case .fileByFilename(let name):
            guard index.files[name] != nil else {
                response.errorResponse = Self.notFound(
                    "file '\(name)': expected one of \(index.files.keys.sorted().joined(separator: ", "))")
                break
            }
            response.fileDescriptorResponse = index.withDependencies(of: name)
        case .fileContainingSymbol(let symbol):
            guard let file = index.fileOfSymbol[symbol] else {
                response.errorResponse = Self.notFound(
                    "symbol '\(symbol)': expected a package-qualified message, enum, service or method of "
                        + index.packages.sorted().joined(separator: ", "))
                break
            }
            response.fileDescriptorResponse = index.withDependencies(of: file)
        case .fileContainingExtension(let extensionRequest):
            response.errorResponse = Self.notFound(
                "extension \(extensionRequest.extensionNumber) of '\(extensionRequest.containingType)': these protos "
                    + "declare no extensions")
        case .allExtensionNumbersOfType(let type):
            response.allExtensionNumbersResponse = .with { $0.baseTypeName = type }
        case nil:
            response.errorResponse = .with {
                $0.errorCode = 3  // INVALID_ARGUMENT
                $0.errorMessage =
                    "expected one of list_services, file_by_filename, file_containing_symbol, "
                    + "file_containing_extension, all_extension_numbers_of_type; got none"
            }
        }
        return response
    }

    private static func notFound(_ message: String) -> Grpc_Reflection_V1_ErrorResponse {
        .with {
            $0.errorCode = 5  // NOT_FOUND
            $0.errorMessage = message
        }
    }

    /// The files of Protos/ by name, serialized, with the symbols each declares.
    struct Index: Sendable {
        var files: [String: (serialized: Data, dependencies: [String])] = [:]
        var fileOfSymbol: [String: String] = [:]
        var packages: Set<String> = []

        /// `file` and every file it imports, each once, the file first.
        func withDependencies(of file: String) -> Grpc_Reflection_V1_FileDescriptorResponse {
            var order: [String] = [], seen: Set<String> = []
            var pending = [file]
            while let next = pending.first {
                pending.removeFirst()
                guard seen.insert(next).inserted, let entry = self.files[next] else { continue }
                order.append(next)
                pending += entry.dependencies
            }
            return .with { $0.fileDescriptorProto = order.compactMap { self.files[$0]?.serialized } }
        }
    }

    static let index: Index = {
        var index = Index()
        guard
            let bytes = Data(
                base64Encoded: ProtoDescriptors.fileDescriptorSetBase64, options: .ignoreUnknownCharacters),
            let set = try? Google_Protobuf_FileDescriptorSet(serializedBytes: bytes)
        else { preconditionFailure("ProtoDescriptors: not a FileDescriptorSet (run scripts/generate-protos.sh)") }
        for file in set.file {
            guard let serialized = try? file.serializedData() else { continue }
            index.files[file.name] = (serialized, file.dependency)
            index.packages.insert(file.package)
            let prefix = file.package.isEmpty ? "" : file.package + "."
            func add(_ message: Google_Protobuf_DescriptorProto, under scope: String) {
                let name = scope + message.name
                index.fileOfSymbol[name] = file.name
                for nested in message.nestedType { add(nested, under: name + ".") }
                for nested in message.enumType { index.fileOfSymbol[name + "." + nested.name] = file.name }
            }
            for message in file.messageType { add(message, under: prefix) }
            for enumeration in file.enumType { index.fileOfSymbol[prefix + enumeration.name] = file.name }
            for service in file.service {
                index.fileOfSymbol[prefix + service.name] = file.name
                for method in service.method {
                    index.fileOfSymbol[prefix + service.name + "." + method.name] = file.name
                }
            }
        }
        return index
    }()
}

/// Server reflection on a grpc-swift server (the coordinator): both versions' `ServerReflectionInfo`.
public struct ServerReflectionService: RegistrableRPCService {
    public let reflection: ServerReflection

    public init(reflection: ServerReflection) { self.reflection = reflection }

    public func registerMethods<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
        for service in ServerReflection.reflectionServices {
            router.registerHandler(
                forMethod: MethodDescriptor(fullyQualifiedService: service, method: "ServerReflectionInfo"),
                deserializer: ProtobufDeserializer<Grpc_Reflection_V1_ServerReflectionRequest>(),
                serializer: ProtobufSerializer<Grpc_Reflection_V1_ServerReflectionResponse>(),
                handler: { request, _ in
                    StreamingServerResponse { writer in
                        for try await message in request.messages {
                            try await writer.write(self.reflection.answer(message))
                        }
                        return [:]
                    }
                })
        }
    }
}
