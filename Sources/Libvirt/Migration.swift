import CLibvirt

/// Flags of a live migration (`virDomainMigrateFlags`).
public struct MigrationFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let live = MigrationFlags(rawValue: VIR_MIGRATE_LIVE.rawValue)
    public static let peerToPeer = MigrationFlags(rawValue: VIR_MIGRATE_PEER2PEER.rawValue)
    public static let persistDestination = MigrationFlags(rawValue: VIR_MIGRATE_PERSIST_DEST.rawValue)
    public static let undefineSource = MigrationFlags(rawValue: VIR_MIGRATE_UNDEFINE_SOURCE.rawValue)
    /// Leave the guest paused on the destination (`VIR_MIGRATE_PAUSED`).
    public static let suspend = MigrationFlags(rawValue: VIR_MIGRATE_PAUSED.rawValue)
    public static let abortOnError = MigrationFlags(rawValue: VIR_MIGRATE_ABORT_ON_ERROR.rawValue)
    public static let autoConverge = MigrationFlags(rawValue: VIR_MIGRATE_AUTO_CONVERGE.rawValue)
}

/// Typed parameters of `virDomainMigrateToURI3`.
public struct MigrationParameters: Sendable, Hashable {
    /// URI the source hypervisor streams to (`VIR_MIGRATE_PARAM_URI`), e.g. tcp://10.77.0.2:49152.
    public var migrationURI: String?
    /// Address the destination QEMU listens on (`VIR_MIGRATE_PARAM_LISTEN_ADDRESS`).
    public var listenAddress: String?
    /// Bandwidth limit in MiB/s (`VIR_MIGRATE_PARAM_BANDWIDTH`); nil = unlimited.
    public var bandwidthMiBps: UInt64?
    /// Domain XML to use on the destination (`VIR_MIGRATE_PARAM_DEST_XML`).
    public var destinationXML: String?

    public init(migrationURI: String? = nil, listenAddress: String? = nil,
                bandwidthMiBps: UInt64? = nil, destinationXML: String? = nil) {
        self.migrationURI = migrationURI
        self.listenAddress = listenAddress
        self.bandwidthMiBps = bandwidthMiBps
        self.destinationXML = destinationXML
    }

    func typedParameters() throws -> TypedParameterList {
        let list = TypedParameterList()
        if let migrationURI { try list.add(VIR_MIGRATE_PARAM_URI, string: migrationURI) }
        if let listenAddress { try list.add(VIR_MIGRATE_PARAM_LISTEN_ADDRESS, string: listenAddress) }
        if let bandwidthMiBps, bandwidthMiBps > 0 { try list.add(VIR_MIGRATE_PARAM_BANDWIDTH, uint64: bandwidthMiBps) }
        if let destinationXML { try list.add(VIR_MIGRATE_PARAM_DEST_XML, string: destinationXML) }
        return list
    }
}

/// Statistics of a domain job (`virDomainGetJobStats`), in libvirt's units.
public struct JobStats: Sendable, Equatable, Codable {
    /// `virDomainJobType`: 0 none, 1 bounded, 2 unbounded, 3 completed, 4 failed, 5 cancelled.
    public var type: Int32
    /// Every field libvirt returned, by its libvirt name.
    public var fields: [String: TypedValue]

    public init(type: Int32, fields: [String: TypedValue]) {
        self.type = type
        self.fields = fields
    }

    public static let typeNone: Int32 = 0
    public static let typeUnbounded: Int32 = 2
    public static let typeCompleted: Int32 = 3
    public static let typeFailed: Int32 = 4
    public static let typeCancelled: Int32 = 5

    public var isActive: Bool { type == 1 || type == 2 }

    /// libvirt's names of the fields miglab reads (`VIR_DOMAIN_JOB_*`).
    public enum Field {
        public static let timeElapsed = VIR_DOMAIN_JOB_TIME_ELAPSED
        public static let downtime = VIR_DOMAIN_JOB_DOWNTIME
        public static let setupTime = VIR_DOMAIN_JOB_SETUP_TIME
        public static let dataTotal = VIR_DOMAIN_JOB_DATA_TOTAL
        public static let dataProcessed = VIR_DOMAIN_JOB_DATA_PROCESSED
        public static let dataRemaining = VIR_DOMAIN_JOB_DATA_REMAINING
        public static let memoryTotal = VIR_DOMAIN_JOB_MEMORY_TOTAL
        public static let memoryProcessed = VIR_DOMAIN_JOB_MEMORY_PROCESSED
        public static let memoryRemaining = VIR_DOMAIN_JOB_MEMORY_REMAINING
        public static let memoryIteration = VIR_DOMAIN_JOB_MEMORY_ITERATION
        public static let memoryDirtyRate = VIR_DOMAIN_JOB_MEMORY_DIRTY_RATE
        public static let memoryBytesPerSecond = VIR_DOMAIN_JOB_MEMORY_BPS
    }

    func value(_ name: String) -> UInt64? { fields[name]?.uint64 }

    public var timeElapsedMs: UInt64? { value(VIR_DOMAIN_JOB_TIME_ELAPSED) }
    public var downtimeMs: UInt64? { value(VIR_DOMAIN_JOB_DOWNTIME) }
    public var setupTimeMs: UInt64? { value(VIR_DOMAIN_JOB_SETUP_TIME) }
    public var dataTotalBytes: UInt64? { value(VIR_DOMAIN_JOB_DATA_TOTAL) }
    public var dataProcessedBytes: UInt64? { value(VIR_DOMAIN_JOB_DATA_PROCESSED) }
    public var dataRemainingBytes: UInt64? { value(VIR_DOMAIN_JOB_DATA_REMAINING) }
    public var memoryTotalBytes: UInt64? { value(VIR_DOMAIN_JOB_MEMORY_TOTAL) }
    public var memoryProcessedBytes: UInt64? { value(VIR_DOMAIN_JOB_MEMORY_PROCESSED) }
    public var memoryRemainingBytes: UInt64? { value(VIR_DOMAIN_JOB_MEMORY_REMAINING) }
    public var memoryIterations: UInt64? { value(VIR_DOMAIN_JOB_MEMORY_ITERATION) }
    public var memoryDirtyRatePagesPerSecond: UInt64? { value(VIR_DOMAIN_JOB_MEMORY_DIRTY_RATE) }
    public var memoryBytesPerSecond: UInt64? { value(VIR_DOMAIN_JOB_MEMORY_BPS) }
    public var errorMessage: String? { fields[VIR_DOMAIN_JOB_ERRMSG]?.string }
    /// Bytes of VFIO device state sent so far (libvirt >= 10.6; nil from older daemons).
    /// `VIR_DOMAIN_JOB_VFIO_DATA_TRANSFERRED`, spelled out: Debian 12's libvirt 9.0 headers lack it.
    public var vfioDataTransferredBytes: UInt64? { value("vfio_data_transferred") }
}
