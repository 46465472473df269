/// The part of a virtio member's state its device context carries (device-context.tex): the
/// reference device keeps exactly this, so its context round-trips bit for bit.
struct VirtioMemberState: Hashable {
    struct Virtqueue: Hashable {
        var index: UInt16
        var size: UInt16
        var msixVector: UInt16
        var descriptorArea: UInt64
        var driverArea: UInt64
        var deviceArea: UInt64
        var availableIndex: UInt16
        var enabled: Bool
    }

    /// `struct virtio_pci_common_cfg` as the driver left it.
    var commonConfig: [UInt8]
    var deviceFeatures: UInt64
    var virtqueues: [Virtqueue]
    /// `struct virtio_net_config`: mac[6], status, max_virtqueue_pairs, mtu.
    var deviceConfig: [UInt8]

    /// The fields this device puts in its context, with their lengths (what the Supported Fields
    /// Query reports).
    static let supportedFields: [DeviceContextFieldDescriptor] = [
        DeviceContextFieldDescriptor(type: .pciCommonConfig, length: 56),
        DeviceContextFieldDescriptor(type: .deviceFeatures, length: 8),
        DeviceContextFieldDescriptor(type: .pciVirtqueueConfig, length: 30),
        DeviceContextFieldDescriptor(type: .splitVirtqueueRuntime, length: 5),
        DeviceContextFieldDescriptor(type: .deviceConfig, length: 12),
    ]

    /// A driven virtio-net member: features negotiated, queues set up and running.
    static func initial(virtqueueCount: Int) -> VirtioMemberState {
        var common = [UInt8](repeating: 0, count: 56)
        common[18] = UInt8(virtqueueCount)  // num_queues
        common[20] = 0x0F  // device_status: ACKNOWLEDGE | DRIVER | DRIVER_OK | FEATURES_OK
        let queues = (0..<virtqueueCount).map { (index: Int) -> Virtqueue in
            let base: UInt64 = 0x10_0000 + UInt64(index) * 0x1_0000
            return Virtqueue(
                index: UInt16(index), size: 256, msixVector: UInt16(index + 1), descriptorArea: base,
                driverArea: base + 0x4000, deviceArea: base + 0x8000, availableIndex: UInt16(index * 7), enabled: true)
        }
        return VirtioMemberState(
            commonConfig: common, deviceFeatures: Self.initialFeatures, virtqueues: queues,
            deviceConfig: [0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x01, 0x00, 0x01, 0x00, 0xDC, 0x05])
    }

    /// VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MAC | VIRTIO_NET_F_CSUM.
    static let initialFeatures: UInt64 = (1 << 32) | (1 << 5) | (1 << 0)

    var context: DeviceContext {
        var fields = [
            DeviceContextField(type: .pciCommonConfig, value: commonConfig),
            DeviceContextField(type: .deviceFeatures, value: littleEndianBytes(deviceFeatures)),
        ]
        for queue in virtqueues {
            var value: [UInt8] = []
            value.appendLittleEndian(queue.index)
            value.appendLittleEndian(queue.size)
            value.appendLittleEndian(queue.msixVector)
            value.appendLittleEndian(queue.descriptorArea)
            value.appendLittleEndian(queue.driverArea)
            value.appendLittleEndian(queue.deviceArea)
            fields.append(DeviceContextField(type: .pciVirtqueueConfig, value: value))
        }
        for queue in virtqueues {
            var value: [UInt8] = []
            value.appendLittleEndian(queue.index)
            value.appendLittleEndian(queue.availableIndex)
            value.append(queue.enabled ? 1 : 0)
            fields.append(DeviceContextField(type: .splitVirtqueueRuntime, value: value))
        }
        fields.append(DeviceContextField(type: .deviceConfig, value: deviceConfig))
        return DeviceContext(fields: fields)
    }

    /// Takes over what a written context says; fields that do not fit this device are ignored
    /// (the write command already refused them, unless a seeded bug let them through).
    mutating func apply(_ context: DeviceContext) {
        for field in context.fields {
            let value = field.value
            switch field.type {
            case .pciCommonConfig where value.count == 56:
                commonConfig = value
            case .deviceFeatures where value.count == 8:
                deviceFeatures = value.loadLittleEndian(UInt64.self, at: 0)
            case .pciVirtqueueConfig where value.count == 30:
                let index = Int(value.loadLittleEndian(UInt16.self, at: 0))
                guard virtqueues.indices.contains(index) else { continue }
                virtqueues[index].size = value.loadLittleEndian(UInt16.self, at: 2)
                virtqueues[index].msixVector = value.loadLittleEndian(UInt16.self, at: 4)
                virtqueues[index].descriptorArea = value.loadLittleEndian(UInt64.self, at: 6)
                virtqueues[index].driverArea = value.loadLittleEndian(UInt64.self, at: 14)
                virtqueues[index].deviceArea = value.loadLittleEndian(UInt64.self, at: 22)
            case .splitVirtqueueRuntime where value.count == 5:
                let index = Int(value.loadLittleEndian(UInt16.self, at: 0))
                guard virtqueues.indices.contains(index) else { continue }
                virtqueues[index].availableIndex = value.loadLittleEndian(UInt16.self, at: 2)
                virtqueues[index].enabled = value[4] != 0
            case .deviceConfig where value.count == 12:
                deviceConfig = value
            default:
                continue
            }
        }
    }

    /// What a function level reset does to a virtio device: the driver's set-up is gone, the
    /// device's own configuration (its MAC) stays.
    mutating func resetRuntime() {
        let queueCount = commonConfig[18]
        commonConfig = [UInt8](repeating: 0, count: 56)
        commonConfig[18] = queueCount
        for index in virtqueues.indices {
            virtqueues[index] = Virtqueue(
                index: virtqueues[index].index, size: 256, msixVector: 0xFFFF, descriptorArea: 0, driverArea: 0,
                deviceArea: 0, availableIndex: 0, enabled: false)
        }
    }
}

func littleEndianBytes<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
    var bytes: [UInt8] = []
    bytes.appendLittleEndian(value)
    return bytes
}
