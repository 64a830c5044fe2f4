import ArgumentParser
import MoECoordinator
import MoEPolicy

/// The coordinator's timing and autoscaling flags (`up`, `coordinator`, `demo`).
struct AutoscaleOptions: ParsableArguments {
    @Flag(help: "Replicate hot experts and remove surplus replicas (and, with --scale-to-zero-after-s, idle experts).")
    var autoscale = false

    @Option(help: "Replicas of all experts together, at most (default: twice the expert groups).")
    var maxReplicas: Int?

    @Option(help: "Replicas of one expert group, at most.")
    var maxReplicasPerExpert: Int = 4

    @Option(help: "Replicate a group when its load per replica is at least this many times the mean.")
    var scaleUpRatio: Double = 1.5

    @Option(help: "Remove a replica when the load over one fewer would be at most this many times the mean.")
    var scaleDownRatio: Double = 0.75

    @Option(help: "Seconds a group is left alone after it changed.")
    var cooldownS: Double = 5

    @Option(
        help:
            "Scale an expert group to zero after this many seconds without rows (default: never); it is started again on the first request that needs it."
    )
    var scaleToZeroAfterS: Double?

    @Option(help: "Replicas heartbeat this often, in milliseconds.")
    var heartbeatMs: Int = 500

    @Option(help: "A replica silent this long is removed, in milliseconds.")
    var leaseMs: Int = 3000

    @Option(help: "A draining replica is stopped at the latest after this many seconds.")
    var drainTimeoutS: Double = 30

    func settings(groups: Int) throws -> Coordinator.Settings {
        guard self.heartbeatMs > 0, self.leaseMs > self.heartbeatMs else {
            throw ValidationError(
                "--lease-ms must exceed --heartbeat-ms (> 0); got \(self.leaseMs) and \(self.heartbeatMs)")
        }
        guard self.scaleUpRatio > self.scaleDownRatio, self.scaleDownRatio > 0 else {
            throw ValidationError(
                "--scale-up-ratio must exceed --scale-down-ratio (> 0); got \(self.scaleUpRatio) and \(self.scaleDownRatio)"
            )
        }
        guard self.maxReplicasPerExpert >= 1 else {
            throw ValidationError("--max-replicas-per-expert: expected at least 1, got \(self.maxReplicasPerExpert)")
        }
        if let idle = self.scaleToZeroAfterS, idle <= 0 {
            throw ValidationError("--scale-to-zero-after-s: expected more than 0, got \(idle)")
        }
        if (self.scaleToZeroAfterS != nil || self.maxReplicas != nil) && !self.autoscale {
            throw ValidationError("--scale-to-zero-after-s and --max-replicas need --autoscale")
        }
        let autoscale =
            self.autoscale
            ? AutoscalePolicy.Settings(
                maxTotalReplicas: self.maxReplicas ?? 2 * groups, maxReplicasPerGroup: self.maxReplicasPerExpert,
                scaleUpRatio: self.scaleUpRatio, scaleDownRatio: self.scaleDownRatio,
                cooldown: .milliseconds(Int64(self.cooldownS * 1000)),
                idleTimeout: self.scaleToZeroAfterS.map { .milliseconds(Int64($0 * 1000)) })
            : nil
        return Coordinator.Settings(
            heartbeatInterval: .milliseconds(self.heartbeatMs), lease: .milliseconds(self.leaseMs),
            drainTimeout: .milliseconds(Int64(self.drainTimeoutS * 1000)), autoscale: autoscale)
    }
}
