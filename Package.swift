// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "nspawnctl",
    products: [
        .library(name: "NspawnKit", targets: ["NspawnKit"]),
        .executable(name: "nspawnctl", targets: ["nspawnctl"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
    ],
    targets: [
        .systemLibrary(name: "CSystemd", pkgConfig: "libsystemd", providers: [.apt(["libsystemd-dev"])]),
        .systemLibrary(name: "CArchive", pkgConfig: "libarchive", providers: [.apt(["libarchive-dev"])]),
        .target(
            name: "NspawnKit",
            dependencies: [
                "CSystemd",
                "CArchive",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        // The CLI's commands live in a library so tests can drive parsing and argv[0] dispatch.
        .target(
            name: "NspawnCLI",
            dependencies: [
                "NspawnKit",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(name: "nspawnctl", dependencies: ["NspawnCLI"]),
        .testTarget(name: "NspawnKitTests", dependencies: ["NspawnKit", "CSystemd"]),
        .testTarget(name: "NspawnCLITests", dependencies: ["NspawnCLI", "NspawnKit"]),
        .testTarget(name: "EndToEndTests", dependencies: ["NspawnKit"]),
    ],
    swiftLanguageModes: [.v6]
)
