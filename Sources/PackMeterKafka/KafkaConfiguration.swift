import CRdKafka
import Logging
import Synchronization

/// librdkafka configuration properties, applied to a fresh `rd_kafka_conf_t`.
/// See librdkafka's CONFIGURATION.md for the names.
public struct KafkaConfiguration: Sendable {
    public var properties: [(String, String)] = []

    public init(_ properties: [(String, String)] = []) {
        self.properties = properties
    }

    public mutating func set(_ name: String, _ value: String) {
        properties.removeAll { $0.0 == name }
        properties.append((name, value))
    }

    /// A new `rd_kafka_conf_t` with every property set; the caller owns it until it is given
    /// to `rd_kafka_new`.
    /// Checks that librdkafka knows every property and accepts its value.
    public func validate() throws(KafkaError) {
        rd_kafka_conf_destroy(try make())
    }

    func make() throws(KafkaError) -> OpaquePointer {
        let conf = rd_kafka_conf_new()!
        var errorText = [CChar](repeating: 0, count: 512)
        for (name, value) in properties {
            let result = rd_kafka_conf_set(conf, name, value, &errorText, errorText.count)
            if result != RD_KAFKA_CONF_OK {
                rd_kafka_conf_destroy(conf)
                let text = String(decoding: errorText.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                throw KafkaError(code: RD_KAFKA_RESP_ERR__INVALID_ARG.rawValue, message: text, operation: "configure \(name)")
            }
        }
        return conf
    }
}

/// Where librdkafka's own log lines go: a swift-log logger, set per handle.
public final class LogSink: Sendable {
    let logger: Logger
    init(_ logger: Logger) { self.logger = logger }

    private static let errorCount = Atomic<UInt64>(0)

    /// Errors librdkafka reported in this process (broker connections failing, requests
    /// timing out, deliveries failing), each logged at error level.
    public static var errors: UInt64 { errorCount.load(ordering: .relaxed) }

    static func countError() { errorCount.add(1, ordering: .relaxed) }

    /// Installs the log callback; the handle's opaque must point to an object whose
    /// `logSink` this is (see `HandleContext`).
    static func install(on conf: OpaquePointer) {
        rd_kafka_conf_set_log_cb(conf) { rk, level, facility, text in
            guard let rk, let opaque = rd_kafka_opaque(rk) else { return }
            let context = Unmanaged<HandleContext>.fromOpaque(opaque).takeUnretainedValue()
            let message = "\(String(cString: facility!)): \(String(cString: text!))"
            switch level {
            case 0...3:
                LogSink.countError()
                context.logSink.logger.error("\(message)")
            case 4: context.logSink.logger.warning("\(message)")
            case 5, 6: context.logSink.logger.info("\(message)")
            default: context.logSink.logger.debug("\(message)")
            }
        }
    }
}

/// What librdkafka's callbacks reach through the handle's opaque pointer. Retained by the
/// Swift object that owns the handle, for the handle's whole life.
// Sound as `@unchecked Sendable`: librdkafka calls back on the threads of the owner's
// `poll` and on its own log thread; subclasses' mutable fields are touched only by the
// polling thread, and the log sink is immutable.
class HandleContext: @unchecked Sendable {
    let logSink: LogSink
    init(logger: Logger) { logSink = LogSink(logger) }
}
