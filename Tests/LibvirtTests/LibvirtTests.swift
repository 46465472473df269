import Foundation
import Testing
@testable import Libvirt

/// The Swift libvirt layer against libvirt's own test driver (a real libvirt, in process).
struct LibvirtTests {
    static let domainXML = """
    <domain type='test'>
      <name>lt-guest</name>
      <memory unit='MiB'>128</memory>
      <vcpu>1</vcpu>
      <os><type arch='x86_64'>hvm</type></os>
    </domain>
    """

    @Test func openListAndLookUp() throws {
        let c = try Connection(uri: "test:///default")
        #expect(c.isAlive)
        #expect(try c.allDomains().map(\.name).contains("test"))
        #expect(try c.domain(named: "test")?.state().state == .running)
        #expect(try c.domain(named: "no-such-domain") == nil)
        #expect(try c.libvirtVersion().major >= 9)
    }

    @Test func errorsAreTypedValues() throws {
        let c = try Connection(uri: "test:///default")
        #expect {
            _ = try c.defineDomain(xml: "<domain>")
        } throws: { error in
            guard let e = error as? LibvirtError else { return false }
            return e.code > 0 && !e.message.isEmpty && e.operation == "virDomainDefineXML"
        }
        #expect(throws: LibvirtError.self) { _ = try Connection(uri: "bogus:///nothing") }
    }

    @Test func defineStartDestroyUndefine() async throws {
        let c = try Connection(uri: "test:///default")
        let d = try c.defineDomain(xml: Self.domainXML)
        #expect(try d.state().state == .shutOff)
        try await d.start()
        #expect(d.isActive)
        try d.suspend()
        #expect(try d.state().state == .paused)
        try d.resume()
        try await d.destroy()
        #expect(!d.isActive)
        try d.undefine()
        #expect(try c.domain(named: "lt-guest") == nil)
    }

    @Test func removeStopsAndUndefines() async throws {
        let c = try Connection(uri: "test:///default")
        let d = try c.defineDomain(xml: Self.domainXML.replacingOccurrences(of: "lt-guest", with: "lt-remove"))
        try await d.start()
        try await d.remove()
        #expect(try c.domain(named: "lt-remove") == nil)
    }

    @Test func lifecycleEventsArriveOnTheEventLoop() async throws {
        let c = try Connection(uri: "test:///default")
        let events = try c.events()
        let d = try c.defineDomain(xml: Self.domainXML.replacingOccurrences(of: "lt-guest", with: "lt-events"))
        try await d.start()
        try await d.destroy()
        try d.undefine()
        var seen: [Int32] = []
        for await e in events where e.domain == "lt-events" {
            if case let .lifecycle(ev, _) = e.kind { seen.append(ev) }
            if seen.contains(DomainEvent.stopped) { break }
        }
        #expect(seen.contains(DomainEvent.started))
        #expect(seen.contains(DomainEvent.stopped))
    }

    @Test func unsupportedCallCarriesLibvirtsCode() throws {
        // The test driver has no job statistics: the error says so with libvirt's own code.
        let c = try Connection(uri: "test:///default")
        let d = try #require(try c.domain(named: "test"))
        #expect {
            _ = try d.jobStats()
        } throws: { error in
            let e = error as? LibvirtError
            return e?.code == 3 && e?.operation == "virDomainGetJobStats(test)" // VIR_ERR_NO_SUPPORT
        }
    }

    @Test func migrationParametersBecomeTypedParameters() throws {
        let p = MigrationParameters(migrationURI: "tcp://10.0.0.2:49152", listenAddress: "10.0.0.3", bandwidthMiBps: 100)
        let list = try p.typedParameters()
        let decoded = decodeTypedParameters(list.pointer, count: list.count)
        #expect(decoded["migrate_uri"] == .string("tcp://10.0.0.2:49152"))
        #expect(decoded["listen_address"] == .string("10.0.0.3"))
        #expect(decoded["bandwidth"] == .uint(100))
    }

    @Test func sharedConnectionFromManyTasks() async throws {
        let c = try Connection(uri: "test:///default")
        let total = try await withThrowingTaskGroup(of: Int.self) { g in
            for _ in 0..<8 {
                g.addTask {
                    var n = 0
                    for _ in 0..<50 { n += try c.allDomains().count }
                    return n
                }
            }
            return try await g.reduce(0, +)
        }
        #expect(total >= 8 * 50)
    }
}
