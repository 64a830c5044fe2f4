import Logging
import MoECUDA
import MoECore
import MoEKernels
import MoEDataPlane
import MoEModel
import MoEProto
import MoEServing
import MoEWire
import ServiceLifecycle

/// Builds an expert service from its configuration: loads the selected experts and returns the services to run in
/// a `ServiceGroup`, in order: the server, then (with a coordinator) the agent that registers it. Prints the ready
/// line (`expert listening on HOST:PORT`) once serving.
public func buildExpertServices(
    configuration: ExpertConfiguration, logger: Logger
) throws -> [any Service] {
    if let threads = configuration.threads { BLAS.threadCount = threads }
    let checkpoint = try MoECheckpoint(path: configuration.modelPath)
    let experts = configuration.experts.resolve(layers: checkpoint.layers)
    guard !experts.isEmpty else {
        throw ExpertStartupError.noExperts(
            selection: configuration.experts.description,
            layers: checkpoint.layers.map(\.name))
    }
    let backend: any ExpertBackend
    do { backend = try makeExpertBackend(configuration.device) } catch { throw ExpertStartupError.device("\(error)") }
    let service = try ExpertService(
        checkpoint: checkpoint, experts: experts, backend: backend, precisions: configuration.precisions,
        computeDelay: configuration.computeDelay,
        memoryBudgetBytes: configuration.memoryBudgetBytes,
        payloadLimit: PayloadLimit(bytes: configuration.serving.maxMessageBytes),
        loadShedder: LoadShedder(service: "expert", configuration: configuration.serving.loadShedding))
    // The f32 weights read while loading are freed by now: give their pages back before serving.
    MemoryTuning.returnFreeMemory()
    logger.info(
        "loaded experts",
        metadata: [
            "model": "\(configuration.modelPath)", "model_type": "\(checkpoint.modelType)",
            "memory_budget": "\(configuration.memoryBudgetBytes.map { "\($0 >> 20) MiB" } ?? "none: all resident")",
            "experts": "\(service.hostedSummary)", "device": "\(backend.summary)",
            "precision": "\(service.precisionSummary)",
        ])
    let listening = CoordinatorAgent.Listening()
    // Weights are loaded by now: ready once listening, or, under a coordinator, once registered.
    let health = HealthService(services: [Moemesh_V1_Expert.descriptor.fullyQualifiedService])
    let calls = DataPlaneCalls(metrics: service.metrics, service: "expert", logger: logger)
    let dataPlane = try DataPlaneServer(
        configuration: configuration.serving.dataPlaneServerConfiguration(unixSocket: configuration.unixSocket),
        methods: service.dataPlaneMethods(calls: calls).merging(health.dataPlaneMethods) { first, _ in first }
            .merging(ServerReflection(services: health.services).dataPlaneMethods) { first, _ in first },
        admission: configuration.serving.dataPlaneAdmission)
    let endpoint = ServiceEndpoint(host: configuration.serving.host, port: dataPlane.port)
    logger.info(
        "serving", metadata: ["address": "\(endpoint)", "unix_socket": "\(configuration.unixSocket ?? "none")"])
    listening.set(endpoint)
    if configuration.coordinator == nil { health.setAll(.serving) }
    ReadyLine.print(role: "expert", endpoint: endpoint)
    let server = DataPlaneServerService(
        server: dataPlane, health: health, drainTimeout: configuration.serving.drainTimeout,
        removingOnExit: configuration.unixSocket)
    let reloader = configuration.serving.acceptedTokens.map { [AuthTokensReloader(tokens: $0, logger: logger)] } ?? []
    guard let coordinator = configuration.coordinator else { return reloader + [server] }
    var registration = Moemesh_V1_RegisterRequest()
    registration.group = configuration.group ?? configuration.experts.description
    registration.experts = service.experts.map(Moemesh_V1_ExpertKey.init)
    registration.precisions = service.precisionMessages
    registration.gateProbes = service.gateProbes.messages
    registration.device = configuration.device.description
    registration.modelType = service.modelType
    registration.hiddenSize = Int32(service.hiddenSize)
    registration.instance = configuration.instance
    registration.unixSocket = configuration.unixSocket ?? ""
    registration.hostID = HostIdentity.current
    let agent = CoordinatorAgent(
        coordinator: coordinator, registration: registration, listening: listening,
        advertiseHost: configuration.advertiseHost, meter: service.meter, serving: configuration.serving,
        logger: logger,
        onRegistered: { health.setAll(.serving) })
    return reloader + [server, agent]
}

/// Why an expert service could not start.
public enum ExpertStartupError: Error, CustomStringConvertible {
    case noExperts(selection: String, layers: [String])
    case model(ModelError)
    case budgetTooSmall(budget: Int, oneExpert: Int)
    /// The device asked for cannot be used (no CUDA driver, no such GPU, a library missing).
    case device(String)
    /// A precision the device does not store, or weights it cannot hold.
    case precision(String)

    public var description: String {
        switch self {
        case .noExperts(let selection, let layers):
            "expert selection '\(selection)' matches no expert; MoE layers: \(layers.joined(separator: ", "))"
        case .model(let error): error.description
        case .budgetTooSmall(let budget, let oneExpert):
            "memory budget: expected at least one expert's \(oneExpert >> 20) MiB (\(oneExpert) bytes), got \(budget) bytes"
        case .device(let reason): "--device: \(reason)"
        case .precision(let reason): "--precision: \(reason)"
        }
    }
}
