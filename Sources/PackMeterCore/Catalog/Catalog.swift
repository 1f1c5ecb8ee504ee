import Foundation

/// A pack's position in the catalog. Balances and checkpoints refer to packs by index, so
/// a checkpoint is only valid with the catalog it was written under (see `fingerprint`).
@frozen
public struct PackIndex: Hashable, Comparable, Sendable {
    public var rawValue: UInt16
    @inlinable public init(_ rawValue: UInt16) { self.rawValue = rawValue }
    @inlinable public init(_ rawValue: Int) { self.rawValue = UInt16(rawValue) }
    public static func < (a: PackIndex, b: PackIndex) -> Bool { a.rawValue < b.rawValue }
}

/// An action's position in the catalog.
@frozen
public struct ActionIndex: Hashable, Sendable {
    public var rawValue: UInt16
    @inlinable public init(_ rawValue: UInt16) { self.rawValue = rawValue }
    @inlinable public init(_ rawValue: Int) { self.rawValue = UInt16(rawValue) }
}

/// What is billed and how much is free: the packs, the actions that draw on each, each
/// pack's monthly free grant, and the error codes that are billed (docs/rules.md §2, §3).
///
/// The catalog is data: the built-in one (the 46 actions in 22 packs of Tencent Cloud OCR)
/// ships as `catalog.json` in the package's resources, and `--catalog FILE` loads another.
/// Immutable once loaded and shared by every engine.
public final class Catalog: Sendable {
    public struct Pack: Sendable, Equatable {
        public let id: String
        public let name: String
        /// The free grant: calls per account per billing month (docs/rules.md §5).
        public let freeCallsPerMonth: UInt32
        public let actions: [ActionIndex]
    }

    public struct Action: Sendable, Equatable {
        public let name: String
        public let pack: PackIndex
    }

    public let name: String
    public let packs: [Pack]
    public let actions: [Action]
    /// Failed calls with these codes are billed (docs/rules.md §3).
    public let billableErrorCodes: [String]
    /// The catalog's own notice thresholds, where it sets them (flags override them).
    public let noticeThresholds: NoticeThresholds?
    /// Identifies the rules: packs in order with their grants and actions, and the billable
    /// codes. Checkpoints record it; a checkpoint written under another catalog is refused.
    public let fingerprint: Fingerprint128

    let actionNames: NameTable
    let packIds: NameTable
    let billableCodes: NameTable
    /// `"GeneralBasicOCR"`, with quotes: output records copy these bytes.
    let actionJSON: [[UInt8]]
    let packJSON: [[UInt8]]
    /// Per action, its pack's grant (saves a hop on the hot path).
    let grantByPack: [UInt32]

