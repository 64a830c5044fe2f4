import MoECore
import MoEModel

/// `moemesh k8s render`: the model-specific part of a Kubernetes deployment, as a kustomize overlay over `k8s/base`:
/// one expert Deployment per expert group (a headless Service and a PodDisruptionBudget each; startup, liveness and
/// readiness probes; memory from the group's weights; replicas spread over nodes and zones; `nvidia.com/gpu` for GPU
/// experts) and a patch giving the coordinator the Kubernetes scaler with every Deployment and its experts.
///
/// The Deployments carry no `spec.replicas`: the coordinator owns the count (an apply must not undo its scaling). A
/// group's planned replicas travel in the coordinator's `--kubernetes-deployment NAME=SELECTION@REPLICAS`, and the
/// coordinator scales a Deployment it finds below them up at start.
public struct KubernetesRender: Sendable {
    public struct Options: Sendable {
        /// `k8s/base`, relative to the output folder.
        public var base = "../../base"
        public var image = "moemesh:\(MoEMeshVersion.current)"
        /// Expert indices per Deployment (`*:0-3` with 4); the shared experts get one of their own.
        public var expertsPerGroup = 1
        public var replicas = 1
        /// GPU experts: one `nvidia.com/gpu` each, the CUDA image (`image` + "-cuda"), a toleration for GPU nodes.
        public var gpu = false
        public var cpuRequest = "1"
        /// A replica's memory beyond its weights (binary, gRPC, buffers, OpenBLAS), in MiB.
        public var processOverheadMiB = 256
        /// More files of the overlay to list as resources (e.g. a Job that writes the model).
        public var extraResources: [String] = []
        /// Every expert's `--precision` (a plan); nil: the device's default.
        public var precision: String?
        /// The model's folder as the pods see it.
        public var modelMount = "/models/model"
        /// Mutual TLS and tokens (the component `components/secure` beside the base, with Secrets generated from
        /// the overlay's `secrets/` folder, which `moemesh k8s secrets` writes); false: plaintext and no tokens,
        /// the coordinator in --insecure mode (a throwaway cluster only).
        public var secure = true
        /// `moemesh synth` arguments (without `--out`) that make the model: each pod then synthesises it into an
        /// `emptyDir` in an init container instead of mounting the shared models volume (the demo model; a real
        /// model comes from a volume or the image).
        public var synthesizeArguments: [String]?

        public init() {}
    }

    public let groups: [(name: String, selection: String, replicas: Int)]
    public let options: Options
    /// The model's layers: what a group's selection holds and its weights weigh.
    public let layers: [MoELayerSpec]

    /// Deployments for given groups (a plan of `moemesh plan`): name, `--experts` selection, replicas.
    public init(groups: [(name: String, selection: String, replicas: Int)], layers: [MoELayerSpec], options: Options) {
        self.groups = groups
        self.layers = layers
        self.options = options
    }

    public init(layers: [MoELayerSpec], options: Options) {
        let experts = layers.map(\.numExperts).max() ?? 0
        let size = max(1, options.expertsPerGroup)
        var groups: [(String, String, Int)] = stride(from: 0, to: experts, by: size).map { start in
            let end = min(experts, start + size) - 1
            return start == end
                ? ("moemesh-expert-\(start)", "*:\(start)", options.replicas)
                : ("moemesh-expert-\(start)-\(end)", "*:\(start)-\(end)", options.replicas)
        }
        if layers.contains(where: { $0.sharedExpert != nil }) {
            groups.append(("moemesh-expert-shared", "*:shared", options.replicas))
        }
        self.groups = groups
        self.layers = layers
        self.options = options
    }

    /// Bytes a replica of `selection` holds in weights, at the precision `options.precision` gives each expert
    /// (default: f32 on the CPU, bf16 on a GPU; scales aside): `3 · H · I` per routed expert (gated; the layer spec does
    /// not say, so a plain FFN's `2 · H · I` is over-counted, which errs towards room), the shared expert's own form.
    public func weightBytes(selection: String) -> Int {
        guard case .success(let parsed) = ExpertSelection.parse(selection) else { return 0 }
        let plan = self.options.precision.flatMap { try? PrecisionPlan.parse($0).get() } ?? .deviceDefault
        let fallback: WeightPrecision = self.options.gpu ? .bf16 : .f32
        return parsed.resolve(layers: self.layers).reduce(0) { total, address in
            guard let layer = self.layers.first(where: { $0.name == address.layer }) else { return total }
            let (matrices, intermediate) =
                address.expert == ExpertAddress.shared
                ? ((layer.sharedExpert?.gated ?? true) ? 3 : 2, layer.sharedExpert?.intermediateSize ?? 0)
                : (3, layer.intermediateSize)
            let precision = plan.precision(of: address) ?? fallback
            return total + matrices * layer.hiddenSize * intermediate * precision.bytesPerWeight
        }
    }

