import CPackMeterSupport

/// A growable array of plain values in one manually managed allocation.
///
/// The engine's tables live in these instead of `Array` so that the hot path pays no
/// copy-on-write uniqueness checks and no bounds checks in release builds (debug builds
/// assert). Each buffer has exactly one owner, a single-writer engine; `copy()` gives a
/// checkpoint its own snapshot. Large buffers are 2 MiB aligned and asked to live on huge
/// pages: the engine probes them at random.
@usableFromInline
final class FlatBuffer<Element: BitwiseCopyable> {
    @usableFromInline var base: UnsafeMutablePointer<Element>
    @usableFromInline var count: Int
    @usableFromInline var capacity: Int

    @inlinable
    init(capacity: Int = 16) {
        let capacity = max(capacity, 1)
        base = Self.allocate(capacity)
        self.capacity = capacity
        count = 0
    }

    @usableFromInline
    static func allocate(_ capacity: Int) -> UnsafeMutablePointer<Element> {
        guard let raw = pm_allocate_table(capacity * MemoryLayout<Element>.stride) else {
            fatalError("out of memory allocating \(capacity * MemoryLayout<Element>.stride) bytes")
        }
        return raw.bindMemory(to: Element.self, capacity: capacity)
    }

    /// A buffer of `count` copies of `value`.
    @inlinable
    convenience init(repeating value: Element, count: Int) {
        self.init(capacity: count)
        base.initialize(repeating: value, count: count)
        self.count = count
    }

    deinit {
        pm_free_table(base)
    }

    @inlinable
    subscript(index: Int) -> Element {
        @inline(__always) get {
            assert(index >= 0 && index < count, "FlatBuffer index \(index) out of 0..<\(count)")
            return base[index]
        }
        @inline(__always) set {
            assert(index >= 0 && index < count, "FlatBuffer index \(index) out of 0..<\(count)")
            base[index] = newValue
        }
    }

    @inlinable @inline(__always)
    func pointer(_ index: Int) -> UnsafeMutablePointer<Element> {
        assert(index >= 0 && index < count)
        return base + index
    }

    @inlinable
    func append(_ value: Element) {
        if count == capacity { grow(to: capacity * 2) }
        (base + count).initialize(to: value)
        count += 1
    }

    /// Makes room for `minimumCapacity` elements, growing geometrically so that repeated
    /// appends stay amortized O(1).
    @inlinable
    func reserve(_ minimumCapacity: Int) {
        if minimumCapacity > capacity { grow(to: Swift.max(minimumCapacity, capacity * 2)) }
    }

    @usableFromInline
    func grow(to newCapacity: Int) {
        let fresh = Self.allocate(newCapacity)
        fresh.moveInitialize(from: base, count: count)
        pm_free_table(base)
        base = fresh
        capacity = newCapacity
    }

    @inlinable
    func removeAll(keepingCapacity: Bool = true) {
        count = 0
        if !keepingCapacity, capacity > 16 {
            pm_free_table(base)
            base = Self.allocate(16)
            capacity = 16
        }
    }

    /// Appends `count` copies of `value`.
    @inlinable
    func append(repeating value: Element, count extra: Int) {
        reserve(count + extra)
        (base + count).initialize(repeating: value, count: extra)
        count += extra
    }

    /// Appends `extra` elements whose bytes are all zero (one `memset`, where
    /// `append(repeating:count:)` stores element by element).
    func appendZeroed(_ extra: Int) {
        reserve(count + extra)
        UnsafeMutableRawPointer(base + count).initializeMemory(as: UInt8.self, repeating: 0,
                                                               count: extra * MemoryLayout<Element>.stride)
        count += extra
    }

    func copy() -> FlatBuffer<Element> {
        let other = FlatBuffer<Element>(capacity: Swift.max(count, 1))
        other.base.initialize(from: base, count: count)
        other.count = count
        return other
    }

    /// Bytes held by the allocation, used or not.
    var allocatedBytes: Int { capacity * MemoryLayout<Element>.stride }

    var elements: UnsafeMutableBufferPointer<Element> { UnsafeMutableBufferPointer(start: base, count: count) }
}
