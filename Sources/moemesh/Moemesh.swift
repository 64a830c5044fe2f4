import ArgumentParser
import MoECore
import MoEKernels
import MoEServing

#if canImport(Glibc)
    import Glibc
#endif

/// `moemesh`: serve Mixture-of-Experts layers as a mesh of gRPC services.
@main
struct Moemesh: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve Mixture-of-Experts layers as a mesh of gRPC services.",
        version: MoEMeshVersion.current,
        subcommands: [
            Up.self, Router.self, Expert.self, CoordinatorCommand.self, Forward.self, Status.self, Admin.self, Top.self,
            Demo.self, Health.self, K8s.self,
            Synth.self, Certs.self,
            Bench.self, Kernels.self, QuantizeReport.self, Plan.self, Simulate.self,
        ],
        defaultSubcommand: Up.self)

    /// Sets up the allocator (`MemoryTuning`) and the descriptor limit (`DescriptorLimit`), expands configuration files
    /// and variables into flags, then runs.
    /// (OpenBLAS's kernel set is chosen at the first BLAS call: `BLASKernelSet`.)
    static func main() async {
        MemoryTuning.configureAllocator()
        DescriptorLimit.raiseToHardLimit()
        let status: Int32
        do {
            let arguments: [String]
            do {
                arguments = try await ConfigurationSources.expand(
                    Array(CommandLine.arguments.dropFirst()), environment: ConfigurationSources.processEnvironment)
            } catch {
                throw ValidationError("\(error)")
            }
            var command = try Self.parseAsRoot(arguments)
            if var asynchronous = command as? any AsyncParsableCommand {
                try await asynchronous.run()
            } else {
                try command.run()
            }
            status = 0
        } catch {
            status = Self.report(error)
        }
        // Ends without running C++ static destructors: gRPC's core (the data plane) keeps threads of its own that
        // may still be winding down, and destructors racing them tripped the core's reference-count assertions at
        // exit. Everything worth keeping is written and closed by now.
        fflush(nil)
        _exit(status)
    }

    /// Prints what ArgumentParser says of `error` (help on standard output, a failure on standard error); returns
    /// the exit status it names.
    private static func report(_ error: any Error) -> Int32 {
        let message = Self.fullMessage(for: error)
        let code = Self.exitCode(for: error)
        if !message.isEmpty {
            fflush(nil)  // what was printed before comes first
            let text = message + "\n"
            _ = text.withCString { write(code == .success ? STDOUT_FILENO : STDERR_FILENO, $0, strlen($0)) }
        }
        return code.rawValue
    }
}
