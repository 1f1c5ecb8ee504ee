// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "packmeter-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "packmeter", path: "../"),
        .package(url: "https://github.com/ordo-one/package-benchmark.git", from: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
    ],
    targets: [
        // Workloads more than one suite builds.
        .target(
            name: "BenchmarkFixtures",
            dependencies: [.product(name: "PackMeterCore", package: "packmeter")],
            path: "Benchmarks/Fixtures"
        ),
        .executableTarget(
            name: "Engine",
            dependencies: [
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "PackMeterCore", package: "packmeter"),
            ],
            path: "Benchmarks/Engine",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
        ),
        .executableTarget(
            name: "Decoding",
            dependencies: [
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "PackMeterCore", package: "packmeter"),
                .product(name: "PackMeterFiles", package: "packmeter"),
                .product(name: "PackMeterWorkload", package: "packmeter"),
            ],
            path: "Benchmarks/Decoding",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
        ),
        .executableTarget(
            name: "Pipeline",
            dependencies: [
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "PackMeterCore", package: "packmeter"),
                .product(name: "PackMeterFiles", package: "packmeter"),
                .product(name: "PackMeterWorkload", package: "packmeter"),
            ],
            path: "Benchmarks/Pipeline",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
        ),
        .executableTarget(
            name: "Checkpoint",
            dependencies: [
                .product(name: "Benchmark", package: "package-benchmark"),
                "BenchmarkFixtures",
                .product(name: "PackMeterCore", package: "packmeter"),
                .product(name: "PackMeterFiles", package: "packmeter"),
                .product(name: "PackMeterWorkload", package: "packmeter"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Benchmarks/Checkpoint",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
        ),
        .executableTarget(
            name: "Worker",
            dependencies: [
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "PackMeterCore", package: "packmeter"),
                .product(name: "PackMeterFiles", package: "packmeter"),
                .product(name: "PackMeterWorkload", package: "packmeter"),
                .product(name: "PackMeterKafka", package: "packmeter"),
                .product(name: "PackMeterWorker", package: "packmeter"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Benchmarks/Worker",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
        ),
        .executableTarget(
            name: "HTTP",
            dependencies: [
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "PackMeterCore", package: "packmeter"),
                .product(name: "PackMeterKafka", package: "packmeter"),
                .product(name: "PackMeterWorker", package: "packmeter"),
                .product(name: "PackMeterWorkload", package: "packmeter"),
                .product(name: "HTTPTestClient", package: "packmeter"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Benchmarks/HTTP",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
        ),
        .executableTarget(
            name: "Memory",
            dependencies: [
                .product(name: "Benchmark", package: "package-benchmark"),
                "BenchmarkFixtures",
                .product(name: "PackMeterCore", package: "packmeter"),
            ],
            path: "Benchmarks/Memory",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
        ),
    ]
)
