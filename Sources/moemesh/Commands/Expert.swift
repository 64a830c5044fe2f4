import ArgumentParser
import MoEExpert
import MoEServing

struct Expert: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve expert FFNs of a model (gRPC moemesh.v1.Expert).")

    @Option(help: "Model folder (config.json + *.safetensors).")
    var model: String

    @Option(help: "Experts to host: LAYER:EXPERTS items, comma-separated; * for all, N or A-B. Example: '*:0-3'.")
    var experts: String = "*:*"

    @Option(help: "OpenBLAS threads (default: one per core).")
    var threads: Int?

    @Option(help: "Address to listen on.")
    var host: String = "127.0.0.1"

    @Option(help: "Port to listen on (0: any free port, printed in the ready line).")
    var port: Int = 0

    @Option(help: "Largest message, in MiB.")
    var maxMessageMib: Int = 256

    @Option(help: .hidden)
    var parentPid: Int32?

    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        let logger = try self.logging.bootstrap(label: "moemesh.expert")
        let selection: ExpertSelection
        switch ExpertSelection.parse(self.experts) {
        case .success(let parsed): selection = parsed
        case .failure(let error): throw ValidationError("--experts: \(error)")
        }
        let configuration = ExpertConfiguration(
            modelPath: self.model, experts: selection, threads: self.threads,
            serving: ServingConfiguration(host: self.host, port: self.port, maxMessageBytes: self.maxMessageMib << 20))
        let server = try buildExpertServer(configuration: configuration, logger: logger)
        try await runServiceGroup(services: [server], parentPID: self.parentPid, logger: logger)
    }
}