    /// Memory request and limit of a replica, in MiB: its weights plus the process (request), and room for the
    /// checkpoint's copy of the weights while they load and convert (limit: twice the weights plus twice the process).
    public func memoryMiB(selection: String) -> (request: Int, limit: Int) {
        let weights = (self.weightBytes(selection: selection) + (1 << 20) - 1) >> 20
        let overhead = self.options.processOverheadMiB
        return (weights + overhead, 2 * weights + 2 * overhead)
    }

    /// File name → contents.
    public func files() -> [(name: String, contents: String)] {
        [
            ("kustomization.yaml", self.kustomization()),
            (
                "experts.yaml",
                self.groups.map { self.expert(name: $0.name, selection: $0.selection, replicas: $0.replicas) }.joined(
                    separator: "---\n")
            ),
            ("coordinator-scaler.yaml", self.coordinatorPatch()),
        ] + (self.options.synthesizeArguments.map { [("model-per-pod.yaml", self.modelPerPodPatch($0))] } ?? [])
    }

    /// Every Deployment synthesises the model into an `emptyDir` before it starts; the models volume goes.
    private func modelPerPodPatch(_ arguments: [String]) -> String {
        let synth = ["synth"] + arguments + ["--out", self.options.modelMount]
        return """
            # The model in every pod: an init container synthesises it (seeded: the same weights in every pod) into an
            # emptyDir that replaces the shared models volume, so the overlay needs no storage that several nodes
            # can mount. A real model comes from a ReadOnlyMany volume or the image (docs/operating.md, "Model
            # storage"). Applied to every Deployment (the kustomization's target).
            apiVersion: apps/v1
            kind: Deployment
            metadata:
              name: every-deployment
            spec:
              template:
                spec:
                  initContainers:
                    - name: model
                      image: \(self.options.image)
                      imagePullPolicy: IfNotPresent
                      args: [\(synth.map(Self.quoted).joined(separator: ", "))]
                      resources:
                        requests: {cpu: 500m, memory: 256Mi}
                        limits: {memory: 1Gi}
                      securityContext:
                        allowPrivilegeEscalation: false
                        readOnlyRootFilesystem: true
                        capabilities: {drop: ["ALL"]}
                      volumeMounts:
                        - {name: models, mountPath: /models}
                  volumes:
                    - name: models
                      persistentVolumeClaim: null
                      emptyDir: {sizeLimit: 2Gi}

            """
    }

    private func kustomization() -> String {
        """
        # Written by `moemesh k8s render`; \(self.groups.count) expert Deployments\(self.options.gpu ? " (GPU)" : "").
        apiVersion: kustomize.config.k8s.io/v1beta1
        kind: Kustomization
        resources:
          - \(self.options.base)
          - experts.yaml
        \(self.options.extraResources.map { "  - \($0)\n" }.joined())patches:
          - path: coordinator-scaler.yaml
        \(self.options.synthesizeArguments == nil ? "" : Self.modelPerPodPatches)\(self.options.secure ? self.secureParts : "")
        """
    }

