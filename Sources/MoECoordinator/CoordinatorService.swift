import GRPCCore
import MoECore
import MoEModel
import MoEProto
import MoEServing
import MoEWire

/// `moemesh.v1.Coordinator` over a `Coordinator`: the edge where messages become the coordinator's own types
/// (`CoordinatorWire.swift`) and its answers messages again.
public struct CoordinatorService: Moemesh_V1_Coordinator.SimpleServiceProtocol {
    public let coordinator: Coordinator

    public init(coordinator: Coordinator) { self.coordinator = coordinator }

    public func register(
        request: Moemesh_V1_RegisterRequest, context: ServerContext
    ) async throws -> Moemesh_V1_RegisterResponse {
        Moemesh_V1_RegisterResponse(try await self.coordinator.register(ReplicaRegistration(request)))
    }

    public func heartbeat(
        request: Moemesh_V1_HeartbeatRequest, context: ServerContext
    ) async throws -> Moemesh_V1_HeartbeatResponse {
        Moemesh_V1_HeartbeatResponse(
            await self.coordinator.heartbeat(replicaID: request.replicaID, load: ReplicaLoad(request.load)))
    }

    public func deregister(
        request: Moemesh_V1_DeregisterRequest, context: ServerContext
    ) async throws -> Moemesh_V1_DeregisterResponse {
        await self.coordinator.deregister(request.replicaID)
        return Moemesh_V1_DeregisterResponse()
    }

    public func watchTopology(
        request: Moemesh_V1_WatchTopologyRequest, response: RPCWriter<Moemesh_V1_Topology>, context: ServerContext
    ) async throws {
        let router = request.routerID.isEmpty ? context.remotePeer : request.routerID
        for await topology in await self.coordinator.watch(router: router) {
            try await response.write(Moemesh_V1_Topology(topology))
        }
    }

    public func reportDemand(
        request: Moemesh_V1_DemandReport, context: ServerContext
    ) async throws -> Moemesh_V1_DemandResponse {
        let report: DemandReport
        do { report = try DemandReport(request) } catch {
            throw RPCError(code: .invalidArgument, message: error.description)
        }
        try await self.coordinator.reportDemand(report)
        return Moemesh_V1_DemandResponse()
    }

    /// Asks for the missing experts, then waits (within the call's deadline) until each has a serving replica.
    public func ensureExperts(
        request: Moemesh_V1_EnsureExpertsRequest, context: ServerContext
    ) async throws -> Moemesh_V1_Topology {
        let addresses = request.experts.map(\.address)
        guard !addresses.isEmpty else {
            throw RPCError(code: .invalidArgument, message: "experts: expected at least one, got none")
        }
        try await self.coordinator.ensure(addresses, reason: request.reason)
        let started = ContinuousClock.now
        // The call's deadline cancels the wait.
        await self.coordinator.waitUntilCovered(addresses)
        guard await self.coordinator.covers(addresses) else {
            throw RPCError(
                code: .deadlineExceeded,
                message: "\(addresses.map(\.description).joined(separator: ", ")) not serving after "
                    + "\(DecimalFormat.milliseconds(ContinuousClock.now - started)) ms")
        }
        return Moemesh_V1_Topology(await self.coordinator.topology())
    }

    public func getStatus(
        request: Moemesh_V1_GetStatusRequest, context: ServerContext
    ) async throws -> Moemesh_V1_CoordinatorStatus {
        Moemesh_V1_CoordinatorStatus(await self.coordinator.status())
    }

    public func setPruned(
        request: Moemesh_V1_SetPrunedRequest, context: ServerContext
    ) async throws -> Moemesh_V1_SetPrunedResponse {
        guard request.hasExpert else {
            throw RPCError(code: .invalidArgument, message: "expert: expected a layer and an expert, got none")
        }
        var response = Moemesh_V1_SetPrunedResponse()
        response.pruned = try await self.coordinator.setPruned(request.expert.address, pruned: request.pruned)
            .map(Moemesh_V1_ExpertKey.init)
        return response
    }

    public func drainReplica(
        request: Moemesh_V1_DrainReplicaRequest, context: ServerContext
    ) async throws -> Moemesh_V1_DrainReplicaResponse {
        var response = Moemesh_V1_DrainReplicaResponse()
        response.replica = Moemesh_V1_Replica(
            try await self.coordinator.drain(replica: request.replicaID, reason: "admin"))
        return response
    }

    public func applyPlan(
        request: Moemesh_V1_ApplyPlanRequest, context: ServerContext
    ) async throws -> Moemesh_V1_ApplyPlanResponse {
        var planned: [(group: ScalingGroup, replicas: Int)] = []
        for group in request.groups {
            let selection: ExpertSelection
            switch ExpertSelection.parse(group.selection) {
            case .success(let parsed): selection = parsed
            case .failure(let error):
                throw RPCError(code: .invalidArgument, message: "group \(group.name): selection: \(error)")
            }
            let experts = selection.resolve(layers: await self.coordinator.layerSpecs)
            planned.append(
                (ScalingGroup(name: group.name, selection: group.selection, experts: experts), Int(group.replicas)))
        }
        let timeout: Duration = .seconds(request.timeoutSeconds == 0 ? 120 : Int(request.timeoutSeconds))
        let applied = try await self.coordinator.applyPlan(planned, timeout: timeout)
        return .with {
            $0.started = applied.started
            $0.kept = applied.kept
            $0.draining = applied.draining
        }
    }
}
