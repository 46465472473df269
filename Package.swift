// swift-tools-version:6.0
import PackageDescription

// One target per layer; lower layers never import higher ones:
//   CLibvirt -> Libvirt -> Lab -> Runner -> Report -> miglab
//                         Scenario ----^    \-> LabTwin (tests)
//                         Scenario -> Journal -^ (the journal's schema and the verdict)
//   CVFIO -> VFIO -> Qualification ----------------------^
//   CPCI  -> PCI (+ VFIO, Libvirt) ----------------------^
let package = Package(
    name: "miglab",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "miglab", targets: ["miglab"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        // The HTML report's markup (the plots are SVG miglab draws itself).
        .package(url: "https://github.com/JohnSundell/Plot", from: "0.14.0"),
    ],
    targets: [
        // C bindings
        .systemLibrary(name: "CLibvirt", pkgConfig: "libvirt", providers: [.apt(["libvirt-dev"])]),
        .target(name: "CSystem"),
        .systemLibrary(name: "CPCI", pkgConfig: "libpci", providers: [.apt(["libpci-dev"])]),
        // linux/vfio.h plus the newer constants Debian 12's headers lack.
        .target(name: "CVFIO"),

        // Swift layers
        .target(name: "Libvirt", dependencies: ["CLibvirt"]),
        // The guest side (init script, memory workload) ships as resources: the workload runs
        // inside arbitrary guest images, so it is a small static C program that `miglab image
        // build` compiles with the system C compiler (SwiftPM links every executable it builds
        // against the Swift runtime, which a guest does not have).
        .target(name: "Lab", dependencies: [
            "Libvirt", "CSystem", "PCI", "Scenario",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Yams", package: "Yams"),
        ], resources: [.copy("Guest"), .copy("VirtualHost")]),
        // Devices: the VFIO migration uAPI (state machine model, real ioctl backend,
        // reference device, DMA logging, virtio device context).
        .target(name: "VFIO", dependencies: ["CVFIO"]),
        // Devices: PCI inventory through libpci and sysfs (local) or libvirt node devices (remote).
        .target(name: "PCI", dependencies: ["CPCI", "CVFIO", "VFIO", "Libvirt"]),
        // Device qualification: conformance checks run against a VFIO device.
        .target(name: "Qualification", dependencies: ["VFIO"]),
        .target(name: "Scenario", dependencies: [
            .product(name: "Yams", package: "Yams"),
        ]),
        // The journal's schema, its writer and reader, and the verdict made from it.
        .target(name: "Journal", dependencies: ["Scenario"]),
        .target(name: "Runner", dependencies: [
            "Libvirt", "Lab", "Scenario", "PCI", "CSystem", "Journal",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The lab in memory (hosts, guests, migration jobs, fault effects) behind the interfaces
        // the runner uses for libvirt: the runner's unit tests run on it without root.
        .target(name: "LabTwin", dependencies: ["Lab", "Libvirt", "Runner"]),
        .target(name: "Report", dependencies: ["Runner", "Scenario", "Journal",
                                               .product(name: "Plot", package: "Plot")]),
        .executableTarget(name: "miglab", dependencies: [
            "Libvirt", "Lab", "Scenario", "Runner", "Report", "VFIO", "Qualification", "PCI", "Journal",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),

        .testTarget(name: "LibvirtTests", dependencies: ["Libvirt"]),
        .testTarget(name: "LabTests", dependencies: ["Lab", "PCI", "Scenario", "Libvirt"]),
        .testTarget(name: "ScenarioTests", dependencies: ["Scenario"]),
        .testTarget(name: "RunnerTests", dependencies: ["Runner", "Lab", "Scenario", "LabTwin", "Report", "Libvirt", "Journal"]),
        .testTarget(name: "ReportTests", dependencies: ["Report", "Runner", "Journal", "Lab", "Scenario"]),
        .testTarget(name: "PCITests", dependencies: ["PCI", "Libvirt"]),
        .testTarget(name: "VFIOTests", dependencies: ["VFIO", "CVFIO"]),
        .testTarget(name: "QualificationTests", dependencies: ["Qualification", "VFIO"]),
        .testTarget(name: "IntegrationTests", dependencies: ["Runner", "Lab", "Scenario", "Report", "Libvirt", "Journal"]),
    ],
    swiftLanguageModes: [.v6]
)
