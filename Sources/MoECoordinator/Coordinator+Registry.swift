import Logging
import MoECore
import MoEModel
import MoEServing

// The registry: replicas register, heartbeat (their lease) and deregister.
extension Coordinator {
    /// Adds a replica (replacing any at the same endpoint) and grants it a lease.
    public func register(_ request: ReplicaRegistration) throws(CoordinatorError) -> ReplicaLease {
        guard ServiceEndpoint(request.endpoint) != nil else {
            throw .invalidRequest("endpoint: expected HOST:PORT, got '\(request.endpoint)'")
        }
        try NameRule.group.check(request.group, field: "group")
        try NameRule.label.check(request.instance, field: "instance")
        try NameRule.label.check(request.device, field: "device")
        try NameRule.label.check(request.hostID, field: "host_id")
        if request.unixSocket.utf8.count > 108 || request.unixSocket.contains(where: \.isNewline) {
            throw .invalidRequest(
                "unix_socket: expected a path of at most 108 bytes on one line, got \(request.unixSocket.utf8.count) bytes"
            )
        }
        guard request.modelType == self.modelType, request.hiddenSize == self.hiddenSize else {
            throw .invalidRequest(
                "model: expected \(self.modelType) with hidden size \(self.hiddenSize), "
                    + "got \(request.modelType) with hidden size \(request.hiddenSize)")
        }
        if !request.gateProbes.layers.isEmpty,
            let reason = self.gateProbes.mismatch(request.gateProbes, source: "the replica")
        {
            throw .invalidRequest("model: \(reason); expected a replica of the model this coordinator serves")
        }
        let experts = request.experts
        guard !experts.isEmpty else { throw .invalidRequest("experts: expected at least one, got none") }
        if let unknown = experts.first(where: { !self.isExpert($0) }) { throw .unknownExpert(unknown) }

        let now = ContinuousClock.now
        for (id, record) in self.replicas where record.endpoint == request.endpoint {
            self.replicas[id] = nil
        }
        let id = "r-" + String(UInt64.random(in: 0...UInt64.max), radix: 16)
        self.replicas[id] = ReplicaRecord(
            id: id, endpoint: request.endpoint, group: request.group, experts: experts, device: request.device,
            instance: request.instance, unixSocket: request.unixSocket, hostID: request.hostID,
            precisions: request.precisions, lastHeartbeat: now)
        if self.groups[request.group] == nil {
            self.groups[request.group] = GroupRecord(
                group: ScalingGroup(name: request.group, selection: request.group, experts: experts), desired: 0,
                lastChange: now, startable: false)
        }
        self.followRegistry(group: request.group)
        self.logger.info(
            "replica registered",
            metadata: [
                "replica": "\(id)", "endpoint": "\(request.endpoint)", "group": "\(request.group)",
                "experts": "\(experts.count)",
            ])
        self.changed()
        return ReplicaLease(
            replicaID: id, heartbeatInterval: self.settings.heartbeatInterval, lease: self.settings.lease)
    }

    /// Renews `replicaID`'s lease and records its load; an unknown replica is told so (it registers again).
    public func heartbeat(replicaID: String, load: ReplicaLoad) -> HeartbeatAnswer {
        guard var record = self.replicas[replicaID] else { return HeartbeatAnswer(known: false, state: .serving) }
        record.lastHeartbeat = .now
        record.load = load
        if record.drainingSince != nil { record.heartbeatsSinceDrain += 1 }
        self.replicas[replicaID] = record
        return HeartbeatAnswer(known: true, state: record.isServing ? .serving : .draining)
    }

    public func deregister(_ id: String) {
        guard let record = self.replicas.removeValue(forKey: id) else { return }
        self.logger.info("replica deregistered", metadata: ["replica": "\(id)", "endpoint": "\(record.endpoint)"])
        self.followRegistry(group: record.group)
        self.changed()
    }

    /// Groups no scaler runs follow what registers.
    func followRegistry(group name: String) {
        guard var group = self.groups[name], !group.startable else { return }
        group.desired = self.servingReplicas(of: name)
        self.groups[name] = group
    }

    func servingReplicas(of group: String) -> Int {
        self.replicas.values.filter { $0.group == group && $0.isServing }.count
    }

    func isExpert(_ address: ExpertAddress) -> Bool {
        guard let layer = self.layers[address.layer] else { return false }
        return address.isShared ? layer.sharedExpert != nil : (0..<layer.numExperts).contains(address.expert)
    }
}

/// What a name a replica registers with may hold: it goes into log lines, metric labels and status rows, so no
/// control characters, spaces or quotes (a newline would forge a log line), and a bounded length.
struct NameRule {
    /// ASCII punctuation allowed besides letters and digits.
    let punctuation: String
    let maxLength: Int
    let mayBeEmpty: Bool

    /// A group: an expert selection or a Deployment's name (`*:0-3`, `encoder.1:2,decoder.0:*`, `moemesh-expert-3`).
    static let group = NameRule(punctuation: "*:,._-", maxLength: 256, mayBeEmpty: false)
    /// An instance (a pid, a pod name), a device (`cuda:0`), a host identity (`BOOT-ID:net:[N]:mnt:[N]`); may be
    /// left out.
    static let label = NameRule(punctuation: ":,._-/@=[]", maxLength: 256, mayBeEmpty: true)

    func check(_ value: String, field: String) throws(CoordinatorError) {
        if value.isEmpty {
            if self.mayBeEmpty { return }
            throw .invalidRequest("\(field): expected a name, got an empty string")
        }
        guard value.utf8.count <= self.maxLength else {
            throw .invalidRequest("\(field): expected at most \(self.maxLength) bytes, got \(value.utf8.count)")
        }
        let allowed = { (scalar: Unicode.Scalar) in
            ("a"..."z").contains(scalar) || ("A"..."Z").contains(scalar) || ("0"..."9").contains(scalar)
                || self.punctuation.unicodeScalars.contains(scalar)
        }
        if let bad = value.unicodeScalars.first(where: { !allowed($0) }) {
            let code = String(bad.value, radix: 16, uppercase: true)
            throw .invalidRequest(
                "\(field): expected letters, digits and \(self.punctuation.map(String.init).joined(separator: " ")), "
                    + "got U+\(String(repeating: "0", count: max(0, 4 - code.count)) + code) in \(value.prefix(64).debugDescription)"
            )
        }
    }
}
