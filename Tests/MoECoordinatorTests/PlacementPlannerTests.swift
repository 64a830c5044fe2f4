import MoECoordinator
import MoECore
import MoEModel
import MoEPolicy
import MoEProto
import MoEStatusViews
import MoEWire
import Testing

@Suite("placement planner (moemesh plan)")
struct PlacementPlannerTests {
    static func layer(_ name: String, experts: Int = 8, shared: Bool = false) -> MoELayerSpec {
        MoELayerSpec(
            name: name, hiddenSize: 16, intermediateSize: 32,
            gate: TopKGate(numExperts: experts, topK: 2, renormalize: true),
            sharedExpert: shared ? .init(intermediateSize: 64, gated: true) : nil)
    }

    static func counts(_ pairs: [(Int, Int, Int)], experts: Int = 8) -> Coactivation {
        var counts = Coactivation(experts: experts)
        for (a, b, n) in pairs { counts.add(a, b, count: n) }
        return counts
    }

    static let roomy = PlacementPlanner.Constraints(nodes: 4, nodeMemoryBytes: 1 << 30, expertsPerGroup: 2)

    @Test(
        "experts chosen together most often share a group; the plan keeps more co-activated pairs inside groups than consecutive groups"
    )
    func groupsFollowCoactivation() throws {
        let counts = Self.counts([(0, 5, 50), (1, 6, 40), (2, 7, 30), (3, 4, 20), (0, 1, 5)])
        let plan = try PlacementPlanner.plan(
            layers: [Self.layer("0")], bytesPerExpert: 1000,
            telemetry: PlacementTelemetry(demand: [:], coactivation: ["0": counts]),
            constraints: Self.roomy)
        #expect(plan.groups.map(\.experts) == [[0, 5], [1, 6], [2, 7], [3, 4]])
        #expect(plan.groups.map(\.selection) == ["0:0,0:5", "0:1,0:6", "0:2,0:7", "0:3,0:4"])
        #expect(abs(plan.pairsInsideGroups - 140.0 / 145) < 1e-12)
        #expect(abs(plan.pairsInsideConsecutiveGroups - 5.0 / 145) < 1e-12)
    }

    @Test("a group never grows past its size, and experts without pairs are packed by index")
    func sizeLimit() throws {
        let counts = Self.counts([(0, 1, 9), (1, 2, 8), (2, 3, 7), (3, 4, 6)])
        let plan = try PlacementPlanner.plan(
            layers: [Self.layer("0")], bytesPerExpert: 1000,
            telemetry: PlacementTelemetry(demand: [:], coactivation: ["0": counts]),
            constraints: .init(nodes: 2, nodeMemoryBytes: 1 << 20, expertsPerGroup: 3))
        #expect(plan.groups.map(\.experts) == [[0, 1, 2], [3, 4, 5], [6, 7]])
        #expect(plan.groups.allSatisfy { $0.experts.count <= 3 })
    }

