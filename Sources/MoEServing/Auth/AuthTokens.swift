#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import MoECore
import Synchronization

/// What a bearer token may do (`AuthPolicy` says which calls need which role).
public enum AuthRole: String, Sendable, CaseIterable {
    /// Calls the data plane: `Router` and the coordinator's status.
    case client
    /// Everything a client may, plus the coordinator's admin actions (prune, restore, drain).
    case admin
    /// The mesh's own services: routers calling experts and following the coordinator, experts registering.
    case mesh
}

/// The bearer tokens a service accepts, read from a file of `ROLE TOKEN` lines (`#` starts a comment); `reload`
/// reads it again (a bad file keeps the tokens in force). Tokens are compared in constant time and never logged.
public final class AuthTokens: Sendable {
    /// Why a token file was refused.
    public struct FileError: Error, CustomStringConvertible {
        public let description: String
    }

    public static let minimumTokenLength = 16

    public let path: String
    private let tokens: Mutex<[(role: AuthRole, token: [UInt8])]>

    /// Reads `path`; throws naming the file and line of the first problem.
    public init(path: String) throws(FileError) {
        self.path = path
        self.tokens = Mutex(try Self.read(path))
    }

    /// Reads the file again; on an error the tokens in force stay, and the error is returned.
    @discardableResult
    public func reload() -> FileError? {
        do {
            let fresh = try Self.read(self.path)
            self.tokens.withLock { $0 = fresh }
            return nil
        } catch {
            return error
        }
    }

    /// How many tokens are in force, by role (for logs: never the tokens).
    public var counts: [AuthRole: Int] {
        self.tokens.withLock { Dictionary(grouping: $0, by: \.role).mapValues(\.count) }
    }

    /// The role of `token`, nil if no token in force matches. Every token is compared, each in constant time.
    public func role(of token: String) -> AuthRole? {
        let candidate = Array(token.utf8)
        return self.tokens.withLock { tokens in
            var found: AuthRole? = nil
            for entry in tokens where Self.constantTimeEqual(entry.token, candidate) { found = entry.role }
            return found
        }
    }

    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var difference = UInt8(truncatingIfNeeded: a.count ^ b.count)
        for index in 0..<max(a.count, b.count) {
            difference |= (index < a.count ? a[index] : 0) ^ (index < b.count ? b[index] : 0)
        }
        return difference == 0
    }

    static func read(_ path: String) throws(FileError) -> [(role: AuthRole, token: [UInt8])] {
        guard let text = Self.readText(path) else {
            throw FileError(description: "\(path): cannot read the token file")
        }
        var entries: [(role: AuthRole, token: [UInt8])] = []
        var seen: [[UInt8]: (AuthRole, Int)] = [:]
        for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.prefix { $0 != "#" }.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" })
            guard !line.isEmpty else { continue }
            let number = index + 1
            guard line.count == 2 else {
                throw FileError(
                    description: "\(path):\(number): expected ROLE TOKEN, got \(line.count) fields")
            }
            guard let role = AuthRole(rawValue: String(line[0])) else {
                throw FileError(
                    description:
                        "\(path):\(number): expected a role (client, admin or mesh), got '\(line[0])'")
            }
            let token = Array(line[1].utf8)
            guard token.count >= Self.minimumTokenLength else {
                throw FileError(
                    description:
                        "\(path):\(number): expected a token of at least \(Self.minimumTokenLength) characters, "
                        + "got \(token.count)")
            }
            if let (other, line) = seen[token], other != role {
                throw FileError(
                    description:
                        "\(path):\(number): the same token as line \(line) with another role (\(other.rawValue))")
            }
            seen[token] = (role, number)
            entries.append((role, token))
        }
        return entries
    }

    /// The file's modification time, to notice a change.
    var modified: timespec? {
        var info = stat()
        guard stat(self.path, &info) == 0 else { return nil }
        return info.st_mtim
    }

    fileprivate static func readText(_ path: String) -> String? {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = buffer.withUnsafeMutableBytes { Glibc.read(descriptor, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            if count < 0 { return nil }
            if count == 0 { break }
            bytes.append(contentsOf: buffer[0..<count])
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

extension AuthTokens {
    /// The token in a file of one token (its first line that is not empty or a `#` comment), for `--token-file`.
    public static func readToken(path: String) throws(FileError) -> String {
        guard let text = Self.readText(path) else { throw FileError(description: "\(path): cannot read the token") }
        for line in text.split(separator: "\n") {
            let token = line.prefix { $0 != "#" }.trimmingCharacters()
            if !token.isEmpty { return token }
        }
        throw FileError(description: "\(path): expected a token, got an empty file")
    }
}

extension Substring {
    fileprivate func trimmingCharacters() -> String {
        String(
            self.drop { $0 == " " || $0 == "\t" || $0 == "\r" }.reversed().drop {
                $0 == " " || $0 == "\t" || $0 == "\r"
            }.reversed())
    }
}
