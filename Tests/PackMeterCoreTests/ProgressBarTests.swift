import PackMeterFiles
import Testing

/// The progress line of `demo` and `replay`: redrawn in place on a terminal, whole lines
/// a few seconds apart anywhere else.
@Suite("Progress line")
struct ProgressBarTests {
    final class Output {
        var text = ""
    }

    @Test func notOnATerminal_eachUpdateIsAWholeLine_atMostEveryFiveSeconds() {
        let out = Output()
        var progress = ProgressBar(toTerminal: false) { out.text += $0 }
        progress.draw(now: 100) { "a" }
        progress.draw(now: 104.9) { "b" }  // too soon
        progress.draw(now: 105) { "c" }
        progress.draw(now: 105.1, force: true) { "d" }  // the last one is always shown
        progress.finish()
        #expect(out.text == "a\nc\nd\n")
        #expect(!out.text.contains("\r"))
    }

    @Test func onATerminal_theLineIsRedrawnInPlace_andFinishEndsItOnce() {
        let out = Output()
        var progress = ProgressBar(toTerminal: true) { out.text += $0 }
        progress.draw(now: 100) { "a" }
        progress.draw(now: 100.1) { "b" }  // too soon
        progress.draw(now: 100.2) { "c" }
        progress.finish()
        progress.finish()
        #expect(out.text == "\ra \rc \n")
    }

    @Test func aLineThatIsNotDue_isNotEvenMade() {
        var made = 0
        var progress = ProgressBar(toTerminal: false) { _ in }
        for tenth in 0..<100 {
            progress.draw(now: Double(tenth) / 10) {
                made += 1
                return "line"
            }
        }
        #expect(made == 2, "at 0 s and at 5 s only")
    }

    @Test func theBar_fillsInProportion_andStaysInItsWidth() {
        #expect(ProgressBar.bar(done: 0, total: 10, width: 10) == "[..........]")
        #expect(ProgressBar.bar(done: 5, total: 10, width: 10) == "[#####.....]")
        #expect(ProgressBar.bar(done: 10, total: 10, width: 10) == "[##########]")
        #expect(ProgressBar.bar(done: 12, total: 10, width: 10) == "[##########]")
        #expect(ProgressBar.bar(done: 0, total: 0, width: 4) == "[####]", "nothing to do is done")
        #expect(ProgressBar.bar(done: 1, total: 3).count == 32)
    }
}
