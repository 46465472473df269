import Foundation
import Testing
@testable import Report

/// Reference values from R 4.x: binom::binom.wilson / prop.test(correct = FALSE)$conf.int and
/// fisher.test(matrix(...), alternative = ...)$p.value.
struct StatisticsTests {
    func close(_ a: Double, _ b: Double, _ tolerance: Double = 5e-4) -> Bool { abs(a - b) < tolerance }

    @Test func wilsonIntervalsMatchTheTextbook() {
        let none = Statistics.wilson(0, of: 4)
        #expect(none.lowerBound == 0)
        #expect(close(none.upperBound, 0.4899), "\(none)")     // 0 of 4 is not "never"
        let all = Statistics.wilson(4, of: 4)
        #expect(close(all.lowerBound, 0.5101) && all.upperBound == 1, "\(all)")
        let half = Statistics.wilson(5, of: 10)
        #expect(close(half.lowerBound, 0.2366) && close(half.upperBound, 0.7634), "\(half)")
        let rare = Statistics.wilson(1, of: 100)
        #expect(close(rare.lowerBound, 0.001767) && close(rare.upperBound, 0.05448), "\(rare)")
        #expect(Statistics.wilson(0, of: 0) == 0...1)
    }

    @Test func fisherExactTestMatchesR() {
        // B failed 4 of 4, A none of 4: p = 1/70 one-sided.
        let p = Statistics.fisherExact(a: 0, b: 4, c: 4, d: 0)
        #expect(close(p.greater, 1.0 / 70, 1e-9), "\(p)")
        #expect(close(p.twoSided, 2.0 / 70, 1e-9), "\(p)")
        #expect(close(p.less, 1, 1e-9))
        // 3 of 4 against 0 of 4: not significant (5/70).
        #expect(close(Statistics.fisherExact(a: 0, b: 4, c: 3, d: 1).greater, 5.0 / 70, 1e-9))
        // fisher.test(matrix(c(1, 9, 11, 3), 2)) two-sided 0.002759.
        #expect(close(Statistics.fisherExact(a: 1, b: 11, c: 9, d: 3).twoSided, 0.002759, 1e-5))
        // Nothing to compare.
        #expect(Statistics.fisherExact(a: 0, b: 0, c: 0, d: 0).greater == 1)
        #expect(close(Statistics.fisherExact(a: 0, b: 4, c: 0, d: 4).greater, 1, 1e-9))
    }

    @Test func quantilesInterpolate() {
        #expect(Statistics.quantile([], 0.5) == nil)
        #expect(Statistics.quantile([3], 0.9) == 3)
        #expect(Statistics.quantile([4, 1, 3, 2], 0.5) == 2.5)
        #expect(close(Statistics.quantile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.9)!, 9.1, 1e-9))
        let d = Distribution([10, 40, 20, 30])!
        #expect(d.median == 25 && d.max == 40 && d.count == 4)
    }
}
