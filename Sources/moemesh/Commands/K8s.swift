import ArgumentParser
import MoECore
import MoECoordinator
import MoEModel

struct K8s: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "k8s", abstract: "Kubernetes manifests for a model.", subcommands: [Render.self, K8sSecrets.self])

    struct Render: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Write a kustomize overlay over k8s/base for a model: expert Deployments, headless Services, PodDisruptionBudgets, and the coordinator's Kubernetes scaler.",
            discussion:
                "Example: moemesh k8s render --model ~/models/Mixtral-8x7B --out k8s/overlays/mixtral && kubectl apply -k k8s/overlays/mixtral"
        )

        @Option(help: "Model folder (default: the demo model).")
        var model: String?

        @Option(help: "Folder to write (kustomization.yaml, experts.yaml, coordinator-scaler.yaml).")
        var out: String

        @Option(help: "k8s/base, relative to --out.")
        var base: String = "../../base"

        @Option(help: "Container image of the experts (GPU experts: this with -cuda after its tag).")
        var image: String = "moemesh:\(MoEMeshVersion.current)"

        @Option(help: "Expert indices per Deployment.")
        var expertsPerDeployment: Int = 1

        @Option(help: "Replicas of each expert Deployment: the coordinator scales each to at least this many at start.")
        var replicas: Int = 1

        @Flag(help: "GPU experts: nvidia.com/gpu: 1 each, the -cuda image, a toleration for GPU nodes.")
        var gpu = false

        @Option(help: "How the experts' weights are stored, as `moemesh expert --precision` takes it (e.g. int8).")
        var precision: String?

        @Option(help: "A plan written by `moemesh plan --out`: one Deployment per planned group, with its replicas.")
        var plan: String?

        @Option(help: "A further file of the overlay to list as a resource (repeat).")
        var resource: [String] = []

        @Flag(
            help:
                "No TLS and no tokens (the coordinator in --insecure mode): for a throwaway cluster only. Default: mutual TLS and tokens, Secrets from OUT/secrets (written when missing)."
        )
        var insecure = false

        @Option(help: "Where the demo model is cached (with no --model).")
        var cacheDir: String?

        func validate() throws {
            guard self.expertsPerDeployment >= 1 else {
                throw ValidationError("--experts-per-deployment: expected at least 1, got \(self.expertsPerDeployment)")
            }
            if let precision = self.precision, case .failure(let error) = PrecisionPlan.parse(precision) {
                throw ValidationError("--precision: \(error)")
            }
            guard self.replicas >= 0 else {
                throw ValidationError("--replicas: expected 0 or more, got \(self.replicas)")
            }
        }

        func run() async throws {
            let path =
                try self.model
                ?? DemoModel.ensure(cacheDirectory: self.cacheDir ?? DemoModel.defaultCacheDirectory).path
            let checkpoint = try MoECheckpoint(path: path)
            var options = KubernetesRender.Options()
            if self.model == nil {
                // The demo model: every pod synthesises it, as `moemesh synth` with its shape does.
                let shape = ModelSynthesizer.Shape.demo
                options.synthesizeArguments = [
                    "--experts", "\(shape.experts)", "--top-k", "\(shape.topK)", "--hidden", "\(shape.hiddenSize)",
                    "--intermediate", "\(shape.intermediateSize)", "--layers", "\(shape.layers)",
                ]
            }
            options.base = self.base
            options.image = self.image
            options.expertsPerGroup = self.expertsPerDeployment
            options.replicas = self.replicas
            options.gpu = self.gpu
            options.extraResources = self.resource
            options.precision = self.precision
            options.secure = !self.insecure
            let render =
                try self.plan.map { path in
                    KubernetesRender(
                        groups: try PlanFile.read(path).groups.map { ($0.name, $0.selection, $0.replicas) },
                        layers: checkpoint.layers, options: options)
                } ?? KubernetesRender(layers: checkpoint.layers, options: options)
            try FileSystem.createDirectory(self.out)
            for (name, contents) in render.files() {
                try FileSystem.writeFile(FileSystem.join(self.out, name), chunks: [Array(contents.utf8)])
            }
            let secrets = FileSystem.join(self.out, "secrets")
            if options.secure, !FileSystem.fileExists(FileSystem.join(secrets, "tls.crt")) {
                let written = try K8sSecrets.write(
                    to: secrets, hosts: K8sSecrets.clusterNames, days: 365, force: true)
                print("wrote \(secrets): \(written.joined(separator: ", ")) (keep it out of version control)")
            }
            print(
                "wrote \(self.out): \(render.groups.count) expert Deployments (\(checkpoint.modelType), \(checkpoint.layers.count) MoE layers)"
            )
        }
    }
}
