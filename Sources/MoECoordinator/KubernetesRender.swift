import MoEModel

/// `moemesh k8s render`: the model-specific part of a Kubernetes deployment, as a kustomize overlay over `k8s/base`:
/// one expert Deployment per expert group (a headless Service and a PodDisruptionBudget each; readiness and liveness
/// through gRPC health; resources; `nvidia.com/gpu` for GPU experts) and a patch giving the coordinator the
/// Kubernetes scaler with every Deployment and its experts.
public struct KubernetesRender: Sendable {
    public struct Options: Sendable {
        /// `k8s/base`, relative to the output folder.
        public var base = "../../base"
        public var image = "moemesh:latest"
        /// Expert indices per Deployment (`*:0-3` with 4); the shared experts get one of their own.
        public var expertsPerGroup = 1
        public var replicas = 1
        /// GPU experts: one `nvidia.com/gpu` each, the CUDA image, a toleration for GPU nodes.
        public var gpu = false
        public var cpuRequest = "1"
        public var memoryRequest = "1Gi"
        public var memoryLimit = "4Gi"
        /// More files of the overlay to list as resources (e.g. a Job that writes the model).
        public var extraResources: [String] = []
        /// Every expert's `--precision` (a plan); nil: the device's default.
        public var precision: String?
        /// The model's folder as the pods see it.
        public var modelMount = "/models/model"

        public init() {}
    }

    public let groups: [(name: String, selection: String, replicas: Int)]
    public let options: Options

    /// Deployments for given groups (a plan of `moemesh plan`): name, `--experts` selection, replicas.
    public init(groups: [(name: String, selection: String, replicas: Int)], options: Options) {
        self.groups = groups
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
        self.options = options
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
        ]
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

        """
    }

    private func coordinatorPatch() -> String {
        let arguments =
            [
                "coordinator", "--model", self.options.modelMount, "--host", "0.0.0.0", "--port", "50050",
                "--http-port", "8080",
                "--scaler", "kubernetes",
            ] + self.groups.flatMap { ["--kubernetes-deployment", "\($0.name)=\($0.selection)"] }
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

    static func quoted(_ text: String) -> String {
        "\"" + text.replacing("\\", with: "\\\\").replacing("\"", with: "\\\"") + "\""
    }

    private func expert(name: String, selection: String, replicas: Int) -> String {
        let options = self.options
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
                moemesh.io/group: \(name)
              annotations:
                moemesh.io/experts: \(Self.quoted(selection))
            spec:
              replicas: \(replicas)
              selector:
                matchLabels:
                  moemesh.io/group: \(name)
              template:
                metadata:
                  labels:
                    app.kubernetes.io/name: moemesh-expert
                    moemesh.io/group: \(name)
                  annotations:
                    prometheus.io/scrape: "true"
                    prometheus.io/port: "9090"
                spec:
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
                      image: \(options.gpu ? options.image.replacing(":latest", with: ":cuda") : options.image)
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
                      resources:
                        requests:
                          cpu: \(Self.quoted(options.cpuRequest))
                          memory: \(options.memoryRequest)
                        limits:
                          memory: \(options.memoryLimit)\(gpuLimit)
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
            spec:
              clusterIP: None
              selector:
                moemesh.io/group: \(name)
              ports:
                - {name: grpc, port: 7000, targetPort: grpc}
                - {name: metrics, port: 9090, targetPort: metrics}
            ---
            apiVersion: policy/v1
            kind: PodDisruptionBudget
            metadata:
              name: \(name)
            spec:
              maxUnavailable: 1
              selector:
                matchLabels:
                  moemesh.io/group: \(name)

            """
    }
}
