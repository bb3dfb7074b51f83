// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "nspawnctl",
    products: [
        .library(name: "NspawnKit", targets: ["NspawnKit"]),
        .executable(name: "nspawnctl", targets: ["nspawnctl"]),
        .executable(name: "nspawnctl-images", targets: ["nspawnctl-images"]),
        .executable(name: "nspawnd", targets: ["nspawnd"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        // Manifests (NspawnProvisioning, so nspawnctl-images and nspawnd link it), and in the tests
        // units/openapi.yaml read as data, to hold the contract's types against it.
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
    ],
    targets: [
        .systemLibrary(name: "CSystemd", pkgConfig: "libsystemd", providers: [.apt(["libsystemd-dev"])]),
        .systemLibrary(name: "CArchive", pkgConfig: "libarchive", providers: [.apt(["libarchive-dev"])]),
        .systemLibrary(name: "CLinux"),
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl", providers: [.apt(["libcurl4-openssl-dev"])]),
        .target(
            name: "NspawnKit",
            dependencies: [
                "CSystemd",
                "CLinux",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        // Downloading, verifying and unpacking images. Apart from NspawnKit so the daemon, which
        // runs imports as `nspawnctl-images` children, does not load libcurl and libarchive (6 MB of RSS).
        .target(
            name: "NspawnImages",
            dependencies: [
                "NspawnKit",
                "CArchive",
                "CCurl",
                "CLinux",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        // Manifests: parse and layer (YAML), plan as a pure diff, apply as ordered undoable steps.
        .target(
            name: "NspawnProvisioning",
            dependencies: [
                "NspawnKit",
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        // The wire contract: one request and response type per route, the client over a
        // transport (unix socket or ssh), and the library as a service both front ends call.
        .target(
            name: "NspawnAPI",
            dependencies: [
                "NspawnKit",
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        // The CLI's commands live in a library so tests can drive parsing and argv[0] dispatch.
        .target(
            name: "NspawnCLI",
            dependencies: [
                "NspawnKit",
                "NspawnAPI",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(name: "nspawnctl", dependencies: ["NspawnCLI"]),
        // import, bootstrap, plan and apply on the direct path, which nspawnctl execs and nspawnd
        // runs as its import child: only this executable links libcurl and libarchive (and their
        // dependency trees, most of nspawnctl's start-up time when they were linked into it), and
        // the YAML parser, which brings Foundation and ICU (53 MB of a 90 MB nspawnctl).
        .target(
            name: "NspawnImageCommands",
            dependencies: [
                "NspawnCLI",
                "NspawnImages",
                "NspawnKit",
                "NspawnAPI",
                "NspawnProvisioning",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(name: "nspawnctl-images", dependencies: ["NspawnImageCommands"]),
        // The daemon's wire layer: HTTP decoding, peer-credential authorization and routing
        // over NspawnKit calls.
        .target(
            name: "NspawnDaemon",
            dependencies: [
                "NspawnKit",
                "NspawnAPI",
                "NspawnProvisioning",
                .product(name: "SystemPackage", package: "swift-system"),
                "CSystemd",
                "CLinux",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "nspawnd",
            dependencies: [
                "NspawnDaemon",
                "NspawnAPI",
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            linkerSettings: [.unsafeFlags(["-Xlinker", "--no-export-dynamic"])]
        ),
        .testTarget(name: "NspawnKitTests", dependencies: ["NspawnKit", "NspawnImages", "CSystemd"]),
        .testTarget(name: "NspawnProvisioningTests", dependencies: ["NspawnProvisioning", "NspawnKit"]),
        .testTarget(name: "NspawnCLITests", dependencies: ["NspawnCLI", "NspawnKit"]),
        // The router, and the contract: CLI → client → router → a recording service, and the
        // request types against units/openapi.yaml.
        .testTarget(name: "NspawnDaemonTests", dependencies: [
            "NspawnDaemon", "NspawnAPI", "NspawnCLI", "NspawnKit", "NspawnProvisioning", .product(name: "Yams", package: "Yams"),
        ]),
        .testTarget(name: "EndToEndTests", dependencies: ["NspawnKit"]),
    ],
    swiftLanguageModes: [.v6]
)
