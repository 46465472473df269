import ArgumentParser
import Foundation
import Runner
import Scenario

/// `miglab stream-proxy`: the stream-damaging proxy of `corrupt_stream`, run by a lab on a host
/// whose network the runner cannot enter (the virtual VFIO hosts run it inside L1). Forwards one
/// migration stream, damaging it, and prints its summary as one line of JSON when the stream
/// ends or on SIGTERM. Not for users.
struct StreamProxyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "stream-proxy", shouldDisplay: false)

    @Option(help: "ADDRESS:PORT to listen on (the migration URI the source connects to).")
    var listen: String
    @Option(help: "ADDRESS:PORT of the destination QEMU.")
    var target: String
    @Option(help: "header, payload, flip-every or device-state.")
    var corrupt: String
    @Option var everyMib = 1

    static func endpoint(_ text: String, option: String) throws -> (String, UInt16) {
        guard let colon = text.lastIndex(of: ":"), let port = UInt16(text[text.index(after: colon)...]) else {
            throw ValidationError("--\(option) takes ADDRESS:PORT, not `\(text)`")
        }
        return (String(text[..<colon]), port)
    }

    func run() throws {
        guard let mode = StreamCorruption(rawValue: corrupt) else {
            throw ValidationError("--corrupt takes \(StreamCorruption.allCases.map(\.rawValue).joined(separator: ", ")), not `\(corrupt)`")
        }
        // A parent may have blocked SIGTERM for its children (a test runner does): unblocked in
        // this thread before the proxy's threads exist, which inherit the mask and take it.
        var term = sigset_t()
        sigemptyset(&term)
        sigaddset(&term, SIGTERM)
        pthread_sigmask(SIG_UNBLOCK, &term, nil)
        let proxy = StreamProxy(namespacePath: nil, listen: try Self.endpoint(listen, option: "listen"),
                                target: try Self.endpoint(target, option: "target"),
                                corruptor: StreamCorruptor(mode: mode, everyMiB: everyMib))
        try proxy.start()
        // SIGTERM (the runner is done with the migration) ends the wait like the stream's end.
        signal(SIGTERM, SIG_IGN)
        let terminated = DispatchSource.makeSignalSource(signal: SIGTERM)
        let requested = DoneFlag()
        terminated.setEventHandler { requested.set() }
        terminated.resume()
        while !proxy.isFinished && !requested.isSet { usleep(50_000) }
        let summary = proxy.stop()
        let json = try JSONEncoder().encode(summary)
        print(String(decoding: json, as: UTF8.self))
    }
}