    @Test("hot groups get more replicas (EPLB), within the nodes' memory, never two of a group on one node")
    func replicasFollowLoad() throws {
        var demand: [ExpertAddress: Double] = [:]
        for expert in 0..<8 { demand[ExpertAddress(layer: "0", expert: expert)] = expert == 0 ? 100 : 10 }
        // 4 groups of 2 experts × 1,000 bytes; 3 nodes of 5,000 bytes hold 7 replicas of 2,000 bytes.
        let plan = try PlacementPlanner.plan(
            layers: [Self.layer("0")], bytesPerExpert: 1000,
            telemetry: PlacementTelemetry(demand: demand, coactivation: [:]),
            constraints: .init(nodes: 3, nodeMemoryBytes: 5000, expertsPerGroup: 2))
        let replicas = Dictionary(uniqueKeysWithValues: plan.groups.map { ($0.selection, $0.replicas) })
        #expect(replicas["0:0,0:1"] == 3)  // 110 rows/s: the hottest, on every node
        #expect(plan.groups.reduce(0) { $0 + $1.replicas } == plan.nodes.joined().count)
        #expect(plan.nodes.joined().count == 6)  // 2 per node: a third would need 6,000 bytes
        for node in plan.nodes { #expect(Set(node).count == node.count && node.count * 2000 <= 5000) }
        let loads = plan.groups.map { $0.load / Double($0.replicas) }
        #expect(abs(plan.replicaBalancedness - loads.reduce(0, +) / Double(loads.count) / loads.max()!) < 1e-12)
    }

    @Test("a plan that cannot hold one replica of every group is refused, saying what to change")
    func doesNotFit() {
        #expect(throws: PlacementPlanner.PlanError.self) {
            try PlacementPlanner.plan(
                layers: [Self.layer("0")], bytesPerExpert: 1000,
                telemetry: PlacementTelemetry(demand: [:], coactivation: [:]),
                constraints: .init(nodes: 1, nodeMemoryBytes: 3000, expertsPerGroup: 2))
        }
        do {
            _ = try PlacementPlanner.plan(
                layers: [Self.layer("0")], bytesPerExpert: 1000,
                telemetry: PlacementTelemetry(demand: [:], coactivation: [:]),
                constraints: .init(nodes: 1, nodeMemoryBytes: 3000, expertsPerGroup: 2))
        } catch {
            #expect(error.description.hasSuffix("give more nodes, more memory per node, or fewer experts per group"))
        }
    }

    @Test("the shared expert has a group of its own, sized by its own width")
    func sharedExpert() throws {
        let plan = try PlacementPlanner.plan(
            layers: [Self.layer("0", experts: 2, shared: true)], bytesPerExpert: 1000, sharedBytes: ["0": 3000],
            telemetry: PlacementTelemetry(demand: [:], coactivation: [:]), constraints: Self.roomy)
        #expect(plan.groups.map(\.selection) == ["0:0,0:1", "0:shared"])
        #expect(plan.groups.map(\.bytes) == [2000, 3000])
    }

