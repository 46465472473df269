import Foundation

/// The statistics a nightly suite needs to say "this build made migration worse": rates with
/// honest intervals for small samples, an exact test for two of them, and quantiles.
///
/// Hand-written rather than taken from swift-numerics: that package has the elementary
/// functions (and `lgamma` is in the C library already), not the tests or intervals.
public enum Statistics {
    /// The two-sided 95% normal quantile.
    public static let z95 = 1.959963984540054

    /// The Wilson score interval of a proportion `k / n` (95% by default): unlike the normal
    /// ("Wald") interval it stays inside [0, 1] and is not [0, 0] for 0 of 4, which is what a
    /// handful of runs needs. n = 0 gives [0, 1] (nothing is known).
    public static func wilson(_ k: Int, of n: Int, z: Double = z95) -> ClosedRange<Double> {
        guard n > 0 else { return 0...1 }
        let nn = Double(n), p = Double(k) / nn, z2 = z * z
        let centre = (p + z2 / (2 * nn)) / (1 + z2 / nn)
        let half = z / (1 + z2 / nn) * ((p * (1 - p) / nn + z2 / (4 * nn * nn))).squareRoot()
        return max(0, centre - half)...min(1, centre + half)
    }

    /// Fisher's exact test of a 2x2 table
    ///
    ///              bad   good
    ///     first     a     b
    ///     second    c     d
    ///
    /// `greater`: the probability, with the margins fixed, of a table at least as extreme
    /// towards the second row having more bad outcomes (c this large or larger): a small value
    /// says the second is worse. `less` the other way; `twoSided` sums every table no more
    /// likely than the one seen.
    public static func fisherExact(a: Int, b: Int, c: Int, d: Int) -> (less: Double, greater: Double, twoSided: Double) {
        let rowSecond = c + d, colBad = a + c, n = a + b + c + d
        guard n > 0 else { return (1, 1, 1) }
        // c follows the hypergeometric distribution: rowSecond draws from n with colBad bad.
        let lo = max(0, rowSecond - (n - colBad)), hi = min(rowSecond, colBad)
        func logChoose(_ n: Int, _ k: Int) -> Double {
            lgamma(Double(n + 1)) - lgamma(Double(k + 1)) - lgamma(Double(n - k + 1))
        }
        let logTotal = logChoose(n, rowSecond)
        func p(_ x: Int) -> Double { exp(logChoose(colBad, x) + logChoose(n - colBad, rowSecond - x) - logTotal) }
        let seen = p(c)
        var less = 0.0, greater = 0.0, two = 0.0
        for x in lo...hi {
            let px = p(x)
            if x <= c { less += px }
            if x >= c { greater += px }
            // A relative tolerance, as R's fisher.test, so equal tables are not lost to rounding.
            if px <= seen * (1 + 1e-7) { two += px }
        }
        return (min(1, less), min(1, greater), min(1, two))
    }

    /// The q-quantile (0...1) of `values` by linear interpolation between order statistics
    /// (Hyndman and Fan's type 7, as R's and NumPy's default); nil for none.
    public static func quantile(_ values: [Double], _ q: Double) -> Double? {
        guard !values.isEmpty else { return nil }
        let sorted = values.sorted()
        let h = Double(sorted.count - 1) * min(1, max(0, q))
        let i = Int(h.rounded(.down))
        let frac = h - Double(i)
        return i + 1 < sorted.count ? sorted[i] + frac * (sorted[i + 1] - sorted[i]) : sorted[i]
    }
}

/// Median, 90th percentile and maximum of one figure over the runs of a scenario.
public struct Distribution: Codable, Sendable, Equatable {
    public var count: Int
    public var median: Double
    public var p90: Double
    public var max: Double

    public init?(_ values: [Double]) {
        guard let median = Statistics.quantile(values, 0.5), let p90 = Statistics.quantile(values, 0.9),
              let max = values.max() else { return nil }
        self.count = values.count
        self.median = median
        self.p90 = p90
        self.max = max
    }
}
