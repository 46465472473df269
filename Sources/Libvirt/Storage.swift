import CLibvirt
import Foundation

/// A libvirt storage pool (`virStoragePoolPtr`), freed in deinit.
public final class StoragePool: @unchecked Sendable {
    let raw: OpaquePointer
    public let connection: Connection

    init(owning raw: OpaquePointer, connection: Connection) {
        self.raw = raw
        self.connection = connection
    }
    deinit { virStoragePoolFree(raw) }

    /// `virStoragePoolIsActive`.
    public var isActive: Bool { virStoragePoolIsActive(raw) == 1 }

    /// `virStoragePoolCreate`: starts a defined, inactive pool.
    public func start() throws {
        guard virStoragePoolCreate(raw, 0) == 0 else { throw LibvirtError.last("virStoragePoolCreate") }
    }

    /// `virStoragePoolRefresh`: rescans the pool's folder.
    public func refresh() throws {
        guard virStoragePoolRefresh(raw, 0) == 0 else { throw LibvirtError.last("virStoragePoolRefresh") }
    }

    /// `virStorageVolLookupByName`; nil when the pool has no such volume.
    public func volume(named name: String) throws -> StorageVolume? {
        guard let v = virStorageVolLookupByName(raw, name) else {
            let err = LibvirtError.last("virStorageVolLookupByName(\(name))")
            if err.code == LibvirtError.noStorageVolume { return nil }
            throw err
        }
        return StorageVolume(owning: v, connection: connection)
    }

    /// `virStorageVolCreateXML`.
    public func createVolume(xml: String) throws -> StorageVolume {
        guard let v = virStorageVolCreateXML(raw, xml, 0) else { throw LibvirtError.last("virStorageVolCreateXML") }
        return StorageVolume(owning: v, connection: connection)
    }
}

/// A volume of a storage pool (`virStorageVolPtr`), freed in deinit.
public final class StorageVolume: @unchecked Sendable {
    let raw: OpaquePointer
    public let connection: Connection

    init(owning raw: OpaquePointer, connection: Connection) {
        self.raw = raw
        self.connection = connection
    }
    deinit { virStorageVolFree(raw) }

    /// `virStorageVolGetPath`: where the volume is on its host.
    public func path() throws -> String {
        guard let s = virStorageVolGetPath(raw) else { throw LibvirtError.last("virStorageVolGetPath") }
        defer { free(s) }
        return String(cString: s)
    }

    /// `virStorageVolGetInfo`: the allocated size in bytes.
    public func capacity() throws -> UInt64 {
        var info = virStorageVolInfo()
        guard virStorageVolGetInfo(raw, &info) == 0 else { throw LibvirtError.last("virStorageVolGetInfo") }
        return UInt64(info.capacity)
    }

    /// `virStorageVolDelete`.
    public func delete() throws {
        guard virStorageVolDelete(raw, 0) == 0 else { throw LibvirtError.last("virStorageVolDelete") }
    }

    /// `virStorageVolUpload` through a stream: the volume's content becomes the local file's.
    public func upload(contentsOf file: String) async throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: file), options: .alwaysMapped)
        let box = UncheckedBox(data)
        try await onBlockingThread("virStorageVolUpload") { [self] in
            let stream = try Stream(connection: connection)
            guard virStorageVolUpload(raw, stream.raw, 0, UInt64(box.value.count), 0) == 0 else {
                throw LibvirtError.last("virStorageVolUpload")
            }
            do {
                try box.value.withUnsafeBytes { bytes in
                    var offset = 0
                    while offset < bytes.count {
                        let n = min(256 * 1024, bytes.count - offset)
                        try stream.send(UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + n]))
                        offset += n
                    }
                }
                try stream.finish()
            } catch {
                stream.abort()
                throw error
            }
        }
    }
}

extension Connection {
    /// `virStoragePoolLookupByName`; nil when no such pool exists.
    public func storagePool(named name: String) throws -> StoragePool? {
        guard let p = virStoragePoolLookupByName(raw, name) else {
            let err = LibvirtError.last("virStoragePoolLookupByName(\(name))")
            if err.code == LibvirtError.noStoragePool { return nil }
            throw err
        }
        return StoragePool(owning: p, connection: self)
    }

    /// `virStoragePoolCreateXML` with `VIR_STORAGE_POOL_CREATE_WITH_BUILD`: a transient pool,
    /// its folder made when missing.
    public func createStoragePool(xml: String) throws -> StoragePool {
        guard let p = virStoragePoolCreateXML(raw, xml, UInt32(VIR_STORAGE_POOL_CREATE_WITH_BUILD.rawValue)) else {
            throw LibvirtError.last("virStoragePoolCreateXML")
        }
        return StoragePool(owning: p, connection: self)
    }
}

extension LibvirtError {
    /// `VIR_ERR_NO_STORAGE_POOL`.
    public static let noStoragePool = Int32(VIR_ERR_NO_STORAGE_POOL.rawValue)
    /// `VIR_ERR_NO_STORAGE_VOL`.
    public static let noStorageVolume = Int32(VIR_ERR_NO_STORAGE_VOL.rawValue)
}
