// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "packmeter",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "packmeter", targets: ["packmeter"]),
        .library(name: "PackMeterCore", targets: ["PackMeterCore"]),
        .library(name: "PackMeterFiles", targets: ["PackMeterFiles"]),
        .library(name: "PackMeterWorkload", targets: ["PackMeterWorkload"]),
        // For the HTTP benchmark: the loopback client the tests use.
        .library(name: "HTTPTestClient", targets: ["HTTPTestClient"]),
        .library(name: "PackMeterKafka", targets: ["PackMeterKafka"]),
        .library(name: "PackMeterWorker", targets: ["PackMeterWorker"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        // The HTTP server: many connections on one event loop, with timeouts and a bound.
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        // The hop between workers of a group: a balance query passed to the account's owner.
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
    ],
    targets: [
        // Prefetch hints and huge-page table allocation for the engine's hot tables; the
        // allocator setting of the worker process.
        .target(name: "CPackMeterSupport"),
        // The rules: catalog, decoding, billing months, balances. No I/O, no Kafka.
        .target(
            name: "PackMeterCore",
            dependencies: ["CPackMeterSupport"],
            resources: [.copy("Resources/catalog.json")],
            swiftSettings: [
                // The engine's state has one owner (a shard); dynamic exclusivity checks on
                // its tables cost more than the rules themselves.
                .unsafeFlags(["-enforce-exclusivity=unchecked"]),
            ]
        ),
        // The C boundary: librdkafka (Debian's librdkafka-dev, with its mock cluster) and lz4.
        .systemLibrary(name: "CRdKafka", pkgConfig: "rdkafka", providers: [.apt(["librdkafka-dev"])]),
        .systemLibrary(name: "CLZ4", pkgConfig: "liblz4", providers: [.apt(["liblz4-dev"])]),
        // The one Swift layer that owns librdkafka handles; nothing above it sees a C pointer.
        .target(
            name: "PackMeterKafka",
            dependencies: ["CRdKafka", .product(name: "Logging", package: "swift-log")]
        ),
        // What packmeter keeps and reads on disk: checkpoint files, JSON-lines input and output,
        // and the offline `rate` job over them; the process clocks.
        .target(
            name: "PackMeterFiles",
            dependencies: ["PackMeterCore", "CLZ4", .product(name: "Logging", package: "swift-log")]
        ),
        // Synthetic usage for `generate`, the demo, the tests and the benchmarks: the event
        // generator, and loading a topic with it.
        .target(
            name: "PackMeterWorkload",
            dependencies: ["PackMeterCore", "PackMeterKafka"]
        ),
        // The streaming worker: `run`, `replay`, checkpoints, exactly-once outputs, HTTP.
        .target(
            name: "PackMeterWorker",
            dependencies: [
                "CPackMeterSupport", "PackMeterCore", "PackMeterFiles", "PackMeterKafka",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ]
        ),
        // The command line: parses arguments and wires the targets together.
        .executableTarget(
            name: "packmeter",
            dependencies: [
                "PackMeterCore",
                "PackMeterFiles",
                "PackMeterKafka",
                "PackMeterWorker",
                "PackMeterWorkload",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .testTarget(
            name: "PackMeterCoreTests",
            dependencies: ["PackMeterCore", "PackMeterFiles", "PackMeterWorkload", .product(name: "Logging", package: "swift-log")]
        ),
        // A loopback HTTP client for the tests of the HTTP server.
        .target(name: "HTTPTestClient", path: "Tests/TestSupport"),
        .testTarget(
            name: "PackMeterWorkerTests",
            dependencies: ["PackMeterCore", "PackMeterKafka", "PackMeterWorker", "HTTPTestClient",
                           .product(name: "NIOHTTP1", package: "swift-nio")]
        ),
        // Against `packmeter mock-broker` and `packmeter run` started as processes.
        .testTarget(
            name: "PackMeterEndToEndTests",
            dependencies: ["PackMeterCore", "PackMeterFiles", "PackMeterKafka", "PackMeterWorker", "PackMeterWorkload", "HTTPTestClient",
                           .product(name: "Logging", package: "swift-log")]
        ),
    ]
)
