// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "packmeter",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "packmeter", targets: ["packmeter"]),
        .library(name: "PackMeterCore", targets: ["PackMeterCore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
    ],
    targets: [
        // The rules: catalog, decoding, billing months, balances. No I/O, no Kafka.
        .target(
            name: "PackMeterCore",
            resources: [.copy("Resources/catalog.json")]
        ),
        // Files, clocks and jobs around the core: `rate`'s reader and writers.
        .target(
            name: "PackMeterRuntime",
            dependencies: ["PackMeterCore"]
        ),
        // The command line: parses arguments and wires the targets together.
        .executableTarget(
            name: "packmeter",
            dependencies: [
                "PackMeterCore",
                "PackMeterRuntime",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "PackMeterCoreTests",
            dependencies: ["PackMeterCore", "PackMeterRuntime"]
        ),
    ]
)
