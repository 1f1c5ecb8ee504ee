import Foundation

extension Catalog {
    /// The catalog file format, version 1:
    ///
    /// ```json
    /// {"format": 1, "name": "tencent-cloud-ocr", "source": "...",
    ///  "billable_error_codes": ["FailedOperation.EmptyImageError"],
    ///  "packs": [{"id": "general-basic", "name": "通用印刷体识别",
    ///             "free_calls_per_month": 1000, "actions": ["GeneralBasicOCR"]}],
    ///  "notice_thresholds": [80, 100], "prepaid_notice_thresholds": [90, 100]}
    /// ```
    ///
    /// The two threshold lists are optional (percentages 1–100; the defaults 80, 100 and
    /// 90, 100 otherwise; an empty list turns that kind of notice off).
    ///
    /// Every field is checked: an unknown field is an error (a typo must not silently drop a
    /// rule), as are a duplicate action or pack, a grant below 0 and a wrong type.
    public convenience init(json bytes: [UInt8]) throws(CatalogError) {
        let document: JSONValue
        do {
            document = try JSONValue.parse(bytes)
        } catch {
            throw CatalogError(.invalidJSON, "the catalog is not valid JSON: \(error)")
        }
        guard let top = document.objectMembers else {
            throw CatalogError(.wrongType, "the catalog must be a JSON object, not \(document.kindName)")
        }
        let fields = try Self.fields(top, at: "the catalog", allowed: ["format", "name", "source", "billable_error_codes", "packs",
                                                                       "notice_thresholds", "prepaid_notice_thresholds"])
        guard let formatValue = fields["format"] else { throw CatalogError(.missingField, "the catalog has no 'format' field") }
        guard formatValue.intValue == 1 else {
            throw CatalogError(.unsupportedFormat, "catalog format \(Self.show(formatValue)) is not supported; this packmeter reads format 1")
        }
        let name = try fields["name"].map { v throws(CatalogError) in try Self.string(v, at: "name") } ?? "unnamed"
        if let source = fields["source"] { _ = try Self.string(source, at: "source") }
        var codes: [String] = []
        if let list = fields["billable_error_codes"] {
            guard let array = list.arrayValue else {
                throw CatalogError(.wrongType, "'billable_error_codes' must be an array of strings, not \(list.kindName)")
            }
            for (i, code) in array.enumerated() { codes.append(try Self.string(code, at: "billable_error_codes[\(i)]")) }
        }
        guard let packList = fields["packs"] else { throw CatalogError(.missingField, "the catalog has no 'packs' field") }
        guard let packArray = packList.arrayValue else {
            throw CatalogError(.wrongType, "'packs' must be an array, not \(packList.kindName)")
        }
        var packs: [(id: String, name: String, freeCallsPerMonth: Int64, actions: [String])] = []
        for (i, entry) in packArray.enumerated() {
            let at = "packs[\(i)]"
            guard let members = entry.objectMembers else {
                throw CatalogError(.wrongType, "\(at) must be an object, not \(entry.kindName)")
            }
            let pack = try Self.fields(members, at: at, allowed: ["id", "name", "free_calls_per_month", "actions"])
            guard let idValue = pack["id"] else { throw CatalogError(.missingField, "\(at) has no 'id'") }
            let id = try Self.string(idValue, at: "\(at).id")
            let packName = try pack["name"].map { v throws(CatalogError) in try Self.string(v, at: "\(at).name") } ?? id
            guard let grantValue = pack["free_calls_per_month"] else {
                throw CatalogError(.missingField, "pack '\(id)' has no 'free_calls_per_month'")
            }
            guard case let .number(text) = grantValue else {
                throw CatalogError(.wrongType, "pack '\(id)': 'free_calls_per_month' must be an integer, not \(grantValue.kindName)")
            }
            guard let grant = Int64(text) else {
                if text.hasPrefix("-") {
                    throw CatalogError(.negativeGrant, "pack '\(id)' has a free grant of \(text), below 0")
                }
                throw CatalogError(.wrongType, "pack '\(id)': 'free_calls_per_month' must be an integer, not \(text)")
            }
            guard let actionList = pack["actions"] else { throw CatalogError(.missingField, "pack '\(id)' has no 'actions'") }
            guard let actionArray = actionList.arrayValue else {
                throw CatalogError(.wrongType, "pack '\(id)': 'actions' must be an array of strings, not \(actionList.kindName)")
            }
            var actions: [String] = []
            for (k, action) in actionArray.enumerated() {
                actions.append(try Self.string(action, at: "\(at).actions[\(k)]"))
            }
            packs.append((id, packName, grant, actions))
        }
        var thresholds: NoticeThresholds?
        if fields["notice_thresholds"] != nil || fields["prepaid_notice_thresholds"] != nil {
            let free = try Self.percentages(fields["notice_thresholds"], at: "notice_thresholds") ?? NoticeThresholds.defaults.freeGrant.map(Int.init)
            let prepaid = try Self.percentages(fields["prepaid_notice_thresholds"], at: "prepaid_notice_thresholds")
                ?? NoticeThresholds.defaults.prepaid.map(Int.init)
            var problem = ""
            guard let valid = NoticeThresholds(freeGrant: free, prepaid: prepaid, problem: &problem) else {
                throw CatalogError(.wrongType, problem)
            }
            thresholds = valid
        }
        try self.init(name: name, packs: packs, billableErrorCodes: codes, noticeThresholds: thresholds)
    }

