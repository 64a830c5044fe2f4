import Testing

@testable import MoELocalMesh

@Suite("the environment of a local mesh's role processes")
struct RoleEnvironmentTests {
    @Test("no MOEMESH_* option variables reach a role; the cache, the config file and the CUDA library folder do")
    func optionsStayBehind() {
        let environment = [
            "PATH=/bin", "MOEMESH_PORT=1", "MOEMESH_CACHE=/cache", "MOEMESH_CONFIG=/etc/m.yaml",
            "MOEMESH_CUDA_LIB_DIR=/lib/cuda", "MOEMESH_TOKEN=secret-token-value", "MOEMESH_=x",
        ]
        #expect(
            RoleEnvironment.filtered(environment) == [
                "PATH=/bin", "MOEMESH_CACHE=/cache", "MOEMESH_CONFIG=/etc/m.yaml", "MOEMESH_CUDA_LIB_DIR=/lib/cuda",
            ])
    }
}
