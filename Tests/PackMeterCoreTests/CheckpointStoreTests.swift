import Foundation
import Logging
import Testing
@testable import PackMeterCore
import PackMeterFiles

@Suite("Checkpoints on disk: durable, verified, never silently empty")
struct CheckpointStoreTests {
    let configuration = EngineConfiguration(catalog: builtinCatalog, calendar: shanghai)

    func temporaryDirectory() -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("packmeter-ckpt-\(UUID().uuidString)").path
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// A ledger fed `count` generated events.
    func ledger(_ count: Int, seed: UInt64 = 3) -> Ledger {
        var generator = LogGenerator(seed: seed)
        let ledger = Ledger()
        for event in generator.generate(count) { ledger.feed(event.line) }
        return ledger
    }

    func header(_ offset: Int64, _ ledger: Ledger, configuration: EngineConfiguration? = nil) -> CheckpointHeader {
        CheckpointHeader(topic: "ocr.usage", partition: 2, nextOffset: offset, configuration: configuration ?? self.configuration,
                         counters: ledger.counters, createdMs: 1, outputEndOffsets: ["ocr.overage": [0: 17, 1: 4]],
                         alreadyWritten: [WrittenOutput(offset: offset + 3), WrittenOutput(offset: offset + 9, identity: 77)])
    }

    @Test func writeThenRestore_givesTheSameState_andKeepsTheNewestN() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = CheckpointDirectory(directory: dir, keep: 2, logger: Logger(label: "test"))
        let l = ledger(3000)
        for offset in [100, 200, 300] as [Int64] { try store.write(l.engine.copy(), header: header(offset, l)) }
        #expect(store.files(topic: "ocr.usage", partition: 2).map { ($0 as NSString).lastPathComponent } ==
                ["00000000000000000300.ckpt", "00000000000000000200.ckpt"])
        let restored = try #require(try store.restore(topic: "ocr.usage", partition: 2, configuration: configuration))
        #expect(restored.header.nextOffset == 300)
        #expect(restored.header.counters == l.counters)
        #expect(restored.header.outputEndOffsets == ["ocr.overage": [0: 17, 1: 4]])
        #expect(restored.header.alreadyWritten == [WrittenOutput(offset: 303), WrittenOutput(offset: 309, identity: 77)])
        let a = l.engine
        let b = restored.engine
        #expect(a.accountsWithState().map { a.balances(of: $0) } == b.accountsWithState().map { b.balances(of: $0) })
        #expect(try store.restore(topic: "ocr.usage", partition: 9, configuration: configuration) == nil)
    }

    @Test func corruptNewest_fallsBackToThePreviousGoodOne() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = CheckpointDirectory(directory: dir, keep: 3, logger: Logger(label: "test"))
        let l = ledger(1000)
        try store.write(l.engine.copy(), header: header(100, l))
        let newest = try store.write(l.engine.copy(), header: header(200, l)).path
        var bytes = try Data(contentsOf: URL(fileURLWithPath: newest))
        bytes[bytes.count / 2] ^= 0x40
        try bytes.write(to: URL(fileURLWithPath: newest))
        let restored = try #require(try store.restore(topic: "ocr.usage", partition: 2, configuration: configuration))
        #expect(restored.header.nextOffset == 100)
        // Reading the damaged one alone names it.
        #expect(throws: CheckpointError.self) { try store.read(newest, into: nil, configuration: nil) }
        do {
            _ = try store.read(newest, into: nil, configuration: nil)
        } catch {
            #expect(error.description == "checkpoint \(newest) has a bad checksum: it is torn or corrupt")
        }
    }

    @Test func tornWrite_truncatedFile_isDetected() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = CheckpointDirectory(directory: dir, logger: Logger(label: "test"))
        let l = ledger(500)
        let path = try store.write(l.engine.copy(), header: header(50, l)).path
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        try bytes.prefix(bytes.count - 100).write(to: URL(fileURLWithPath: path))
        #expect(throws: CheckpointError.self) { try store.restore(topic: "ocr.usage", partition: 2, configuration: configuration) }
    }

    @Test func unknownFormatVersion_isRefusedByName() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = CheckpointDirectory(directory: dir, logger: Logger(label: "test"))
        let l = ledger(200)
        let path = try store.write(l.engine.copy(), header: header(20, l)).path
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        bytes[8] = 7
        try bytes.write(to: URL(fileURLWithPath: path))
        do {
            _ = try store.restore(topic: "ocr.usage", partition: 2, configuration: configuration)
            Issue.record("an unknown format was accepted")
        } catch {
            #expect(error.description == "checkpoint \(path) has format version 7, which this packmeter does not read (it reads 3)")
        }
    }

    @Test func anotherCatalogOrTimeZone_isRefused() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = CheckpointDirectory(directory: dir, logger: Logger(label: "test"))
        let l = ledger(200)
        try store.write(l.engine.copy(), header: header(20, l))
        let utc = EngineConfiguration(catalog: builtinCatalog, calendar: calendar("UTC"))
        do {
            _ = try store.restore(topic: "ocr.usage", partition: 2, configuration: utc)
            Issue.record("a checkpoint of another time zone was accepted")
        } catch {
            #expect(error.description.hasSuffix("cannot be used: it was written with --time-zone Asia/Shanghai, not UTC"))
        }
        let other = try Catalog(json: Array(#"{"format":1,"name":"other","packs":[{"id":"p","free_calls_per_month":5,"actions":["X"]}]}"#.utf8))
        #expect(throws: CheckpointError.self) {
            try store.restore(topic: "ocr.usage", partition: 2, configuration: EngineConfiguration(catalog: other, calendar: shanghai))
        }
    }
}