    @Test(
        "a status read over the wire is the coordinator's own; the planner reads the same telemetry from it as from its saved `moemesh status --json`"
    )
    func telemetryFromStatusJSON() throws {
        var status = Moemesh_V1_CoordinatorStatus()
        status.experts = [
            .with {
                $0.expert = .with {
                    $0.layer = "0"; $0.expert = 3
                }
                $0.demandRowsPerSecond = 12.5
            },
            .with {
                $0.expert = .with {
                    $0.layer = "0"; $0.expert = -1
                }
                $0.demandRowsPerSecond = 4
            },
        ]
        status.coactivation = [Moemesh_V1_LayerCoactivation(Self.counts([(1, 3, 7), (0, 2, 2)]), layer: "0")]
        status.groups = [
            .with {
                $0.group = "g0"
                $0.experts = [
                    .with {
                        $0.layer = "0"; $0.expert = 3
                    },
                    .with {
                        $0.layer = "0"; $0.expert = -1
                    },
                ]
                $0.servingReplicas = 1
                $0.desiredReplicas = 1
            },
            .with {
                $0.group = "g1"
                $0.experts = [
                    .with {
                        $0.layer = "0"; $0.expert = 1
                    }
                ]
                $0.desiredReplicas = 1
            },
        ]
        status.replicas = [
            .with {
                $0.replica = .with {
                    $0.replicaID = "r1"; $0.group = "g0"; $0.endpoint = "127.0.0.1:5"; $0.state = .draining
                    $0.precisions = [
                        .with {
                            $0.expert = .with {
                                $0.layer = "0"; $0.expert = 3
                            }; $0.precision = "int8"
                        }
                    ]
                }
                $0.load = .with {
                    $0.rowsPerSecond = 3; $0.latencyP50Ms = 1.5
                }
                $0.lastHeartbeatMs = 250
                $0.links = ["router-a: unix /tmp/x"]
            }
        ]
        status.decisions = [
            .with {
                $0.group = "g1"; $0.fromReplicas = 0; $0.toReplicas = 1; $0.reason = "cold start"
            }
        ]
        let domain = try CoordinatorStatus(status)
        #expect(Moemesh_V1_CoordinatorStatus(domain) == status)

        let telemetry = PlacementTelemetry(domain)
        #expect(
            telemetry.demand == [ExpertAddress(layer: "0", expert: 3): 12.5, ExpertAddress(layer: "0", expert: -1): 4])
        #expect(telemetry.coactivation["0"]?.count(1, 3) == 7 && telemetry.coactivation["0"]?.count(0, 2) == 2)
        // Only a group with a serving replica serves its experts.
        #expect(
            telemetry.servingGroups == [
                ExpertAddress(layer: "0", expert: 3): "g0", ExpertAddress(layer: "0", expert: -1): "g0",
            ])
        let report = try StatusReport.decode(json: Array(try StatusReport(domain).json().utf8))
        #expect(try report.placementTelemetry() == telemetry)
        #expect(report.replicas.first?.state == "draining" && report.replicas.first?.precision == "int8")
        #expect(report.replicas.first?.lastHeartbeatMs == 250)
    }

    @Test("k8s render of a plan: a Deployment per group, no spec.replicas, memory from weights, the scaler knows them")
    func renderPlan() throws {
        let layers = [
            MoELayerSpec(
                name: "0", hiddenSize: 1024, intermediateSize: 2816,
                gate: TopKGate(numExperts: 8, topK: 2, renormalize: true), sharedExpert: nil)
        ]
        var options = KubernetesRender.Options()
        options.precision = "0:1=int8"
        let render = KubernetesRender(
            groups: [("moemesh-expert-l0-g0", "0:0,0:5", 3), ("moemesh-expert-l0-g1", "0:1,0:2", 1)], layers: layers,
            options: options)
        let files = Dictionary(uniqueKeysWithValues: render.files().map { ($0.name, $0.contents) })
        let experts = files["experts.yaml"] ?? ""
        #expect(experts.contains(#""--experts", "0:0,0:5""#) && experts.contains(#""--experts", "0:1,0:2""#))
        #expect(!experts.contains("  replicas:"))
        #expect(experts.contains(#"planned-replicas: "3""#) && experts.contains(#"planned-replicas: "1""#))
        // Two f32 experts: 2 · 3 · 1024 · 2816 · 4 B = 66 MiB; one int8 and one f32: 8.25 + 33 = 41.25 → 42 MiB.
        #expect(render.weightBytes(selection: "0:0,0:5") == 2 * 3 * 1024 * 2816 * 4)
        #expect(render.weightBytes(selection: "0:1,0:2") == 3 * 1024 * 2816 * (1 + 4))
        #expect(render.memoryMiB(selection: "0:0,0:5") == (66 + 256, 2 * 66 + 512))
        #expect(experts.contains("memory: 322Mi") && experts.contains("memory: 644Mi"))
        #expect(experts.contains("memory: 298Mi") && experts.contains("memory: 596Mi"))
        #expect(experts.contains("topologyKey: kubernetes.io/hostname") && experts.contains("minAvailable: 1"))
        #expect(experts.contains("image: moemesh:\(MoEMeshVersion.current)"))
        // The planned count reaches the coordinator (1 is the Deployment's own default and needs no mark).
        let scaler = files["coordinator-scaler.yaml"] ?? ""
        #expect(
            scaler.contains(#""moemesh-expert-l0-g0=0:0,0:5@3""#) && scaler.contains(#""moemesh-expert-l0-g1=0:1,0:2""#)
        )
        // The coordinator's Role names exactly these Deployments.
        #expect(
            files["coordinator-scaler.yaml"]?.contains(
                #"resourceNames: ["moemesh-expert-l0-g0", "moemesh-expert-l0-g1"]"#) == true)
    }
}
