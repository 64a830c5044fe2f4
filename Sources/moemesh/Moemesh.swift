import ArgumentParser
import MoEKernels

/// `moemesh`: serve Mixture-of-Experts layers as a mesh of gRPC services.
@main
struct Moemesh: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve Mixture-of-Experts layers as a mesh of gRPC services.",
        subcommands: [
            Up.self, Router.self, Expert.self, CoordinatorCommand.self, Forward.self, Status.self, Admin.self, Demo.self,
            Synth.self,
            Bench.self,
        ],
        defaultSubcommand: Up.self)

    /// Picks OpenBLAS's kernel set from the CPU's features (it may re-execute this process once), then runs.
    static func main() async {
        BLASCoreSelection.reexecIfBeneficial()
        MemoryTuning.keepLargeAllocations()
        await Self.main(nil)
    }
}
