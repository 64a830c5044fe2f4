import MoECore
import MoEKernels
import MoEModel
import MoEServing

/// Configuration of an expert service (`moemesh expert`).
///
/// Keys: `--model` (model folder, required), `--experts` (selection, default `*:*`, see `ExpertSelection`),
/// `--threads` (OpenBLAS threads, default: every core), `--coordinator HOST:PORT` (register and heartbeat there),
/// `--group` (scaling group, default: the selection), `--advertise-host` (the host routers use, default: the
/// listening host), `--unix-socket` (a Unix domain socket to listen on as well; routers on the same host use it),
/// `--instance` (process id or pod name, for the scaler; default `$POD_NAME`, else the pid), `--precision` (how
/// each expert's weights are stored, see `PrecisionPlan`; default: the device's),
/// plus the serving keys (`ServingConfiguration`).
public struct ExpertConfiguration: Sendable {
    public var modelPath: String
    public var experts: ExpertSelection
    /// OpenBLAS threads for this process; nil keeps OpenBLAS's choice (one per core).
    public var threads: Int?
    public var serving: ServingConfiguration
    /// The coordinator to register with; nil: none (routers are given this service's address).
    public var coordinator: ServiceEndpoint?
    public var group: String?
    public var advertiseHost: String?
    /// A Unix domain socket served beside the TCP port, registered for routers on this host; nil: none.
    public var unixSocket: String?
    public var instance: String
    /// Added to every `Compute` call (tests and demos: a slower device).
    public var computeDelay: Duration?
    /// Most bytes of resident expert weights on the device (`--memory-budget-mib` on the CPU,
    /// `--gpu-memory-budget-mib` on a GPU); nil: every hosted expert stays loaded.
    public var memoryBudgetBytes: Int?
    /// Where the kernels run (`--device cpu|cuda[:N]`).
    public var device: ComputeDevice
    /// How each hosted expert's weights are stored (`--precision`).
    public var precisions: PrecisionPlan

    public init(
        modelPath: String, experts: ExpertSelection = .all, threads: Int? = nil,
        serving: ServingConfiguration = ServingConfiguration(), coordinator: ServiceEndpoint? = nil,
        group: String? = nil, advertiseHost: String? = nil, unixSocket: String? = nil, instance: String,
        computeDelay: Duration? = nil,
        memoryBudgetBytes: Int? = nil, device: ComputeDevice = .cpu, precisions: PrecisionPlan = .deviceDefault
    ) {
        self.precisions = precisions
        self.memoryBudgetBytes = memoryBudgetBytes
        self.device = device
        self.modelPath = modelPath
        self.experts = experts
        self.threads = threads
        self.serving = serving
        self.coordinator = coordinator
        self.group = group
        self.advertiseHost = advertiseHost
        self.unixSocket = unixSocket
        self.instance = instance
        self.computeDelay = computeDelay
    }
}