    private func coordinatorPatch() -> String {
        let arguments =
            [
                "coordinator", "--model", self.options.modelMount, "--host", "0.0.0.0", "--port", "50050",
                "--http-port", "8080",
                "--scaler", "kubernetes",
            ]
            + self.groups.flatMap { group in
                [
                    "--kubernetes-deployment",
                    "\(group.name)=\(group.selection)" + (group.replicas == 1 ? "" : "@\(group.replicas)"),
                ]
            }
        return """
            # The coordinator scales these Deployments through their scale subresource.
            apiVersion: apps/v1
            kind: Deployment
            metadata:
              name: moemesh-coordinator
            spec:
              template:
                spec:
                  containers:
                    - name: coordinator
                      args: [\(arguments.map(Self.quoted).joined(separator: ", "))]
            ---
            # Least privilege: the scale subresource of these Deployments alone (the base allows it on any), and
            # patching pods (a drained pod's deletion cost; their names are not known in advance).
            apiVersion: rbac.authorization.k8s.io/v1
            kind: Role
            metadata:
              name: moemesh-coordinator
            rules:
              - apiGroups: ["apps"]
                resources: ["deployments/scale"]
                resourceNames: [\(self.groups.map { Self.quoted($0.name) }.joined(separator: ", "))]
                verbs: ["get", "patch"]
              - apiGroups: [""]
                resources: ["pods"]
                verbs: ["patch"]

            """
    }

    /// Mutual TLS and tokens: the component, and its Secrets from the files of `secrets/`.
    private var secureParts: String {
        let base = self.options.base
        let parent = base.contains("/") ? String(base[..<base.lastIndex(of: "/")!]) : "."
        return """
            # Mutual TLS and tokens. The Secrets come from secrets/ (`moemesh k8s secrets --out secrets`; `moemesh k8s
            # render` writes it when missing): each pod mounts only its own role's tokens.
            components:
              - \(parent)/components/secure
            secretGenerator:
              - name: moemesh-tls
                files: [tls.crt=secrets/tls.crt, tls.key=secrets/tls.key, ca.crt=secrets/ca.crt]
              - name: moemesh-tokens
                files:
                  - coordinator=secrets/tokens-coordinator
                  - router=secrets/tokens-router
                  - expert=secrets/tokens-expert
                  - mesh-token=secrets/mesh-token

            """
    }

    /// The kustomization's patches for a model made in every pod: the init container, and no models volume.
    static let modelPerPodPatches = """
          - path: model-per-pod.yaml
            target: {kind: Deployment}
          - patch: |-
              $patch: delete
              apiVersion: v1
              kind: PersistentVolumeClaim
              metadata: {name: moemesh-models}

        """

    /// "1.3 GiB", "320 MiB".
    static func mebibytes(_ bytes: Int) -> String {
        bytes >= 1 << 30
            ? DecimalFormat.fixed(Double(bytes) / 1_073_741_824, 1) + " GiB of weights"
            : "\((bytes + (1 << 20) - 1) >> 20) MiB of weights"
    }

    static func quoted(_ text: String) -> String {
        "\"" + text.replacing("\\", with: "\\\\").replacing("\"", with: "\\\"") + "\""
    }

