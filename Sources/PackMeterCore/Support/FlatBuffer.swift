/// A growable array of plain values in one manually managed allocation.
///
/// The engine's tables live in these instead of `Array` so that the hot path pays no
/// copy-on-write uniqueness checks and no bounds checks in release builds (debug builds
/// assert). Each buffer has exactly one owner, a single-writer engine; `copy()` gives a
/// checkpoint its own snapshot.
@usableFromInline
final class FlatBuffer<Element: BitwiseCopyable> {
    @usableFromInline var base: UnsafeMutablePointer<Element>
    @usableFromInline var count: Int
    @usableFromInline var capacity: Int

    @inlinable
    init(capacity: Int = 16) {
        let capacity = max(capacity, 1)
        base = .allocate(capacity: capacity)
        self.capacity = capacity
        count = 0
    }

    /// A buffer of `count` copies of `value`.
    @inlinable
    convenience init(repeating value: Element, count: Int) {
        self.init(capacity: count)
        base.initialize(repeating: value, count: count)
        self.count = count
    }

    deinit {
        base.deallocate()
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

    @inlinable
    func reserve(_ minimumCapacity: Int) {
        if minimumCapacity > capacity { grow(to: minimumCapacity) }
    }

    @usableFromInline
    func grow(to newCapacity: Int) {
        let fresh = UnsafeMutablePointer<Element>.allocate(capacity: newCapacity)
        fresh.moveInitialize(from: base, count: count)
        base.deallocate()
        base = fresh
        capacity = newCapacity
    }

    @inlinable
    func removeAll(keepingCapacity: Bool = true) {
        count = 0
        if !keepingCapacity, capacity > 16 {
            base.deallocate()
            base = .allocate(capacity: 16)
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