    /// Builds a catalog, validating it; see `CatalogError` for what is refused.
    public init(name: String, packs: [(id: String, name: String, freeCallsPerMonth: Int64, actions: [String])],
                billableErrorCodes: [String], noticeThresholds: NoticeThresholds? = nil) throws(CatalogError) {
        guard !packs.isEmpty else { throw CatalogError(.noPacks, "the catalog has no packs") }
        guard packs.count <= Int(UInt16.max) else {
            throw CatalogError(.tooLarge, "the catalog has \(packs.count) packs; at most \(UInt16.max) are supported")
        }
        var builtPacks: [Pack] = []
        var builtActions: [Action] = []
        var packOfAction: [String: String] = [:]
        var seenPacks: Set<String> = []
        for (position, pack) in packs.enumerated() {
            guard !pack.id.isEmpty else { throw CatalogError(.emptyName, "packs[\(position)] has an empty id") }
            guard seenPacks.insert(pack.id).inserted else {
                throw CatalogError(.duplicatePack, "pack '\(pack.id)' is defined twice")
            }
            guard pack.freeCallsPerMonth >= 0 else {
                throw CatalogError(.negativeGrant, "pack '\(pack.id)' has a free grant of \(pack.freeCallsPerMonth), below 0")
            }
            guard pack.freeCallsPerMonth <= Int64(UInt32.max) else {
                throw CatalogError(.grantTooLarge, "pack '\(pack.id)' has a free grant of \(pack.freeCallsPerMonth), above \(UInt32.max)")
            }
            guard !pack.actions.isEmpty else { throw CatalogError(.emptyPack, "pack '\(pack.id)' has no actions") }
            var actionIndexes: [ActionIndex] = []
            for action in pack.actions {
                guard !action.isEmpty else { throw CatalogError(.emptyName, "pack '\(pack.id)' lists an empty action name") }
                if let other = packOfAction[action] {
                    let where_ = other == pack.id ? "twice in pack '\(other)'" : "in packs '\(other)' and '\(pack.id)'"
                    throw CatalogError(.duplicateAction, "action '\(action)' appears \(where_)")
                }
                packOfAction[action] = pack.id
                guard builtActions.count < Int(UInt16.max) else {
                    throw CatalogError(.tooLarge, "the catalog has more than \(UInt16.max) actions")
                }
                actionIndexes.append(ActionIndex(builtActions.count))
                builtActions.append(Action(name: action, pack: PackIndex(position)))
            }
            builtPacks.append(Pack(id: pack.id, name: pack.name, freeCallsPerMonth: UInt32(pack.freeCallsPerMonth), actions: actionIndexes))
        }
        var seenCodes: Set<String> = []
        for code in billableErrorCodes {
            guard !code.isEmpty, code != "Success" else {
                throw CatalogError(.invalidCode, "billable_error_codes lists '\(code)', which means success")
            }
            guard seenCodes.insert(code).inserted else {
                throw CatalogError(.duplicateCode, "billable error code '\(code)' is listed twice")
            }
        }
        self.name = name
        self.packs = builtPacks
        self.actions = builtActions
        self.billableErrorCodes = billableErrorCodes
        self.noticeThresholds = noticeThresholds
        actionNames = NameTable(builtActions.map(\.name))
        packIds = NameTable(builtPacks.map(\.id))
        billableCodes = NameTable(billableErrorCodes)
        func quoted(_ s: String) -> [UInt8] {
            let out = ByteWriter(capacity: 64)
            out.append(jsonString: s)
            return out.array
        }
        actionJSON = builtActions.map { quoted($0.name) }
        packJSON = builtPacks.map { quoted($0.id) }
        grantByPack = builtPacks.map(\.freeCallsPerMonth)

        var canonical = "packmeter-catalog-v1\n"
        for pack in builtPacks {
            canonical += "pack \(pack.id) \(pack.freeCallsPerMonth)"
            for action in pack.actions { canonical += " \(builtActions[Int(action.rawValue)].name)" }
            canonical += "\n"
        }
        canonical += "billable " + billableErrorCodes.sorted().joined(separator: " ") + "\n"
        fingerprint = Fingerprint128(Array(canonical.utf8))
    }

    // MARK: - Lookups (hot path)

    @inline(__always)
    func action(named bytes: UnsafeRawBufferPointer) -> ActionIndex? {
        actionNames.index(of: bytes).map { ActionIndex($0) }
    }

    @inline(__always)
    func pack(withID bytes: UnsafeRawBufferPointer) -> PackIndex? {
        packIds.index(of: bytes).map { PackIndex($0) }
    }

    @inline(__always)
    func isBillableErrorCode(_ bytes: UnsafeRawBufferPointer) -> Bool {
        billableCodes.index(of: bytes) != nil
    }

    @inline(__always)
    func pack(of action: ActionIndex) -> PackIndex { actions[Int(action.rawValue)].pack }

    @inline(__always)
    func grant(of pack: PackIndex) -> UInt32 { grantByPack[Int(pack.rawValue)] }

    public func action(named name: String) -> ActionIndex? { actionNames.index(of: name).map { ActionIndex($0) } }
    public func pack(withID id: String) -> PackIndex? { packIds.index(of: id).map { PackIndex($0) } }
    public func pack(_ index: PackIndex) -> Pack { packs[Int(index.rawValue)] }
    public func action(_ index: ActionIndex) -> Action { actions[Int(index.rawValue)] }
}

/// Why a catalog was refused. `description` is the one line printed before exit status 2.
public struct CatalogError: Error, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable {
        case unreadable, invalidJSON, unsupportedFormat, unknownField, missingField, wrongType
        case noPacks, emptyPack, emptyName, duplicatePack, duplicateAction, duplicateCode, invalidCode
        case negativeGrant, grantTooLarge, tooLarge
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