    private func expert(name: String, selection: String, replicas: Int) -> String {
        let options = self.options
        let memory = self.memoryMiB(selection: selection)
        // GPU experts: the CUDA image, tagged as the CPU one with "-cuda" after it (moemesh:0.3.0-cuda).
        let image = options.gpu ? options.image + "-cuda" : options.image
        let arguments =
            [
                "expert", "--model", options.modelMount, "--experts", selection, "--host", "0.0.0.0", "--port", "7000",
                "--http-port", "9090", "--coordinator", "moemesh-coordinator:50050", "--advertise-host", "$(POD_IP)",
            ] + (options.gpu ? ["--device", "cuda"] : []) + (options.precision.map { ["--precision", $0] } ?? [])
        let gpuLimit = options.gpu ? "\n              nvidia.com/gpu: 1" : ""
        let gpuScheduling =
            options.gpu
            ? """

                  tolerations:
                    - {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}
            """
            : ""
        return """
            apiVersion: apps/v1
            kind: Deployment
            metadata:
              name: \(name)
              labels:
                app.kubernetes.io/name: moemesh-expert
                app.kubernetes.io/component: expert
                app.kubernetes.io/part-of: moemesh
                app.kubernetes.io/version: \(Self.quoted(MoEMeshVersion.current))
                moemesh.io/group: \(name)
              annotations:
                moemesh.io/experts: \(Self.quoted(selection))
                moemesh.io/planned-replicas: "\(replicas)"
            spec:
              # No replicas: the coordinator scales this Deployment (to at least the planned count at its start).
              selector:
                matchLabels:
                  moemesh.io/group: \(name)
              template:
                metadata:
                  labels:
                    app.kubernetes.io/name: moemesh-expert
                    app.kubernetes.io/component: expert
                    app.kubernetes.io/part-of: moemesh
                    app.kubernetes.io/version: \(Self.quoted(MoEMeshVersion.current))
                    moemesh.io/group: \(name)
                  annotations:
                    prometheus.io/scrape: "true"
                    prometheus.io/port: "9090"
                spec:
                  # Replicas of one group on different nodes and zones where the cluster allows: a node lost takes
                  # one replica, not the group.
                  topologySpreadConstraints:
                    - maxSkew: 1
                      topologyKey: kubernetes.io/hostname
                      whenUnsatisfiable: ScheduleAnyway
                      labelSelector: {matchLabels: {moemesh.io/group: \(name)}}
                    - maxSkew: 1
                      topologyKey: topology.kubernetes.io/zone
                      whenUnsatisfiable: ScheduleAnyway
                      labelSelector: {matchLabels: {moemesh.io/group: \(name)}}
                  # The expert deregisters, then finishes its calls, on SIGTERM.
                  terminationGracePeriodSeconds: 60
                  # Experts never call the Kubernetes API.
                  automountServiceAccountToken: false
                  securityContext:
                    runAsNonRoot: true
                    runAsUser: 10001
                    runAsGroup: 10001
                    seccompProfile: {type: RuntimeDefault}\(gpuScheduling)
                  containers:
                    - name: expert
                      image: \(image)
                      imagePullPolicy: IfNotPresent
                      args: [\(arguments.map(Self.quoted).joined(separator: ", "))]
                      env:
                        - name: MOEMESH_CONFIG
                          value: /etc/moemesh/moemesh.yaml
                        - name: POD_NAME
                          valueFrom: {fieldRef: {fieldPath: metadata.name}}
                        - name: POD_IP
                          valueFrom: {fieldRef: {fieldPath: status.podIP}}
                      ports:
                        - {name: grpc, containerPort: 7000}
                        - {name: metrics, containerPort: 9090}
                      readinessProbe:
                        grpc: {port: 7000}
                        periodSeconds: 5
                      # Liveness is the process's alone (its port answers): an expert waiting for its coordinator
                      # is NOT_SERVING, not dead. The startup probe gives loading the weights 10 minutes.
                      startupProbe:
                        tcpSocket: {port: 7000}
                        periodSeconds: 5
                        failureThreshold: 120
                      livenessProbe:
                        tcpSocket: {port: 7000}
                        periodSeconds: 10
                        failureThreshold: 6
                      # Memory from the group's weights (\(Self.mebibytes(self.weightBytes(selection: selection)))) and the process.
                      resources:
                        requests:
                          cpu: \(Self.quoted(options.cpuRequest))
                          memory: \(memory.request)Mi
                        limits:
                          memory: \(memory.limit)Mi\(gpuLimit)
                      securityContext:
                        allowPrivilegeEscalation: false
                        readOnlyRootFilesystem: true
                        capabilities: {drop: ["ALL"]}
                      volumeMounts:
                        - {name: models, mountPath: /models, readOnly: true}
                        - {name: config, mountPath: /etc/moemesh, readOnly: true}
                  volumes:
                    - name: models
                      persistentVolumeClaim: {claimName: moemesh-models, readOnly: true}
                    - name: config
                      configMap: {name: moemesh-config}
            ---
            # Headless: each pod's own address (routers reach replicas directly, as the coordinator lists them).
            apiVersion: v1
            kind: Service
            metadata:
              name: \(name)
              labels:
                app.kubernetes.io/name: moemesh-expert
                app.kubernetes.io/part-of: moemesh
                moemesh.io/group: \(name)
            spec:
              clusterIP: None
              selector:
                moemesh.io/group: \(name)
              ports:
                - {name: grpc, port: 7000, targetPort: grpc}
                - {name: metrics, port: 9090, targetPort: metrics}
            ---
            # A voluntary disruption (a node drain) never takes the group's last serving replica: the drain waits
            # until the coordinator has another one ready.
            apiVersion: policy/v1
            kind: PodDisruptionBudget
            metadata:
              name: \(name)
              labels:
                app.kubernetes.io/name: moemesh-expert
                app.kubernetes.io/part-of: moemesh
                moemesh.io/group: \(name)
            spec:
              minAvailable: 1
              selector:
                matchLabels:
                  moemesh.io/group: \(name)

            """
    }
}
