import Logging
import MoECore
import MoEKernels
import MoEModel
import MoEServing
import ServiceLifecycle

/// Builds an expert service from its configuration: loads the selected experts and returns the server as a
/// `Service` to run in a `ServiceGroup`. Prints the ready line (`expert listening on HOST:PORT`) once serving.
public func buildExpertServer(
    configuration: ExpertConfiguration, logger: Logger
) throws -> GRPCServerService {
    if let threads = configuration.threads { BLAS.threadCount = threads }
    let checkpoint = try MoECheckpoint(path: configuration.modelPath)
    let experts = configuration.experts.resolve(layers: checkpoint.layers)
    guard !experts.isEmpty else {
        throw ExpertStartupError.noExperts(selection: configuration.experts.description,
                                           layers: checkpoint.layers.map(\.name))
    }
    let service = try ExpertService(checkpoint: checkpoint, experts: experts)
    logger.info(
        "loaded experts",
        metadata: [
            "model": "\(configuration.modelPath)", "model_type": "\(checkpoint.modelType)",
            "experts": "\(service.hostedSummary)", "blas_threads": "\(BLAS.threadCount)",
            "blas_kernels": "\(BLAS.coreName)",
        ])
    return GRPCServerService(
        transport: configuration.serving.makeServerTransport(), services: [service]
    ) { endpoint in
        logger.info("serving", metadata: ["address": "\(endpoint)"])
        ReadyLine.print(role: "expert", endpoint: endpoint)
    }
}

/// Why an expert service could not start.
public enum ExpertStartupError: Error, CustomStringConvertible {
    case noExperts(selection: String, layers: [String])

    public var description: String {
        switch self {
        case .noExperts(let selection, let layers):
            "expert selection '\(selection)' matches no expert; MoE layers: \(layers.joined(separator: ", "))"
        }
    }
}
