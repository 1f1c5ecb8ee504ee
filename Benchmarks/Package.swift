// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "packmeter-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "packmeter", path: "../"),
        .package(url: "https://github.com/ordo-one/package-benchmark.git", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "Engine",
            dependencies: [
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "PackMeterCore", package: "packmeter"),
            ],
            path: "Benchmarks/Engine",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
        ),
    ]
)
