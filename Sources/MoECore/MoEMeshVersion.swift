/// The release this code is: `moemesh --version`, and the tag of the container images the manifests name
/// (`moemesh:<version>`, `moemesh:<version>-cuda`), so that a deployment runs the binary its manifests were written for.
public enum MoEMeshVersion {
    public static let current = "0.3.0"
}
