import MoEProcesses

/// The environment of the role processes a local mesh starts.
enum RoleEnvironment {
    /// This process's environment without the `MOEMESH_*` option variables: the roles get explicit flags, which must
    /// not pick up options meant for the mesh itself. The variables that are no options stay: `MOEMESH_CACHE`,
    /// `MOEMESH_CONFIG` and `MOEMESH_CUDA_LIB_DIR` (where the CUDA libraries are).
    static var current: [String] { Self.filtered(ChildProcess.environment) }

    /// `environment` (`NAME=value` entries) as `current` keeps it.
    static func filtered(_ environment: [String]) -> [String] {
        let kept = ["MOEMESH_CACHE=", "MOEMESH_CONFIG=", "MOEMESH_CUDA_LIB_DIR="]
        return environment.filter { entry in !entry.hasPrefix("MOEMESH_") || kept.contains { entry.hasPrefix($0) } }
    }
}
