#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import MoECore

/// The demo model `moemesh up` serves when given no model: synthesised once, then reused from the cache.
public enum DemoModel {
    /// `$MOEMESH_CACHE`, else `$XDG_CACHE_HOME/moemesh`, else `$HOME/.cache/moemesh`, else `/tmp/moemesh-cache`.
    public static var defaultCacheDirectory: String {
        if let cache = environment("MOEMESH_CACHE") { return cache }
        if let xdg = environment("XDG_CACHE_HOME") { return FileSystem.join(xdg, "moemesh") }
        if let home = environment("HOME") { return FileSystem.join(home, ".cache/moemesh") }
        return "/tmp/moemesh-cache"
    }

    /// The demo model's folder under `cacheDirectory`, written if missing or unreadable.
    /// - Returns: the folder and whether it was written now.
    public static func ensure(
        cacheDirectory: String, shape: ModelSynthesizer.Shape = .demo
    ) throws(ModelError) -> (path: String, created: Bool) {
        let name =
            "demo-mixtral-e\(shape.experts)-k\(shape.topK)-h\(shape.hiddenSize)-i\(shape.intermediateSize)-l\(shape.layers)"
        let path = FileSystem.join(cacheDirectory, name)
        if (try? MoECheckpoint(path: path)) != nil { return (path, false) }
        try ModelSynthesizer(shape: shape, dtype: .f32, seed: 0).write(to: path)
        return (path, true)
    }

    private static func environment(_ name: String) -> String? {
        guard let value = getenv(name), value.pointee != 0 else { return nil }
        return String(cString: value)
    }
}