    private static func percentages(_ value: JSONValue?, at place: String) throws(CatalogError) -> [Int]? {
        guard let value else { return nil }
        guard let array = value.arrayValue else {
            throw CatalogError(.wrongType, "'\(place)' must be an array of integers from 1 to 100, not \(value.kindName)")
        }
        var list: [Int] = []
        for item in array {
            guard case let .number(text) = item, let n = Int(text) else {
                throw CatalogError(.wrongType, "'\(place)' must be an array of integers from 1 to 100")
            }
            list.append(n)
        }
        return list
    }

    /// The built-in catalog: Tencent Cloud OCR, 46 actions in 22 packs (docs/rules.md §2).
    public static func builtin() throws(CatalogError) -> Catalog {
        guard let url = Bundle.module.url(forResource: "catalog", withExtension: "json"),
              let data = try? Data(contentsOf: url)
        else {
            throw CatalogError(.unreadable, "the built-in catalog (catalog.json) is missing from the package resources; pass --catalog FILE")
        }
        return try Catalog(json: Array(data))
    }

    /// Loads a catalog file.
    public static func load(path: String) throws(CatalogError) -> Catalog {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CatalogError(.unreadable, "cannot read catalog file '\(path)'")
        }
        do {
            return try Catalog(json: Array(data))
        } catch {
            throw CatalogError(error.code, "catalog '\(path)': \(error.message)")
        }
    }

    private static func fields(_ members: [(String, JSONValue)], at place: String, allowed: Set<String>) throws(CatalogError) -> [String: JSONValue] {
        var result: [String: JSONValue] = [:]
        for (key, value) in members {
            guard allowed.contains(key) else {
                throw CatalogError(.unknownField, "\(place) has an unknown field '\(key)' (known: \(allowed.sorted().joined(separator: ", ")))")
            }
            guard result[key] == nil else { throw CatalogError(.invalidJSON, "\(place) has the field '\(key)' twice") }
            result[key] = value
        }
        return result
    }

    private static func string(_ value: JSONValue, at place: String) throws(CatalogError) -> String {
        guard let s = value.stringValue else {
            throw CatalogError(.wrongType, "'\(place)' must be a string, not \(value.kindName)")
        }
        return s
    }

    private static func show(_ value: JSONValue) -> String {
        switch value {
        case let .number(n): return n
        case let .string(s): return "'\(s)'"
        default: return value.kindName
        }
    }
}
