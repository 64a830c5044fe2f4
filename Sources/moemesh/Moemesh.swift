import ArgumentParser
import MoEKernels

/// `moemesh`: serve Mixture-of-Experts layers as a mesh of gRPC services.
@main
struct Moemesh: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve Mixture-of-Experts layers as a mesh of gRPC services.",
        subcommands: [
            Up.self, Router.self, Expert.self, CoordinatorCommand.self, Forward.self, Status.self, Admin.self, Top.self,
            Demo.self, Health.self, K8s.self,
            Synth.self, Certs.self,
            Bench.self, Kernels.self, QuantizeReport.self, Plan.self, Simulate.self,
        ],
        defaultSubcommand: Up.self)

    /// Sets up the allocator (`MemoryTuning`), expands configuration files and variables into flags, then runs.
    /// (OpenBLAS's kernel set is chosen at the first BLAS call: `BLASKernelSet`.)
    static func main() async {
        MemoryTuning.configureAllocator()
        let arguments: [String]
        do {
            arguments = try await ConfigurationSources.expand(
                Array(CommandLine.arguments.dropFirst()), environment: ConfigurationSources.processEnvironment)
        } catch {
            Self.exit(withError: ValidationError("\(error)"))
        }
        await Self.main(arguments)
    }
}
