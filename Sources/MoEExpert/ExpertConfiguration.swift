import MoEServing

/// Configuration of an expert service (`moemesh expert`).
///
/// Keys: `--model` (model folder, required), `--experts` (selection, default `*:*`, see `ExpertSelection`),
/// `--threads` (OpenBLAS threads, default: every core), plus the serving keys (`ServingConfiguration`).
public struct ExpertConfiguration: Sendable {
    public var modelPath: String
    public var experts: ExpertSelection
    /// OpenBLAS threads for this process; nil keeps OpenBLAS's choice (one per core).
    public var threads: Int?
    public var serving: ServingConfiguration

    public init(
        modelPath: String, experts: ExpertSelection = .all, threads: Int? = nil,
        serving: ServingConfiguration = ServingConfiguration()
    ) {
        self.modelPath = modelPath
        self.experts = experts
        self.threads = threads
        self.serving = serving
    }
}
