import Testing
@testable import Scenario

@Suite struct PassthroughParserTests {
    func parse(_ passthrough: String) throws(ScenarioErrors) -> [PassthroughRequirement] {
        try ScenarioParser().parse("""
        name: p
        guest:
          passthrough:
        \(passthrough)
        steps: [{boot: a}]
        """, file: "p.yaml").guest.passthrough
    }

    func errors(_ passthrough: String) -> [String] {
        do {
            _ = try parse(passthrough)
            return []
        } catch {
            return error.diagnostics.map(\.description)
        }
    }

    @Test func readsRequirements() throws {
        let r = try parse("""
            - {name: nic, kind: vfio-pci, driver: mlx5_vfio_pci, count: 2}
            - {name: vf, kind: vfio-pci, vendor_device: "8086:10ED", managed: false}
            - {name: tty, kind: mdev, type: mtty-2}
        """)
        #expect(r.count == 3)
        #expect(r[0] == PassthroughRequirement(name: "nic", kind: .vfioPCI, driver: "mlx5_vfio_pci", count: 2,
                                               location: SourceLocation(file: "p.yaml", line: 4, column: 7)))
        #expect(r[1].vendorDevice == .init(vendor: 0x8086, device: 0x10ed) && !r[1].managed && r[1].count == 1)
        #expect(r[2].kind == .mdev && r[2].mdevType == "mtty-2")
        #expect(r[0].summary == "nic: 2 × vfio-pci (driver mlx5_vfio_pci)")
    }

    @Test func reportsMistakesWhereTheyAre() {
        let e = errors("""
            - {name: nic, kind: vfio, count: 0}
            - {name: n2, kind: vfio-pci, driver: ixgbe, count: 17, colour: red}
            - {name: m, kind: mdev, driver: vfio-pci}
            - {name: v, kind: vfio-pci, type: mtty-2, vendor_device: "zz:1", managed: maybe}
            - {name: v, kind: mdev, type: t}
            - 42
        """)
        #expect(e.contains { $0.hasPrefix("p.yaml:4:25: error: `kind` must be one of vfio-pci, mdev; found `vfio`") })
        #expect(e.contains { $0.hasPrefix("p.yaml:4:38: error: `count` must be between 1 and 16; found 0") })
        #expect(e.contains { $0.hasPrefix("p.yaml:5:42: error: `driver` must be a vfio driver") })
        #expect(e.contains { $0.hasPrefix("p.yaml:5:56: error: `count` must be between 1 and 16; found 17") })
        #expect(e.contains { $0.hasPrefix("p.yaml:5:60: error: unknown key `colour`") })
        #expect(e.contains { $0.hasPrefix("p.yaml:6:7: error: `kind: mdev` needs `type`") })
        #expect(e.contains { $0.hasPrefix("p.yaml:6:37: error: `driver` is for `kind: vfio-pci`") })
        #expect(e.contains { $0.hasPrefix("p.yaml:7:39: error: `type` is for `kind: mdev`") })
        #expect(e.contains { $0.hasPrefix("p.yaml:7:62: error: `vendor_device` must be `vendor:device` in hex") })
        #expect(e.contains { $0.hasPrefix("p.yaml:7:79: error: `managed` must be true or false") })
        #expect(e.contains { $0.hasPrefix("p.yaml:8:7: error: passthrough name `v` is used twice") })
        #expect(e.contains { $0.hasPrefix("p.yaml:9:7: error: a passthrough requirement must be a mapping") })
        #expect(e.count == 12)
        #expect(errors("    {name: x}").first?.contains("`passthrough` must be a list") == true)
    }

    func scenario(_ steps: String) throws(ScenarioErrors) -> Scenario {
        try ScenarioParser().parse("""
        name: p
        guest:
          passthrough:
            - {name: tty, kind: mdev, type: mtty-2}
            - {name: nic, kind: vfio-pci, driver: mlx5_vfio_pci}
        steps:
        \(steps)
        """, file: "p.yaml")
    }

    func scenarioErrors(_ steps: String) -> [String] {
        do {
            _ = try scenario(steps)
            return []
        } catch {
            return error.diagnostics.map(\.description)
        }
    }

    @Test func mismatchedMdevTypeOnTheDestination() throws {
        let s = try scenario("""
          - boot: a
          - migrate: {from: a, to: b, destination: {mdev_type: {device: tty, type: mtty-1}}}
        """)
        guard let m = s.steps[1].action(as: Step.Migrate.self) else { Issue.record("not a migration"); return }
        #expect(m.destinationChange == .mdevType(device: "tty", type: "mtty-1"))
    }

    @Test func mdevTypeMistakesAreNamed() {
        #expect(scenarioErrors("""
          - boot: a
          - migrate: {from: a, to: b, destination: {mdev_type: {device: nic, type: mtty-1}}}
        """).contains { $0.hasPrefix("p.yaml:8:") && $0.contains("names a passthrough device of kind mdev; the guest's are `tty`") })
        #expect(scenarioErrors("""
          - boot: a
          - migrate: {from: a, to: b, destination: {mdev_type: {device: tty, type: mtty-2}}}
        """).contains { $0.contains("`tty` already is mtty-2") })
        // b holds the guest's tty as an mtty-1 for the whole scenario: no other arrival there.
        let twice = scenarioErrors("""
          - boot: a
          - migrate: {from: a, to: b, destination: {mdev_type: {device: tty, type: mtty-1}}}
          - migrate: {from: b, to: a}
          - migrate: {from: a, to: b}
        """)
        #expect(twice.contains { $0.hasPrefix("p.yaml:8:") && $0.contains("may come to `b` by this migration only") }, "\(twice)")
    }
}
