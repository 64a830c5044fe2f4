import ArgumentParser
import MoEBench
import MoECore
import MoEModel
import MoEProcesses
import MoEServing

#if canImport(Glibc)
    import Glibc
#endif

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Watch the coordinator at work: a local mesh of the demo model under a Zipf-skewed load.",
        discussion: """
            Starts the mesh (coordinator, one expert process per expert index, router), drives a load skewed to a \
            few experts, shows a live table of expert groups (load, replicas, state), lets the coordinator replicate \
            the hottest and scale idle ones to zero, sends one request to an expert scaled to zero (cold start), then \
            prints a summary: balancedness before and after, replicas added and removed, requests sent and failed. \
            About a minute.
            """)

    @Flag(help: "Print only the summary, as one JSON object (the live table goes to standard error).")
    var json = false

    @Option(help: "Seconds of load with autoscaling held.")
    var beforeS: Int = 8

    @Option(help: "Seconds of load while the coordinator scales.")
    var scalingS: Int = 30

    @Option(help: "Seconds of load once settled, to measure balancedness after.")
    var afterS: Int = 8

    @Option(help: "Expert groups with no rows for this many seconds go to zero replicas.")
    var idleS: Int = 8

    @Option(help: "Concurrent clients.")
    var workers: Int = 4

    @Option(help: "Where the demo model is cached (default: $MOEMESH_CACHE or ~/.cache/moemesh).")
    var cacheDir: String?

    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        for (name, value) in [
            ("--before-s", self.beforeS), ("--scaling-s", self.scalingS), ("--after-s", self.afterS),
            ("--idle-s", self.idleS), ("--workers", self.workers),
        ]
        where value < 1 {
            throw ValidationError("\(name): expected at least 1, got \(value)")
        }
    }

    func run() async throws {
        var logging = self.logging
        if logging.logLevel == "info" { logging.logLevel = "warning" }
        let logger = try logging.bootstrap(label: "moemesh.demo")
        let demo = try DemoModel.ensure(cacheDirectory: self.cacheDir ?? DemoModel.defaultCacheDirectory)
        var configuration = MeshDemo.Configuration(executable: ChildProcess.currentExecutable, modelPath: demo.path)
        configuration.before = .seconds(self.beforeS)
        configuration.scaling = .seconds(self.scalingS)
        configuration.after = .seconds(self.afterS)
        configuration.idleTimeout = .seconds(self.idleS)
        configuration.workers = self.workers
        let json = self.json
        let runner = MeshDemo(configuration: configuration, logger: logger) { text in
            if json {
                let line = text + "\n"
                _ = line.withCString { write(STDERR_FILENO, $0, strlen($0)) }
            } else {
                print(text)
                fflush(nil)
            }
        }
        let summary = try await runner.run()
        if self.json {
            print(summary.json)
        } else {
            print(
                """

                summary: \(summary.requestsSent) requests sent, \(summary.requestsFailed) failed; \
                balancedness \(DecimalFormat.fixed(summary.balancednessBefore, 2)) before → \
                \(DecimalFormat.fixed(summary.balancednessAfter, 2)) after; \(summary.replicasAdded) replicas added, \
                \(summary.replicasRemoved) removed; cold start \(DecimalFormat.fixed(summary.coldStartMs, 0)) ms; \
                \(DecimalFormat.fixed(summary.durationS, 0)) s in all
                """)
        }
    }
}
